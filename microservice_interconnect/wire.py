"""The JSON wire format: AGATA's reply envelope and the request bodies.

``{"status_code": 200, "return": ...}`` on success,
``{"status_code": 4xx|5xx, "exception": "...", "errors": [...], "error_id": "..."}`` on failure
(``errors`` lists field problems of a 400, ``error_id`` points a 500 at the service's log).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from microservice_interconnect.errors import BadRequest, RpcError, error_for_status

CONTENT_TYPE = "application/json"

ModelT = TypeVar("ModelT", bound=BaseModel)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON, raising ``BadRequest`` with the parser's position on malformed input."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None


def ok_reply(result: BaseModel) -> bytes:
    """A success envelope around a response model."""
    return b'{"status_code":200,"return":' + result.model_dump_json().encode() + b"}"


def error_reply(error: RpcError) -> bytes:
    """A failure envelope for an RPC error."""
    envelope: dict[str, Any] = {"status_code": error.status_code, "exception": error.message}
    if error.errors:
        envelope["errors"] = error.errors
    if error.error_id:
        envelope["error_id"] = error.error_id
    return dumps(envelope)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Field problems of a pydantic error as ``[{"field": "a.b", "message": "..."}]``."""
    problems = []
    for err in exc.errors(include_url=False):
        location = ".".join(str(part) for part in err["loc"]) or "body"
        problems.append({"field": location, "message": err["msg"]})
    return problems


def bad_request_from(exc: ValidationError, what: str) -> BadRequest:
    """A 400 naming every field that failed validation."""
    problems = validation_errors(exc)
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return BadRequest(f"invalid {what}: {summary}", errors=problems)


def parse_request(model: type[ModelT], body: bytes | str, what: str) -> ModelT:
    """Validate a JSON body against a request model, raising a field-naming 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise BadRequest(f"invalid {what}: body is not valid JSON") from None
        raise bad_request_from(exc, what) from None


def split_reply(body: bytes) -> tuple[int, Any, dict[str, Any]]:
    """Decode an envelope into (status_code, return value, whole envelope)."""
    try:
        envelope = json.loads(body)
        status = int(envelope["status_code"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RpcError(f"malformed reply envelope: {exc}") from None
    return status, envelope.get("return"), envelope


def raise_for_envelope(status: int, envelope: dict[str, Any]) -> None:
    """Raise the ``RpcError`` an error envelope describes; do nothing for a 200."""
    if status == 200:
        return
    raise error_for_status(
        status,
        str(envelope.get("exception") or f"RPC failed with status {status}"),
        errors=envelope.get("errors"),
        error_id=envelope.get("error_id"),
    )
