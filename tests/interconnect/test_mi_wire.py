"""Unit tests of the JSON wire format (no broker)."""

import json

import pytest
from pydantic import BaseModel, Field

from microservice_interconnect import wire
from microservice_interconnect.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    Unauthorized,
    error_for_status,
)

pytestmark = pytest.mark.unit


class Inner(BaseModel):
    level: int = Field(ge=0)


class Request(BaseModel):
    name: str
    count: int
    inner: Inner | None = None


class Response(BaseModel):
    greeting: str
    numbers: list[int] = []


def test_dumps_is_compact_utf8():
    assert wire.dumps({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'.encode()


def test_loads_parses_bytes_and_str():
    assert wire.loads(b'{"a":1}') == {"a": 1}
    assert wire.loads('[1, 2]') == [1, 2]


@pytest.mark.parametrize("data", [b"{", b"", b"not json", b"\xff\xfe", b'{"a":1,}'])
def test_loads_malformed_is_bad_request(data):
    with pytest.raises(BadRequest) as caught:
        wire.loads(data)
    assert caught.value.status_code == 400
    assert "not valid JSON" in caught.value.message


def test_ok_reply_envelope():
    body = wire.ok_reply(Response(greeting="hé", numbers=[1, 2]))
    assert json.loads(body) == {"status_code": 200, "return": {"greeting": "hé", "numbers": [1, 2]}}


def test_error_reply_minimal():
    envelope = json.loads(wire.error_reply(NotFound("no task 7")))
    assert envelope == {"status_code": 404, "exception": "no task 7"}


def test_error_reply_with_errors_and_error_id():
    problems = [{"field": "name", "message": "Field required"}]
    envelope = json.loads(wire.error_reply(BadRequest("invalid", errors=problems)))
    assert envelope == {"status_code": 400, "exception": "invalid", "errors": problems}
    envelope = json.loads(wire.error_reply(RpcError("internal error (id abc)", error_id="abc")))
    assert envelope == {"status_code": 500, "exception": "internal error (id abc)",
                        "error_id": "abc"}


def test_split_reply_success():
    status, result, envelope = wire.split_reply(b'{"status_code":200,"return":{"x":1}}')
    assert status == 200
    assert result == {"x": 1}
    assert envelope["return"] == {"x": 1}


def test_split_reply_error_has_no_return():
    status, result, envelope = wire.split_reply(b'{"status_code":409,"exception":"busy"}')
    assert (status, result) == (409, None)
    assert envelope["exception"] == "busy"


def test_split_reply_accepts_string_status():
    assert wire.split_reply(b'{"status_code":"404"}')[0] == 404


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"[1]", b'"text"', b"42", b"{}", b'{"status_code":null}',
    b'{"status_code":"abc"}', b'{"return":1}', b"\xff",
])
def test_split_reply_malformed_is_rpc_error(body):
    with pytest.raises(RpcError) as caught:
        wire.split_reply(body)
    assert type(caught.value) is RpcError
    assert caught.value.status_code == 500
    assert "malformed reply envelope" in caught.value.message


def test_raise_for_envelope_200_does_nothing():
    wire.raise_for_envelope(200, {"status_code": 200, "return": None})


@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequest), (401, Unauthorized), (404, NotFound), (409, Conflict),
    (413, PayloadTooLarge), (503, ServiceUnavailable), (504, RpcTimeout),
])
def test_raise_for_envelope_maps_status_to_class(status, cls):
    envelope = {"status_code": status, "exception": f"failure {status}"}
    with pytest.raises(cls) as caught:
        wire.raise_for_envelope(status, envelope)
    assert caught.value.status_code == status
    assert caught.value.message == f"failure {status}"
    assert str(caught.value) == f"failure {status}"


def test_raise_for_envelope_500_and_unknown_status():
    with pytest.raises(RpcError) as caught:
        wire.raise_for_envelope(500, {"status_code": 500, "exception": "internal error (id x1)",
                                      "error_id": "x1"})
    assert type(caught.value) is RpcError
    assert caught.value.status_code == 500
    assert caught.value.error_id == "x1"

    with pytest.raises(RpcError) as caught:
        wire.raise_for_envelope(418, {"status_code": 418})
    assert caught.value.status_code == 418
    assert "418" in caught.value.message
    # the odd status does not leak onto the class
    assert RpcError.status_code == 500
    assert RpcError("plain").status_code == 500


def test_raise_for_envelope_carries_field_errors():
    problems = [{"field": "count", "message": "bad"}]
    with pytest.raises(BadRequest) as caught:
        wire.raise_for_envelope(400, {"status_code": 400, "exception": "x", "errors": problems})
    assert caught.value.errors == problems


def test_error_round_trip_through_the_envelope():
    original = Conflict("already running", errors=[{"field": "task_id", "message": "busy"}])
    status, _, envelope = wire.split_reply(wire.error_reply(original))
    with pytest.raises(Conflict) as caught:
        wire.raise_for_envelope(status, envelope)
    assert caught.value.message == original.message
    assert caught.value.errors == original.errors


def test_error_for_status_builds_instances():
    assert isinstance(error_for_status(404, "m"), NotFound)
    odd = error_for_status(599, "m", error_id="e")
    assert type(odd) is RpcError
    assert (odd.status_code, odd.error_id) == (599, "e")


def test_parse_request_valid():
    request = wire.parse_request(Request, b'{"name":"a","count":2,"inner":{"level":1}}', "req")
    assert request == Request(name="a", count=2, inner=Inner(level=1))


def test_parse_request_names_missing_and_wrong_fields():
    with pytest.raises(BadRequest) as caught:
        wire.parse_request(Request, b'{"count":"many"}', "request for x")
    error = caught.value
    assert error.status_code == 400
    assert error.message.startswith("invalid request for x: ")
    fields = {problem["field"] for problem in error.errors}
    assert fields == {"name", "count"}
    assert "name" in error.message
    assert "count" in error.message


def test_parse_request_names_nested_fields_with_dots():
    with pytest.raises(BadRequest) as caught:
        wire.parse_request(Request, b'{"name":"a","count":1,"inner":{"level":-3}}', "req")
    assert [problem["field"] for problem in caught.value.errors] == ["inner.level"]
    assert "inner.level" in caught.value.message


def test_parse_request_wrong_top_level_type_names_the_body():
    with pytest.raises(BadRequest) as caught:
        wire.parse_request(Request, b"[1, 2]", "req")
    assert caught.value.errors is not None
    assert caught.value.errors[0]["field"] == "body"


@pytest.mark.parametrize("body", [b"{", b"", b"nope", b'{"name":"a",}', b"\xff\xfe{}"])
def test_parse_request_malformed_json(body):
    with pytest.raises(BadRequest) as caught:
        wire.parse_request(Request, body, "request for x")
    assert caught.value.message == "invalid request for x: body is not valid JSON"


def test_validation_errors_format():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        Request.model_validate({"name": 1})
    problems = wire.validation_errors(caught.value)
    assert all(set(problem) == {"field", "message"} for problem in problems)
    assert {problem["field"] for problem in problems} == {"name", "count"}


def test_a_body_nested_too_deeply_is_a_bad_request_not_a_crash() -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        wire.loads(b"[" * 100_000 + b"]" * 100_000)
