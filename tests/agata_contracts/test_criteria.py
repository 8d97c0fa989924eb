"""Tests for the client selection criteria language."""

import dataclasses
import math
import pickle
import random
from fractions import Fraction
from types import MappingProxyType

import numpy as np
import pytest

from agata_contracts.criteria import (
    CLIENT_ATTRIBUTES,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST_ITEMS,
    MAX_TOKENS,
    And,
    AttributeType,
    Compare,
    Criteria,
    CriteriaError,
    Literal,
    Name,
    Or,
    compile_criteria,
)

pytestmark = pytest.mark.unit

CAMERA = {
    "id": "a",
    "data_qnt": 50,
    "avg_acc_contrib": 0.7,
    "avg_disconnection_per_round": 1.0,
    "sensors": ["camera", "gps"],
}
GPU = {
    "id": "b",
    "data_qnt": 10,
    "avg_acc_contrib": 0.2,
    "avg_disconnection_per_round": 3.5,
    "sensors": ["gpu"],
}
FLAKY = {
    "id": "client-42",
    "data_qnt": 30,
    "avg_acc_contrib": 0.1,
    "avg_disconnection_per_round": 2.5,
    "sensors": [],
}
CLIENTS = (CAMERA, GPU, FLAKY)

ALLOWED = "allowed names: avg_acc_contrib, avg_disconnection_per_round, data_qnt, id, sensors"


def check(text: str) -> CriteriaError:
    with pytest.raises(CriteriaError) as info:
        compile_criteria(text)
    return info.value


# --------------------------------------------------------------------------------------------
# Valid expressions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'camera' in sensors", (True, False, False)),
        ("'gpu' not in sensors", (True, False, True)),
        ("data_qnt >= 30", (True, False, True)),
        ("data_qnt > 30", (True, False, False)),
        ("data_qnt < 30", (False, True, False)),
        ("data_qnt <= 30", (False, True, True)),
        ("data_qnt == 10", (False, True, False)),
        ("data_qnt != 10", (True, False, True)),
        ("data_qnt == 50.0", (True, False, False)),
        ("data_qnt >= 30 and 'camera' in sensors", (True, False, False)),
        (
            "data_qnt >= 30 and (avg_acc_contrib > 0.5 or not avg_disconnection_per_round > 2)",
            (True, False, False),
        ),
        (
            "data_qnt >= 30 and avg_acc_contrib > 0.5 or not avg_disconnection_per_round > 2",
            (True, False, False),
        ),
        ("data_qnt >= 30 or 'gpu' in sensors and data_qnt > 100", (True, False, True)),
        ("(data_qnt >= 30 or 'gpu' in sensors) and data_qnt > 40", (True, False, False)),
        ("id == 'a'", (True, False, False)),
        ('id == "b"', (False, True, False)),
        ("id != 'a'", (False, True, True)),
        ("'a' == id", (True, False, False)),
        ("id in ['a', 'b']", (True, True, False)),
        ("id in ['a', 'b',]", (True, True, False)),
        ("id not in ['a', 'b']", (False, False, True)),
        ("data_qnt in [10, 30.0]", (False, True, True)),
        ("data_qnt in [-1, 1e3, .5, 50]", (True, False, False)),
        ("'client' in id", (False, False, True)),
        ("'-' not in id", (True, True, False)),
        ("avg_acc_contrib > -1.5", (True, True, True)),
        ("avg_disconnection_per_round>=2.5", (False, True, True)),
        ("data_qnt>-1", (True, True, True)),
        ("not not data_qnt > 20", (True, False, True)),
        ("not (data_qnt > 20 and avg_acc_contrib > 0.5)", (False, True, True)),
        ("((((data_qnt > 20))))", (True, False, True)),
        ("(data_qnt > 20) == true", (True, False, True)),
        ("(data_qnt > 20) != ('gpu' in sensors)", (True, True, True)),
        ("true", (True, True, True)),
        ("false", (False, False, False)),
        ("not false", (True, True, True)),
        ("true == false", (False, False, False)),
        ("'it\\'s' == \"it's\"", (True, True, True)),
        ('"say \\"hi\\"" == \'say "hi"\'', (True, True, True)),
        ("'a\\\\b' == 'a\\\\b'", (True, True, True)),
        ("  data_qnt\t>\n10  ", (True, False, True)),
    ],
)
def test_valid_expressions(text: str, expected: tuple[bool, bool, bool]) -> None:
    criteria = compile_criteria(text)
    assert tuple(criteria.matches(client) for client in CLIENTS) == expected
    assert criteria.source == text


