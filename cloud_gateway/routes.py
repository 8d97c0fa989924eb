"""The gateway's route table: which HTTP routes map to which RPC, and who may call them.

One table drives both the aiohttp router and the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agata_contracts import devices, results, run_devices, tasks, users
from agata_contracts.rpc import Audience, RpcSpec

ALL_RPCS: tuple[RpcSpec[Any, Any], ...] = (
    users.RPCS + devices.RPCS + tasks.RPCS + results.RPCS + run_devices.RPCS)
RPCS_BY_NAME: dict[str, RpcSpec[Any, Any]] = {spec.name: spec for spec in ALL_RPCS}
EXPOSED_RPCS: dict[str, RpcSpec[Any, Any]] = {
    name: spec for name, spec in RPCS_BY_NAME.items()
    if spec.audiences & {Audience.OPERATOR, Audience.CLIENT}
}


@dataclass(frozen=True)
class RestRoute:
    """A REST route for people: path parameters and the query or JSON body make the request."""

    method: str
    path: str
    spec: RpcSpec[Any, Any]
    summary: str
    body: bool = False
    query: tuple[str, ...] = ()
    path_fields: dict[str, str] = field(default_factory=dict)


REST_ROUTES: tuple[RestRoute, ...] = (
    RestRoute("GET", "/api/tasks", tasks.LIST_TASKS, "List tasks",
              query=("status", "limit", "offset")),
    RestRoute("POST", "/api/tasks", tasks.CREATE_TASK, "Create a task", body=True),
    RestRoute("GET", "/api/tasks/{task_id}", tasks.GET_TASK_BY_ID, "Show a task",
              path_fields={"task_id": "task_id"}),
    RestRoute("PATCH", "/api/tasks/{task_id}", tasks.UPDATE_TASK, "Update a task", body=True,
              path_fields={"task_id": "task_id"}),
    RestRoute("POST", "/api/tasks/{task_id}/start", tasks.START_SERVER_TASK, "Start a task",
              body=True, path_fields={"task_id": "task_id"}),
    RestRoute("POST", "/api/tasks/{task_id}/stop", tasks.STOP_SERVER_TASK, "Stop a task",
              path_fields={"task_id": "task_id"}),
    RestRoute("GET", "/api/tasks/{task_id}/metrics", tasks.GET_TASK_METRICS,
              "Per-round metrics of a task", query=("run",), path_fields={"task_id": "task_id"}),
    RestRoute("GET", "/api/tasks/{task_id}/devices", run_devices.GET_RUN_DEVICES,
              "The devices of a task's latest run", path_fields={"task_id": "task_id"}),
    RestRoute("GET", "/api/tasks/{task_id}/reports", tasks.GET_CLIENT_TASK_REPORTS,
              "What clients reported about a task", path_fields={"task_id": "task_id"}),
    RestRoute("GET", "/api/tasks/{task_id}/results", results.LIST_RESULTS,
              "The result files of a task's latest run", path_fields={"task_id": "task_id"}),
    RestRoute("GET", "/api/tasks/{task_id}/runs/{run}/results", results.LIST_RESULTS,
              "The result files of a run (0: the latest)",
              path_fields={"task_id": "task_id", "run": "run"}),
    RestRoute("GET", "/api/clients", users.LIST_USERS, "List clients",
              query=("limit", "offset")),
    RestRoute("GET", "/api/clients/{client_id}", users.GET_USER_INFO, "Show a client",
              path_fields={"client_id": "user_id"}),
    RestRoute("POST", "/api/clients/enroll", devices.ENROLL_CLIENT,
              "A one-time join token for a device", body=True),
    RestRoute("POST", "/api/clients/{client_id}/revoke", devices.REVOKE_CLIENT,
              "Revoke a device's credential, at once", path_fields={"client_id": "client_id"}),
)
