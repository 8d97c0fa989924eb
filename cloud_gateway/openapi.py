"""OpenAPI 3.1 document and form schemas, generated from the pydantic contracts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from agata_contracts.devices import DeviceCredential, JoinRequest
from agata_contracts.rpc import Audience
from cloud_gateway.routes import EXPOSED_RPCS, REST_ROUTES

_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """What every failed request returns."""

    exception: str
    errors: list[dict[str, str]] | None = None
    error_id: str | None = None


def _components() -> tuple[dict[Any, Any], dict[str, Any]]:
    models: list[type[BaseModel]] = [ErrorBody, JoinRequest, DeviceCredential]
    for spec in EXPOSED_RPCS.values():
        models += [spec.request, spec.response]
    unique = list(dict.fromkeys(models))
    modes: tuple[JsonSchemaMode, ...] = ("validation", "serialization")
    keys: Sequence[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, mode) for model in unique for mode in modes]
    refs, schema = models_json_schema(keys, ref_template=_REF)
    return refs, schema.get("$defs", {})


def _responses(refs: dict[Any, Any], response: type[BaseModel]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}}
    return {
        "200": {"description": "Success",
                "content": {"application/json": {"schema": refs[(response, "serialization")]}}},
        "400": {"description": "Invalid request (fields named in errors)", **error},
        "401": {"description": "Missing or wrong token", **error},
        "404": {"description": "Not found", **error},
        "409": {"description": "Conflicts with the current state", **error},
        "503": {"description": "Broker or service unavailable", **error},
        "504": {"description": "No reply in time", **error},
    }


def _operation_id(method: str, path: str) -> str:
    return f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}"


def _security(audiences: frozenset[Audience]) -> list[dict[str, list[str]]]:
    schemes: list[dict[str, list[str]]] = []
    if Audience.OPERATOR in audiences:
        schemes.append({"operatorToken": []})
    if Audience.CLIENT in audiences:
        schemes.append({"clientToken": []})
    return schemes


def _field_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The JSON Schema of one field of a request model, inlined, for a path or query parameter
    (an optional field's ``null`` left out: a parameter is simply absent)."""
    document = model.model_json_schema()
    definitions = document.get("$defs", {})
    schema: dict[str, Any] = dict(document.get("properties", {}).get(name, {"type": "string"}))
    variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        schema.update(variants[0])
    reference = schema.pop("$ref", None)
    if isinstance(reference, str):
        schema.update(definitions.get(reference.rsplit("/", 1)[-1], {}))
    for key in ("title", "default"):
        schema.pop(key, None)
    return schema


def build_openapi() -> dict[str, Any]:
    """The gateway's OpenAPI document."""
    refs, components = _components()
    paths: dict[str, Any] = {}
    for name, spec in sorted(EXPOSED_RPCS.items()):
        paths[f"/{name}"] = {"post": {
            "summary": spec.summary,
            "operationId": name,
            "tags": [spec.service],
            "security": _security(spec.audiences),
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": refs[(spec.request, "validation")]}}},
            "responses": _responses(refs, spec.response),
        }}
    for route in REST_ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route.method, route.path),
            "tags": ["rest"],
            "security": [{"operatorToken": []}],
            "parameters": [
                {"name": p, "in": "path", "required": True,
                 "schema": _field_schema(route.spec.request, field)}
                for p, field in route.path_fields.items()
            ] + [
                {"name": q, "in": "query", "required": False,
                 "schema": _field_schema(route.spec.request, q)}
                for q in route.query
            ],
            "responses": _responses(refs, route.spec.response),
        }
        if route.body:
            operation["requestBody"] = {"content": {
                "application/json": {"schema": refs[(route.spec.request, "validation")]}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/health"] = {"get": {"summary": "Liveness, broker connection, a full disk",
                                "security": [],
                                "responses": {"200": {"description": "Up (a full disk is "
                                                      "said in the body: disk, disk_detail)"},
                                              "503": {"description": "Broker unreachable"}}}}
    paths["/upload_files"] = {"post": {
        "summary": "Upload task files (multipart: task_id, then files named by their path in "
                   "the task, or an archive: a zip or .fab whose files replace the task's)",
        "security": [{"operatorToken": []}],
        "requestBody": {"content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["task_id"],
            "properties": {"task_id": {"type": "string"},
                           "files": {"type": "array",
                                     "items": {"type": "string", "format": "binary"}},
                           "archive": {"type": "string", "format": "binary"}}}}}},
        "responses": {"200": {"description": "Stored files"}}}}
    paths["/download/{task_id}/{filename}"] = {"get": {
        "summary": "Download a task file (clients add X-Download-Credential)",
        "security": [{"operatorToken": []}, {"clientToken": []}],
        "parameters": [
            {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "X-Download-Credential", "in": "header", "required": False,
             "schema": {"type": "string"}},
        ],
        "responses": {"200": {"description": "The file's bytes (X-Content-SHA256 header)",
                              "content": {"application/octet-stream": {}}}}}}
    paths["/api/client/join"] = {"post": {
        "summary": "A device spends its one-time join token for its own secret "
                   "(rate-limited per address; the secret is returned once)",
        "security": [],
        "requestBody": {"content": {"application/json": {
            "schema": refs[(JoinRequest, "validation")]}}},
        "responses": {"200": {"description": "The device's credential", "content": {
                          "application/json": {
                              "schema": refs[(DeviceCredential, "serialization")]}}},
                      "401": {"description": "Unknown, used or expired token"},
                      "408": {"description": "The body did not arrive within body_timeout_s"},
                      "429": {"description": "Too many join attempts from this address"}}}}
    run_parameters = [
        {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "run", "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0}, "description": "0: the latest run"},
    ]
    paths["/api/tasks/{task_id}/runs/{run}/results.zip"] = {"get": {
        "summary": "Every result file of a run as one zip archive",
        "security": [{"operatorToken": []}], "parameters": run_parameters,
        "responses": {"200": {"description": "task-<id>-run-<n>/server/..., "
                                             "task-<id>-run-<n>/devices/<device>/...",
                              "content": {"application/zip": {}}}}}}
    paths["/api/tasks/{task_id}/runs/{run}/results/{path}"] = {"get": {
        "summary": "One result file of a run (server/<name> or devices/<device>/<name>)",
        "security": [{"operatorToken": []}],
        "parameters": [*run_parameters, {"name": "path", "in": "path", "required": True,
                                         "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The file, as an attachment (X-Content-SHA256)",
                              "content": {"application/octet-stream": {}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "AGATA cloud gateway", "version": "0.1.0",
                 "description": "Federated-learning task manager: AGATA RPC routes, REST "
                                "routes and task files."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "[server.gateway] api_token"},
                "clientToken": {"type": "http", "scheme": "bearer",
                                "description": "A device's own <client_id>:<secret>"},
            },
        },
    }


def request_schemas() -> dict[str, Any]:
    """A standalone JSON Schema for every exposed RPC's request, keyed by RPC name."""
    return {name: spec.request.model_json_schema() for name, spec in EXPOSED_RPCS.items()}