@pytest.mark.parametrize(
    "text",
    [
        "data_qnt > 20 AND 'camera' IN sensors",
        "data_qnt > 20 And 'camera' In sensors",
        "NOT data_qnt <= 20 and 'camera' in sensors",
        "data_qnt > 20 and 'gpu' NOT IN sensors",
        "data_qnt > 20 and 'gpu' Not In sensors and TRUE",
        "(data_qnt > 20 Or False) and ('camera' in sensors) == True",
    ],
)
def test_keywords_are_case_insensitive(text: str) -> None:
    criteria = compile_criteria(text)
    assert criteria.matches(CAMERA) is True
    assert criteria.matches(GPU) is False


@pytest.mark.parametrize("text", ["", " ", "\t\n  \r\n"])
@pytest.mark.parametrize("client", [*CLIENTS, {}])
def test_empty_criteria_matches_everyone(text: str, client: dict) -> None:
    criteria = compile_criteria(text)
    assert criteria.expression is None
    assert criteria.names() == frozenset()
    assert criteria.matches(client) is True


def test_names() -> None:
    criteria = compile_criteria(
        "data_qnt >= 30 and ('camera' in sensors or not avg_acc_contrib > data_qnt)"
    )
    assert criteria.names() == frozenset({"data_qnt", "sensors", "avg_acc_contrib"})
    assert compile_criteria("true").names() == frozenset()


def test_ast_shape_and_immutability() -> None:
    criteria = compile_criteria("data_qnt > 1 or id == 'x' or true")
    assert isinstance(criteria, Criteria)
    expression = criteria.expression
    assert isinstance(expression, Or)
    assert len(expression.operands) == 3  # flattened, not nested
    first = expression.operands[0]
    assert first == Compare(
        ">",
        Name("data_qnt", AttributeType.NUMBER, 0),
        Literal(1, AttributeType.NUMBER, 11),
        9,
    )
    assert isinstance(compile_criteria("true and true and true").expression, And)
    with pytest.raises(dataclasses.FrozenInstanceError):
        criteria.source = "false"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.op = "<"  # type: ignore[misc]
    assert compile_criteria("data_qnt > 1") == compile_criteria("data_qnt > 1")
    hash(criteria)


def test_client_attributes() -> None:
    assert CLIENT_ATTRIBUTES == {
        "id": AttributeType.STRING,
        "data_qnt": AttributeType.NUMBER,
        "avg_acc_contrib": AttributeType.NUMBER,
        "avg_disconnection_per_round": AttributeType.NUMBER,
        "sensors": AttributeType.STRING_LIST,
    }


def test_custom_attributes_with_booleans() -> None:
    attributes = {"charging": AttributeType.BOOLEAN, "battery": AttributeType.NUMBER}
    criteria = compile_criteria("charging or battery > 50", attributes)
    assert criteria.matches({"charging": True, "battery": 10}) is True
    assert criteria.matches({"charging": False, "battery": 80}) is True
    assert criteria.matches({"charging": False, "battery": 10}) is False
    assert criteria.matches({"charging": "yes", "battery": 10}) is False
    assert compile_criteria("not charging", attributes).matches({"charging": False}) is True
    assert compile_criteria("charging == false", attributes).matches({"charging": False})
    with pytest.raises(CriteriaError, match="unknown name 'data_qnt'.*allowed names: battery"):
        compile_criteria("data_qnt > 1", attributes)
    with pytest.raises(CriteriaError, match="no names are allowed"):
        compile_criteria("data_qnt > 1", {})


# --------------------------------------------------------------------------------------------
# Runtime robustness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ({}, False),
        ({"data_qnt": None}, False),
        ({"data_qnt": "50"}, False),
        ({"data_qnt": True}, False),  # booleans are not numbers
        ({"data_qnt": [50]}, False),
        ({"data_qnt": float("nan")}, False),
        ({"data_qnt": float("inf")}, True),
        ({"data_qnt": 50}, True),
        ({"data_qnt": 50.5}, True),
        ({"data_qnt": np.int64(50)}, True),
        ({"data_qnt": np.float32(50.5)}, True),
        ({"data_qnt": Fraction(61, 2)}, True),
        ({"data_qnt": 10**400}, True),
    ],
)
def test_number_runtime_types(client: dict, expected: bool) -> None:
    assert compile_criteria("data_qnt > 30").matches(client) is expected


