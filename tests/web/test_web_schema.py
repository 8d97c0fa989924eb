"""The browser's JSON-Schema validator (js/schema.js) agrees with the server's pydantic models
on the schemas the gateway serves."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud_gateway.routes import EXPOSED_RPCS

# (rpc, payload): accepted or refused alike by pydantic and by the schema. (Values pydantic
# coerces, like "80" for a port, are left out: the forms convert text by the schema's type.)
CASES = [
    ("rpc_exec_create_task", {"port": 8080}),
    ("rpc_exec_create_task", {"port": 8080, "task_id": None, "host": "node-1.lab"}),
    ("rpc_exec_create_task", {}),
    ("rpc_exec_create_task", {"port": 70000}),
    ("rpc_exec_create_task", {"port": 0}),
    ("rpc_exec_create_task", {"port": 80.5}),
    ("rpc_exec_create_task", {"port": 80, "task_id": ""}),
    ("rpc_exec_create_task", {"port": 80, "task_id": "-starts-badly"}),
    ("rpc_exec_create_task", {"port": 80, "task_id": "x" * 65}),
    ("rpc_exec_create_task", {"port": 80, "host": "bad host"}),
    ("rpc_exec_create_task", {"port": 80, "surprise": 1}),
    ("rpc_exec_create_task", {"port": 80, "tags": ["a", "b"]}),
    ("rpc_exec_create_task", {"port": 80, "tags": ["t"] * 33}),
    ("rpc_exec_create_task", {"port": 80, "tags": "a,b"}),
    ("rpc_exec_create_task", {"port": 80, "selection_criteria": "x" * 2001}),
    ("rpc_exec_create_task", {"port": 80, "server_arguments": {"a": 1, "b": 1.5, "c": True,
                                                               "d": "text"}}),
    ("rpc_exec_create_task", {"port": 80, "server_arguments": {"9lives": 1}}),
    ("rpc_exec_create_task", {"port": 80, "server_arguments": {"a": [1]}}),
    ("rpc_exec_create_task", {"port": 80, "client_arguments": {"a": None}}),
    ("rpc_exec_create_task", {"port": 80, "client_arguments": {f"k{i}": i for i in range(65)}}),
    ("rpc_exec_update_task", {"task_id": "t1", "port": None, "tags": None}),
    ("rpc_exec_update_task", {"task_id": "t1", "port": 99999}),
    ("rpc_exec_update_task", {"port": 80}),
    ("rpc_exec_start_server_task", {"task_id": "t1", "server_arguments": None}),
    ("rpc_exec_start_server_task", {"task_id": "t1", "server_arguments": {"rounds": 3}}),
    ("rpc_exec_start_server_task", {"task_id": "t1", "server_arguments": {"-x": 3}}),
    ("rpc_exec_list_tasks", {"status": "running", "limit": 5}),
    ("rpc_exec_list_tasks", {"status": "sleeping"}),
    ("rpc_exec_list_tasks", {"limit": 0}),
    ("rpc_exec_list_tasks", {"offset": -1}),
    ("rpc_exec_update_user_info", {"user_id": "dev:1", "avg_acc_contrib": -0.5,
                                   "sensors": ["camera"]}),
    ("rpc_exec_update_user_info", {"user_id": "dev:1", "avg_acc_contrib": 2}),
    ("rpc_exec_update_user_info", {"user_id": "dev:1", "data_qnt": -1}),
    ("rpc_exec_update_user_info", {"user_id": "dev 1"}),
    ("rpc_exec_upload_task_file", {"task_id": "t1", "filename": "x" * 129, "content": ""}),
]

VALIDATE = """
const done = arguments[arguments.length - 1];
Promise.all([import('/ui/js/schema.js'), fetch('/api/schemas').then(r => r.json())])
  .then(([m, schemas]) => done(arguments[0].map(([rpc, payload]) =>
    m.validate(schemas[rpc], payload).map(e => e.path.split('.')[0]).sort())))
  .catch(e => done('error: ' + e));
"""


def pydantic_fields(rpc: str, payload: dict) -> list[str]:
    try:
        EXPOSED_RPCS[rpc].request.model_validate(payload)
    except ValidationError as exc:
        return sorted({str(error["loc"][0]) if error["loc"] else "" for error in exc.errors()})
    return []


def test_the_schema_validator_agrees_with_pydantic(ui):
    ui.open("index.html")
    results = ui.driver.execute_async_script(VALIDATE, [list(case) for case in CASES])
    assert isinstance(results, list), results
    disagreements = []
    for (rpc, payload), js_fields in zip(CASES, results, strict=True):
        expected = pydantic_fields(rpc, payload)
        if sorted(set(js_fields)) != expected:
            disagreements.append((rpc, payload, {"pydantic": expected, "js": js_fields}))
    assert not disagreements, disagreements


@pytest.mark.parametrize(("text", "expected"), [
    ("rounds=5\nlr=0.01\nname=\"007\"\n# comment\n\nflag=true",
     {"rounds": 5, "lr": 0.01, "name": "007", "flag": True}),
    ('{"epochs": 2, "note": "x"}', {"epochs": 2, "note": "x"}),
    ("", {}),
    ("path=/data/x=y", {"path": "/data/x=y"}),
])
def test_arguments_text_becomes_json(ui, text, expected):
    ui.open("index.html")
    result = ui.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/ui/js/forms.js').then(m => {"
        "  const parsed = m.parseArguments(arguments[0]);"
        "  done([parsed, m.parseArguments(m.formatArguments(parsed))]);"
        "}).catch(e => done('error: ' + e));", text)
    assert result == [expected, expected]