def test_missing_attribute_makes_comparison_false_and_its_negation_true() -> None:
    assert compile_criteria("data_qnt > 5").matches({}) is False
    assert compile_criteria("data_qnt <= 5").matches({}) is False
    assert compile_criteria("data_qnt != 5").matches({}) is False
    assert compile_criteria("not data_qnt > 5").matches({}) is True
    assert compile_criteria("'a' not in sensors").matches({}) is False


@pytest.mark.parametrize(
    ("sensors", "expected"),
    [
        (["camera"], True),
        (("camera", "gps"), True),
        ({"camera"}, True),
        (frozenset({"camera"}), True),
        ([None, 3, "camera"], True),  # wrongly-typed elements are ignored
        ([None, 3], False),
        ("camera", False),  # a string is not a list of strings
        (None, False),
        ({"camera": 1}, False),
        (42, False),
    ],
)
def test_list_runtime_types(sensors: object, expected: bool) -> None:
    assert compile_criteria("'camera' in sensors").matches({"sensors": sensors}) is expected


@pytest.mark.parametrize(
    ("client_id", "expected"), [("a", True), (None, False), (1, False), (b"a", False)]
)
def test_string_runtime_types(client_id: object, expected: bool) -> None:
    assert compile_criteria("id == 'a'").matches({"id": client_id}) is expected


class Hostile:
    """A value whose every operation explodes."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __hash__(self) -> int:
        raise RuntimeError("boom")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __iter__(self) -> object:
        raise RuntimeError("boom")


class HostileInt(int):
    def __gt__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    __hash__ = int.__hash__


class HostileStr(str):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")

    def __contains__(self, item: object) -> bool:
        raise RuntimeError("boom")

    __hash__ = str.__hash__


class HostileList(list):
    def __iter__(self) -> object:
        raise RuntimeError("boom")


class HostileMapping(dict):
    def get(self, key: object, default: object = None) -> object:
        raise RuntimeError("boom")


def test_matching_never_raises_on_hostile_values() -> None:
    criteria = compile_criteria(
        "data_qnt > 1 or id == 'a' or 'x' in id or 'camera' in sensors or data_qnt == 1"
    )
    for value in (Hostile(), HostileList(["camera"]), object(), math.nan):
        client = dict.fromkeys(CLIENT_ATTRIBUTES, value)
        assert criteria.matches(client) is False
    assert compile_criteria("data_qnt > 1").matches({"data_qnt": HostileInt(5)}) is True
    assert compile_criteria("data_qnt == 5").matches({"data_qnt": HostileInt(5)}) is True
    assert compile_criteria("id == 'a'").matches({"id": HostileStr("a")}) is True
    assert compile_criteria("'x' in id").matches({"id": HostileStr("xy")}) is True
    assert compile_criteria("'a' in sensors").matches({"sensors": [HostileStr("a")]}) is True
    assert criteria.matches(HostileMapping(CAMERA)) is False
    assert criteria.matches(MappingProxyType(CAMERA)) is True
    assert criteria.matches(None) is False  # type: ignore[arg-type]


def test_matching_fuzz_never_raises() -> None:
    rng = random.Random(1234)
    values: list[object] = [
        None,
        0,
        -1,
        1.5,
        math.inf,
        math.nan,
        True,
        "",
        "camera",
        "a",
        [],
        ["camera"],
        [1, "gpu", None],
        {"a": 1},
        (1, 2),
        object(),
        b"x",
    ]
    criteria = [
        compile_criteria(text)
        for text in (
            "data_qnt >= 30 and (avg_acc_contrib > 0.5 or not avg_disconnection_per_round > 2)",
            "'camera' in sensors or 'gpu' not in sensors",
            "id in ['a', 'b'] or 'cam' in id or id != 'z'",
            "(data_qnt > 1) == ('x' in sensors)",
        )
    ]
    for _ in range(500):
        client = {name: rng.choice(values) for name in CLIENT_ATTRIBUTES if rng.random() < 0.8}
        for item in criteria:
            assert isinstance(item.matches(client), bool)


# --------------------------------------------------------------------------------------------
# Injection and abuse attempts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("().__class__.__bases__", ["attribute access", "not allowed"]),
        ("__import__('os')", ["function calls", "not allowed"]),
        ("__import__('os').system('id')", ["function calls", "not allowed"]),
        ("data_qnt.__class__", ["attribute access", "not allowed"]),
        ("'abc'.upper() == 'ABC'", ["attribute access"]),
        ("id.startswith('a')", ["attribute access"]),
        ("open('/etc/passwd')", ["function calls", "not allowed"]),
        ("len(sensors) > 1", ["function calls"]),
        ("(data_qnt)(1)", ["function calls"]),
        ("sensors[0]", ["subscripts", "not allowed"]),
        ("sensors[0] == 'camera'", ["subscripts"]),
        ("lambda: 1", ["unexpected character ':'"]),
        ("lambda", ["unknown name 'lambda'"]),
        ("[x for x in sensors]", ["list elements", "string or number literals"]),
        ("data_qnt ** 2", ["unexpected character '*'", "arithmetic"]),
        ("data_qnt + 1 > 2", ["unexpected character '+'", "arithmetic"]),
        ("data_qnt - 1 > 2", ["unexpected character '-'", "arithmetic"]),
        ("data_qnt-1 > 2", ["unexpected character '-'", "arithmetic"]),
        ("data_qnt; import os", ["unexpected character ';'"]),
        ("'a' * 10**9", ["unexpected character '*'"]),
        ("@decorator", ["unexpected character '@'"]),
        ("`id`", ["unexpected character '`'"]),
        ("data_qnt = 5", ["unexpected character '='", "=="]),
        ("!(data_qnt > 1)", ["unexpected character '!'", "not"]),
        ("data_qnt > 1 && true", ["unexpected character '&'", "and"]),
        ("data_qnt > 1 || true", ["unexpected character '|'", "or"]),
        ("{1: 2}", ["unexpected character '{'"]),
        ("data_qnt > 1 # comment", ["unexpected character '#'"]),
        ("f'{id}' == 'a'", ["unknown name 'f'"]),
        ("__builtins__", ["unknown name '__builtins__'", "allowed names"]),
        ("__class__ == 1", ["unknown name '__class__'"]),
        ("globals", ["unknown name 'globals'"]),
        ("data_qnt is None", ["unexpected name 'is'"]),
        ("x if data_qnt else y", ["unknown name 'x'"]),
        ("data_qnt > 1 and exec", ["unknown name 'exec'"]),
        ("'\\x41' == 'A'", ["invalid escape sequence"]),
        ("id == 'a\\'", ["unterminated string"]),
        ("id == 'abc", ["unterminated string"]),
        ('id == "abc', ["unterminated string"]),
        ("data_qnt > 1_000", ["invalid number literal"]),
        ("data_qnt > 1.2.3", ["invalid number literal"]),
        ("data_qnt > 1e999", ["out of range"]),
        ("data_qnt > 0x10", ["invalid number literal"]),
        ("1.__class__", ["invalid number literal"]),
        ("data_qnt > ١", ["unexpected character"]),  # non-ASCII digit
        ("dàta_qnt > 1", ["unexpected character 'à'"]),
    ],
)
def test_injection_and_syntax_abuse_is_rejected(text: str, words: list[str]) -> None:
    error = check(text)
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("foo > 1", ["unknown name 'foo'", ALLOWED]),
        ("Data_Qnt > 1", ["unknown name 'Data_Qnt'"]),
        ("data_qnt > 'a'", ["'>' needs two numbers", "a number and a string"]),
        ("'x' in data_qnt", ["'in' needs a list or a string on the right", "a number"]),
        ("sensors > 3", ["'>' needs two numbers", "a list of strings"]),
        ("3 in sensors", ["needs a string on the left", "got a number"]),
        ("'a' in [1, 2]", ["needs a number on the left", "got a string"]),
        ("id == 1", ["'==' needs two values of the same type", "a string and a number"]),
        ("data_qnt != true", ["'!=' needs two values of the same type"]),
        ("sensors == ['a']", ["'==' cannot compare lists"]),
        ("id in ['a', 1]", ["list literal mixes strings and numbers"]),
        ("id in [true]", ["list elements must be string or number literals"]),
        ("id in [['a']]", ["list elements must be string or number literals"]),
        ("id in [sensors]", ["list elements must be string or number literals"]),
        ("data_qnt", ["needs a condition", "name 'data_qnt' is a number", "compare it"]),
        ("'camera'", ["needs a condition", "is a string"]),
        ("sensors and true", ["'and' needs a condition", "is a list of strings"]),
        ("true or 5", ["'or' needs a condition", "is a number"]),
        ("not data_qnt", ["'not' needs a condition", "is a number"]),
        ("(data_qnt > 1) > 0", ["'>' needs two numbers", "a boolean"]),
        ("1 < data_qnt < 3", ["chained comparisons are not allowed", "and"]),
        ("data_qnt == 1 == 1", ["chained comparisons"]),
        ("'a' in id in sensors", ["chained comparisons"]),
        ("'a' in id not in sensors", ["chained comparisons"]),
        ("data_qnt >", ["unexpected end of input"]),
        ("data_qnt > 1 and", ["unexpected end of input"]),
        ("not", ["unexpected end of input"]),
        ("(data_qnt > 1", ["unexpected end of input", "never closed"]),
        ("id in ['a'", ["unexpected end of input", "never closed"]),
        ("id in ['a',", ["unexpected end of input", "never closed"]),
        ("id in ['a' 'b']", ["unexpected string 'b'", "expected ',' or ']'"]),
        ("(data_qnt > 1 'x')", ["unexpected string 'x'", "expected ')'"]),
        ("data_qnt > 1)", ["unmatched ')'"]),
        ("()", ["empty parentheses"]),
        ("id in []", ["empty list literals are not allowed"]),
        ("data_qnt > 1 true", ["unexpected keyword 'true'"]),
        ("data_qnt > 1 data_qnt < 3", ["unexpected name 'data_qnt'"]),
        ("data_qnt not 3", ["'not' here must be followed by 'in'"]),
        ("and data_qnt > 1", ["unexpected keyword 'and'"]),
        ("data_qnt > > 1", ["unexpected '>'"]),
        ("data_qnt <> 1", ["unexpected '>'"]),
        (",", ["unexpected ','"]),
    ],
)
def test_names_types_and_syntax_errors(text: str, words: list[str]) -> None:
    error = check(text)
    for word in words:
        assert word in str(error)


def test_error_message_format_and_position() -> None:
    error = check("not foo")
    assert str(error) == f"unknown name 'foo' at position 4; {ALLOWED}"
    assert error.message == "unknown name 'foo'"
    assert error.position == 4
    assert isinstance(error, ValueError)
    assert check("data_qnt > 'a'").position == 9
    assert check("open('/etc/passwd')").position == 4
    assert check("x == 'abc").position == 5
    assert check("data_qnt >").position == 10
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert (restored.message, restored.position, str(restored)) == (
        error.message,
        error.position,
        str(error),
    )


@pytest.mark.parametrize("value", [None, 5, 1.5, b"data_qnt > 1", ["data_qnt > 1"], object()])
def test_non_string_input_is_rejected(value: object) -> None:
    with pytest.raises(CriteriaError, match="criteria must be a string") as info:
        compile_criteria(value)  # type: ignore[arg-type]
    assert info.value.position is None


# --------------------------------------------------------------------------------------------
# Size and nesting limits
# --------------------------------------------------------------------------------------------


def test_huge_parenthesis_input_fails_fast() -> None:
    error = check("(" * 100_000)
    assert "too long" in str(error)
    assert error.position is None


def test_huge_or_chain_is_too_long() -> None:
    error = check(" or ".join(["data_qnt > 1"] * 10_000))
    assert "too long" in str(error)
    assert f"maximum is {MAX_LENGTH}" in str(error)


def test_length_limit_is_inclusive() -> None:
    assert compile_criteria(" " * (MAX_LENGTH - 4) + "true").matches({}) is True
    assert "too long" in str(check(" " * (MAX_LENGTH - 3) + "true"))
    assert "too long" in str(check(" " * (MAX_LENGTH + 1)))


@pytest.mark.parametrize(
    "text",
    [
        "(" * 1000,
        "(" * 600 + "true" + ")" * 600,
        "(" * 40 + "true" + ")" * 40,
        "not " * 400 + "true",
        "[" * 1000,
    ],
)
def test_deep_nesting_within_length_limit_never_recurses(text: str) -> None:
    error = check(text)
    assert "too many tokens" in str(error) or "nested too deeply" in str(error)


@pytest.mark.parametrize(
    "build",
    [
        lambda d: "(" * d + "data_qnt > 1" + ")" * d,
        lambda d: "not " * d + "data_qnt > 1",
        lambda d: "(not " * (d // 2) + "true" + ")" * (d // 2),
    ],
)
def test_depth_limit(build: object) -> None:
    criteria = compile_criteria(build(MAX_DEPTH))  # type: ignore[operator]
    assert criteria.matches(CAMERA) in (True, False)
    error = check(build(MAX_DEPTH + 2))  # type: ignore[operator]
    assert "nested too deeply" in str(error)
    assert f"maximum depth is {MAX_DEPTH}" in str(error)


def test_depth_limit_exact() -> None:
    compile_criteria("(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH)
    error = check("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1))
    assert error.position == MAX_DEPTH
    compile_criteria("(" * (MAX_DEPTH - 1) + "id in ['a']" + ")" * (MAX_DEPTH - 1))
    assert "nested too deeply" in str(check("(" * MAX_DEPTH + "id in ['a']" + ")" * MAX_DEPTH))


def test_token_limit() -> None:
    terms = (MAX_TOKENS + 1) // 4  # "1<2" is three tokens, plus one for each "or"
    ok = " or ".join(["1<2"] * terms)
    assert compile_criteria(ok).matches({}) is True
    error = check(ok + " or 1<2")
    assert "too many tokens" in str(error)
    assert f"maximum is {MAX_TOKENS}" in str(error)


def test_list_length_limit() -> None:
    items = ", ".join(str(i) for i in range(MAX_LIST_ITEMS))
    criteria = compile_criteria(f"data_qnt in [{items}]")
    assert criteria.matches({"data_qnt": MAX_LIST_ITEMS - 1}) is True
    assert criteria.matches({"data_qnt": MAX_LIST_ITEMS}) is False
    items = ", ".join(str(i) for i in range(MAX_LIST_ITEMS + 1))
    error = check(f"data_qnt in [{items}]")
    assert "list literal is too long" in str(error)


def test_maximal_expression_compiles_and_evaluates() -> None:
    term = "data_qnt > 1"
    count = 125
    text = " or ".join([term] * count)
    assert len(text) <= MAX_LENGTH
    criteria = compile_criteria(text)
    assert isinstance(criteria.expression, Or)
    assert len(criteria.expression.operands) == count
    assert criteria.matches({"data_qnt": 0}) is False
    assert criteria.matches({"data_qnt": 2}) is True

    # Deeply nested, mixed and/or/not up to the depth limit.
    inner = "'camera' in sensors and data_qnt >= 30"
    nested = inner
    for level in range(MAX_DEPTH // 2):
        keyword = "or" if level % 2 else "and"
        nested = f"not (avg_acc_contrib > {level} {keyword} {nested})"
    criteria = compile_criteria(nested)
    for client in (*CLIENTS, {}):
        assert isinstance(criteria.matches(client), bool)


def test_random_garbage_only_raises_criteria_error() -> None:
    rng = random.Random(42)
    pieces = [
        "data_qnt",
        "id",
        "sensors",
        "foo",
        "and",
        "or",
        "not",
        "in",
        "true",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "==",
        "<",
        ">=",
        "!=",
        "=",
        "-",
        "1",
        "-2.5",
        "'a'",
        "'",
        '"',
        "\\",
        " ",
        "__class__",
        "*",
        ":",
    ]
    compiled = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        try:
            criteria = compile_criteria(text)
        except CriteriaError as error:
            assert error.message
            assert error.position is None or 0 <= error.position <= len(text)
        else:
            compiled += 1
            assert isinstance(criteria.matches(CAMERA), bool)
            assert isinstance(criteria.matches({}), bool)
    assert compiled > 0
