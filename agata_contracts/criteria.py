"""Client selection criteria: a small, safe expression language.

Operators attach a *selection criteria* string to each federated-learning task to say which
client devices may join it, for example::

    data_qnt >= 30 and 'camera' in sensors

The text is never handed to ``eval``/``exec``/``compile`` or Python's ``ast`` module. It goes
through a hand-written tokenizer, a recursive-descent parser producing a tree of frozen
dataclasses, a static type checker and finally a tree-walking evaluator.

Grammar (keywords ``and``, ``or``, ``not``, ``in``, ``true`` and ``false`` are case-insensitive)::

    criteria   := <empty> | or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand (comp_op operand)?        -- no chaining: 1 < x < 3 is rejected
    comp_op    := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in"
    operand    := NUMBER | STRING | "true" | "false" | NAME | list | "(" or_expr ")"
    list       := "[" literal ("," literal)* ","? "]" -- strings or numbers, not mixed

* Numbers: ``30``, ``-1.5``, ``.5``, ``1e3``. Strings: single or double quotes; the only
  escapes are ``\\'``, ``\\"`` and ``\\\\``.
* Names must be attributes of the client (see ``CLIENT_ATTRIBUTES``).
* A bare operand may be used as a condition only if it is a boolean (a boolean attribute or
  ``true``/``false``).
* Empty or whitespace-only criteria match every client.

Evaluation semantics: a comparison that reads a missing attribute, or an attribute whose
runtime value does not have the declared type (``None``, a string where a number is expected,
``True`` where a number is expected, ...), is simply false. Enclosing operators see that plain
``false``, so ``not data_qnt > 5`` is *true* for a client that does not report ``data_qnt``.
Elements of a list attribute that have the wrong type are ignored. Evaluation never raises and
runs in time linear in the size of the expression (and of the client's values).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

__all__ = [
    "CLIENT_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_TOKENS",
    "And",
    "AttributeType",
    "Compare",
    "Criteria",
    "CriteriaError",
    "ListLiteral",
    "Literal",
    "Name",
    "Node",
    "Not",
    "Or",
    "compile_criteria",
]

MAX_LENGTH: Final[int] = 2000
"""Maximum length of a criteria string, in characters (checked before tokenizing)."""
MAX_TOKENS: Final[int] = 500
"""Maximum number of tokens in a criteria string."""
MAX_DEPTH: Final[int] = 32
"""Maximum nesting of parentheses, ``not`` and list literals."""
MAX_LIST_ITEMS: Final[int] = 100
"""Maximum number of elements in a list literal."""


class AttributeType(Enum):
    """Static type of a client attribute or of a sub-expression."""

    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    STRING_LIST = "list of strings"
    NUMBER_LIST = "list of numbers"


CLIENT_ATTRIBUTES: dict[str, AttributeType] = {
    "id": AttributeType.STRING,
    "data_qnt": AttributeType.NUMBER,
    "avg_acc_contrib": AttributeType.NUMBER,
    "avg_disconnection_per_round": AttributeType.NUMBER,
    "sensors": AttributeType.STRING_LIST,
}
"""Client statistics that selection criteria may refer to, with their types."""


class CriteriaError(ValueError):
    """Invalid selection criteria.

    ``message`` says what is wrong, ``position`` is the 0-based character offset in the
    criteria text where it was found (``None`` when it concerns the whole text) and ``hint``
    is optional extra advice.
    """

    def __init__(self, message: str, position: int | None = None, hint: str | None = None) -> None:
        self.message = message
        self.position = position
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.position is not None:
            text += f" at position {self.position}"
        if self.hint:
            text += f"; {self.hint}"
        return text

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[type[CriteriaError], tuple[str, int | None, str | None]]:
        return (type(self), (self.message, self.position, self.hint))


# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A number, string or boolean literal."""

    value: bool | int | float | str
    type: AttributeType
    position: int


@dataclass(frozen=True, slots=True)
class ListLiteral:
    """A list literal of strings or numbers, e.g. ``['a', 'b']``."""

    items: tuple[Literal, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Name:
    """A reference to a client attribute, with its declared type."""

    name: str
    type: AttributeType
    position: int


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``; ``position`` is the operator's position."""

    op: str
    left: Node
    right: Node
    position: int


@dataclass(frozen=True, slots=True)
class Not:
    """Boolean negation."""

    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class And:
    """Conjunction of two or more conditions (flattened, evaluated left to right)."""

    operands: tuple[Node, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Or:
    """Disjunction of two or more conditions (flattened, evaluated left to right)."""

    operands: tuple[Node, ...]
    position: int


Node = Literal | ListLiteral | Name | Compare | Not | And | Or

_ORDERING_OPS: Final = frozenset({"<", "<=", ">", ">="})
_EQUALITY_OPS: Final = frozenset({"==", "!="})


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class _Kind(Enum):
    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    AND = "and"
    OR = "or"
    NOT = "not"
    IN = "in"
    TRUE = "true"
    FALSE = "false"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    EOF = "end of input"


_KEYWORDS: Final[dict[str, _Kind]] = {
    "and": _Kind.AND,
    "or": _Kind.OR,
    "not": _Kind.NOT,
    "in": _Kind.IN,
    "true": _Kind.TRUE,
    "false": _Kind.FALSE,
}

# Tokens after which `(`, `.` or `[` would mean a call, attribute access or subscript.
_VALUE_KINDS: Final = frozenset(
    {_Kind.NAME, _Kind.NUMBER, _Kind.STRING, _Kind.TRUE, _Kind.FALSE, _Kind.RPAREN, _Kind.RBRACKET}
)

_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PUNCTUATION: Final[dict[str, _Kind]] = {
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    "[": _Kind.LBRACKET,
    "]": _Kind.RBRACKET,
    ",": _Kind.COMMA,
}
_HINTS: Final[dict[str, str]] = {
    "=": "use '==' to compare",
    "!": "use 'not' for negation",
    "&": "use 'and'",
    "|": "use 'or'",
    "+": "arithmetic is not supported",
    "-": "arithmetic is not supported; write negative numbers like -1.5",
    "*": "arithmetic is not supported",
    "/": "arithmetic is not supported",
    "%": "arithmetic is not supported",
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    position: int
    value: bool | int | float | str | None = None


def _shorten(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_token(token: _Token) -> str:
    if token.kind is _Kind.EOF:
        return "end of input"
    if token.kind is _Kind.NUMBER:
        return f"number {_shorten(token.text)}"
    if token.kind is _Kind.STRING:
        return f"string {_shorten(token.text)}"
    if token.kind is _Kind.NAME:
        return f"name '{_shorten(token.text)}'"
    if token.kind in _KEYWORDS.values():
        return f"keyword '{token.text}'"
    return f"'{token.text}'"


def _scan_string(text: str, start: int) -> tuple[str, int]:
    """Scan a quoted string starting at ``start``; return its value and the end offset."""
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == quote:
            return "".join(parts), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            escaped = text[i + 1]
            if escaped not in ("'", '"', "\\"):
                sequence = "\\" + escaped
                raise CriteriaError(
                    f"invalid escape sequence {sequence!r} in string",
                    i,
                    "only \\', \\\" and \\\\ are supported",
                )
            parts.append(escaped)
            i += 2
            continue
        parts.append(ch)
        i += 1
    raise CriteriaError("unterminated string", start, f"add a closing {quote}")


def _scan_number(text: str, start: int) -> tuple[_Token, int] | None:
    match = _NUMBER_RE.match(text, start)
    if match is None:
        return None
    end = match.end()
    literal = match.group()
    if end < len(text) and (text[end].isalnum() or text[end] in "_."):
        raise CriteriaError(f"invalid number literal starting with {_shorten(literal)!r}", start)
    value: int | float
    if any(c in literal for c in ".eE"):
        value = float(literal)
        if not math.isfinite(value):
            raise CriteriaError(f"number {_shorten(literal)} is out of range", start)
    else:
        value = int(literal)
    return _Token(_Kind.NUMBER, literal, start, value), end


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens (the last one is EOF); rejects any suspicious character."""
    tokens: list[_Token] = []
    i = 0
    n = len(text)

    def previous_is_value() -> bool:
        return bool(tokens) and tokens[-1].kind in _VALUE_KINDS

    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if len(tokens) >= MAX_TOKENS:
            raise CriteriaError(f"criteria has too many tokens (maximum is {MAX_TOKENS})", i)
        token: _Token
        if ch in "'\"":
            value, end = _scan_string(text, i)
            token = _Token(_Kind.STRING, text[i:end], i, value)
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            match = _NAME_RE.match(text, i)
            assert match is not None  # guaranteed by the first character
            end = match.end()
            word = match.group()
            kind = _KEYWORDS.get(word.lower(), _Kind.NAME)
            value_: bool | None = None
            if kind is _Kind.TRUE:
                value_ = True
            elif kind is _Kind.FALSE:
                value_ = False
            token = _Token(kind, word, i, value_)
        elif ch in "0123456789" or (ch in "-." and not previous_is_value()):
            scanned = _scan_number(text, i)
            if scanned is None:
                raise CriteriaError(f"unexpected character {ch!r}", i, _HINTS.get(ch))
            token, end = scanned
        elif ch in "=!<>":
            two = text[i : i + 2]
            if two in ("==", "!=", "<=", ">="):
                end = i + 2
                token = _Token(_Kind.OP, two, i, two)
            elif ch in "<>":
                end = i + 1
                token = _Token(_Kind.OP, ch, i, ch)
            else:
                raise CriteriaError(f"unexpected character {ch!r}", i, _HINTS.get(ch))
        elif ch in _PUNCTUATION:
            if previous_is_value():
                if ch == "(":
                    raise CriteriaError("function calls are not allowed", i)
                if ch == "[":
                    raise CriteriaError(
                        "subscripts are not allowed", i, "use 'in' to test list membership"
                    )
            end = i + 1
            token = _Token(_PUNCTUATION[ch], ch, i)
        elif ch == "." and previous_is_value():
            raise CriteriaError("attribute access is not allowed", i)
        else:
            raise CriteriaError(f"unexpected character {ch!r}", i, _HINTS.get(ch))
        tokens.append(token)
        i = end
    tokens.append(_Token(_Kind.EOF, "", n))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser; nesting is capped at ``MAX_DEPTH`` to bound recursion."""

    def __init__(self, tokens: list[_Token], attributes: Mapping[str, AttributeType]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0
        self._attributes = attributes

    def parse(self) -> Node:
        node = self._parse_or()
        token = self._peek()
        if token.kind is _Kind.RPAREN:
            raise CriteriaError("unmatched ')'", token.position)
        if token.kind is not _Kind.EOF:
            raise CriteriaError(
                f"unexpected {_describe_token(token)}",
                token.position,
                "expected an operator, 'and', 'or' or the end of the criteria",
            )
        return node

    # -- helpers ---------------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> _Token:
        return self._tokens[min(self._index + offset, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._peek()
        if token.kind is not _Kind.EOF:
            self._index += 1
        return token

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise CriteriaError(
                f"expression is nested too deeply (maximum depth is {MAX_DEPTH})", token.position
            )

    def _leave(self) -> None:
        self._depth -= 1

    def _peek_comparison(self) -> tuple[str, int] | None:
        """Return the comparison operator at the cursor and its width in tokens, if any."""
        token = self._peek()
        if token.kind is _Kind.OP:
            return token.text, 1
        if token.kind is _Kind.IN:
            return "in", 1
        if token.kind is _Kind.NOT and self._peek(1).kind is _Kind.IN:
            return "not in", 2
        return None

    # -- grammar ---------------------------------------------------------------------------

    def _parse_or(self) -> Node:
        operands = [self._parse_and()]
        while self._peek().kind is _Kind.OR:
            self._advance()
            operands.append(self._parse_and())
        if len(operands) == 1:
            return operands[0]
        return Or(tuple(operands), operands[0].position)

    def _parse_and(self) -> Node:
        operands = [self._parse_not()]
        while self._peek().kind is _Kind.AND:
            self._advance()
            operands.append(self._parse_not())
        if len(operands) == 1:
            return operands[0]
        return And(tuple(operands), operands[0].position)

    def _parse_not(self) -> Node:
        token = self._peek()
        if token.kind is not _Kind.NOT:
            return self._parse_comparison()
        self._advance()
        self._enter(token)
        operand = self._parse_not()
        self._leave()
        return Not(operand, token.position)

    def _parse_comparison(self) -> Node:
        left = self._parse_operand()
        found = self._peek_comparison()
        if found is None:
            token = self._peek()
            if token.kind is _Kind.NOT:
                raise CriteriaError("'not' here must be followed by 'in'", token.position)
            return left
        op, width = found
        position = self._peek().position
        for _ in range(width):
            self._advance()
        right = self._parse_operand()
        if self._peek_comparison() is not None:
            raise CriteriaError(
                "chained comparisons are not allowed",
                self._peek().position,
                "combine comparisons with 'and', e.g. 1 < x and x < 3",
            )
        return Compare(op, left, right, position)

    def _parse_operand(self) -> Node:
        token = self._advance()
        kind = token.kind
        if kind is _Kind.NUMBER:
            return Literal(_literal_value(token), AttributeType.NUMBER, token.position)
        if kind is _Kind.STRING:
            return Literal(_literal_value(token), AttributeType.STRING, token.position)
        if kind is _Kind.TRUE or kind is _Kind.FALSE:
            return Literal(kind is _Kind.TRUE, AttributeType.BOOLEAN, token.position)
        if kind is _Kind.NAME:
            return self._resolve_name(token)
        if kind is _Kind.LPAREN:
            return self._parse_parenthesized(token)
        if kind is _Kind.LBRACKET:
            return self._parse_list(token)
        if kind is _Kind.EOF:
            raise CriteriaError(
                "unexpected end of input", token.position, "expected a value or a condition"
            )
        raise CriteriaError(
            f"unexpected {_describe_token(token)}",
            token.position,
            "expected a value (number, string, name, list) or '('",
        )

    def _resolve_name(self, token: _Token) -> Name:
        attribute_type = self._attributes.get(token.text)
        if attribute_type is None:
            allowed = ", ".join(sorted(self._attributes))
            raise CriteriaError(
                f"unknown name '{_shorten(token.text)}'",
                token.position,
                f"allowed names: {allowed}" if allowed else "no names are allowed",
            )
        return Name(token.text, attribute_type, token.position)

    def _parse_parenthesized(self, opening: _Token) -> Node:
        self._enter(opening)
        if self._peek().kind is _Kind.RPAREN:
            raise CriteriaError("empty parentheses", opening.position)
        inner = self._parse_or()
        closing = self._advance()
        if closing.kind is _Kind.EOF:
            raise CriteriaError(
                "unexpected end of input",
                closing.position,
                f"'(' at position {opening.position} is never closed",
            )
        if closing.kind is not _Kind.RPAREN:
            raise CriteriaError(
                f"unexpected {_describe_token(closing)}",
                closing.position,
                f"expected ')' to close '(' at position {opening.position}",
            )
        self._leave()
        return inner

    def _parse_list(self, opening: _Token) -> ListLiteral:
        self._enter(opening)
        if self._peek().kind is _Kind.RBRACKET:
            raise CriteriaError("empty list literals are not allowed", opening.position)
        items: list[Literal] = []
        while True:
            token = self._advance()
            if token.kind is _Kind.NUMBER:
                items.append(Literal(_literal_value(token), AttributeType.NUMBER, token.position))
            elif token.kind is _Kind.STRING:
                items.append(Literal(_literal_value(token), AttributeType.STRING, token.position))
            elif token.kind is _Kind.EOF:
                self._unclosed_list(token, opening)
            else:
                raise CriteriaError(
                    f"list elements must be string or number literals, found "
                    f"{_describe_token(token)}",
                    token.position,
                )
            if len(items) > MAX_LIST_ITEMS:
                raise CriteriaError(
                    f"list literal is too long (maximum is {MAX_LIST_ITEMS} elements)",
                    opening.position,
                )
            separator = self._advance()
            if separator.kind is _Kind.RBRACKET:
                break
            if separator.kind is _Kind.COMMA:
                if self._peek().kind is _Kind.RBRACKET:  # trailing comma
                    self._advance()
                    break
                continue
            if separator.kind is _Kind.EOF:
                self._unclosed_list(separator, opening)
            raise CriteriaError(
                f"unexpected {_describe_token(separator)} in list literal",
                separator.position,
                "expected ',' or ']'",
            )
        self._leave()
        return ListLiteral(tuple(items), opening.position)

    @staticmethod
    def _unclosed_list(token: _Token, opening: _Token) -> None:
        raise CriteriaError(
            "unexpected end of input",
            token.position,
            f"'[' at position {opening.position} is never closed",
        )


def _literal_value(token: _Token) -> int | float | str:
    value = token.value
    assert isinstance(value, int | float | str)  # set by the tokenizer
    return value


# --------------------------------------------------------------------------------------------
# Type checker
# --------------------------------------------------------------------------------------------

_ELEMENT_TYPES: Final[dict[AttributeType, AttributeType]] = {
    AttributeType.STRING_LIST: AttributeType.STRING,
    AttributeType.NUMBER_LIST: AttributeType.NUMBER,
    AttributeType.STRING: AttributeType.STRING,  # substring test
}
_LIST_TYPES: Final = frozenset({AttributeType.STRING_LIST, AttributeType.NUMBER_LIST})


def _a(attribute_type: AttributeType) -> str:
    return f"a {attribute_type.value}"


def _describe_node(node: Node) -> str:
    if isinstance(node, Name):
        return f"name '{node.name}'"
    if isinstance(node, Literal):
        return f"literal {_shorten(repr(node.value))}"
    if isinstance(node, ListLiteral):
        return "the list literal"
    return "the expression"


def _check(node: Node) -> AttributeType:
    """Return the static type of ``node``; raise ``CriteriaError`` on a type error."""
    if isinstance(node, Literal | Name):
        return node.type
    if isinstance(node, ListLiteral):
        first = node.items[0].type
        for item in node.items[1:]:
            if item.type is not first:
                raise CriteriaError(
                    f"list literal mixes {first.value}s and {item.type.value}s", item.position
                )
        if first is AttributeType.STRING:
            return AttributeType.STRING_LIST
        return AttributeType.NUMBER_LIST
    if isinstance(node, Not):
        _require_boolean(node.operand, "'not'")
        return AttributeType.BOOLEAN
    if isinstance(node, And | Or):
        keyword = "'and'" if isinstance(node, And) else "'or'"
        for operand in node.operands:
            _require_boolean(operand, keyword)
        return AttributeType.BOOLEAN
    _check_comparison(node)
    return AttributeType.BOOLEAN


def _check_comparison(node: Compare) -> None:
    op = node.op
    left = _check(node.left)
    right = _check(node.right)
    if op in _ORDERING_OPS:
        if left is not AttributeType.NUMBER or right is not AttributeType.NUMBER:
            raise CriteriaError(
                f"'{op}' needs two numbers, but got {_a(left)} and {_a(right)}", node.position
            )
    elif op in _EQUALITY_OPS:
        if left is not right:
            raise CriteriaError(
                f"'{op}' needs two values of the same type, but got {_a(left)} and {_a(right)}",
                node.position,
            )
        if left in _LIST_TYPES:
            raise CriteriaError(
                f"'{op}' cannot compare lists", node.position, "use 'in' to test membership"
            )
    else:
        element = _ELEMENT_TYPES.get(right)
        if element is None:
            raise CriteriaError(
                f"'{op}' needs a list or a string on the right, but got {_a(right)}",
                node.position,
            )
        if left is not element:
            raise CriteriaError(
                f"'{op}' with {_a(right)} on the right needs {_a(element)} on the left, "
                f"but got {_a(left)}",
                node.position,
            )


def _require_boolean(node: Node, context: str) -> None:
    actual = _check(node)
    if actual is not AttributeType.BOOLEAN:
        raise CriteriaError(
            f"{context} needs a condition, but {_describe_node(node)} is {_a(actual)}",
            node.position,
            "compare it with an operator such as '==', '>=' or 'in'",
        )


# --------------------------------------------------------------------------------------------
# Evaluator
# --------------------------------------------------------------------------------------------


class _Invalid:
    """Marker for a missing attribute or a value of the wrong runtime type."""


_INVALID: Final = _Invalid()

_Value = bool | int | float | str | tuple[Any, ...] | _Invalid


def _as_number(raw: object) -> int | float | _Invalid:
    # Normalise to exact int/float so that later comparisons cannot run foreign code.
    if isinstance(raw, bool):
        return _INVALID
    if isinstance(raw, int):
        return int.__int__(raw)
    if isinstance(raw, float):
        return float.__float__(raw)
    if isinstance(raw, numbers.Integral):
        return int(raw)
    if isinstance(raw, numbers.Real):
        return float(raw)
    return _INVALID


def _as_string(raw: object) -> str | _Invalid:
    return str.__str__(raw) if isinstance(raw, str) else _INVALID


def _normalize(raw: object, attribute_type: AttributeType) -> _Value:
    if attribute_type is AttributeType.NUMBER:
        return _as_number(raw)
    if attribute_type is AttributeType.STRING:
        return _as_string(raw)
    if attribute_type is AttributeType.BOOLEAN:
        return raw if isinstance(raw, bool) else _INVALID
    if not isinstance(raw, list | tuple | set | frozenset):
        return _INVALID
    convert = _as_string if attribute_type is AttributeType.STRING_LIST else _as_number
    return tuple(value for value in map(convert, raw) if value is not _INVALID)


def _lookup(node: Name, client: Mapping[str, Any]) -> _Value:
    try:
        if not isinstance(client, Mapping):
            return _INVALID
        raw = client.get(node.name, _INVALID)
        if raw is _INVALID:
            return _INVALID
        return _normalize(raw, node.type)
    except Exception:  # hostile mapping/value objects must not break matching
        return _INVALID


def _value(node: Node, client: Mapping[str, Any]) -> _Value:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return _lookup(node, client)
    if isinstance(node, ListLiteral):
        return tuple(item.value for item in node.items)
    return _truth(node, client)


def _truth(node: Node, client: Mapping[str, Any]) -> bool:
    if isinstance(node, Compare):
        return _compare(node, client)
    if isinstance(node, And):
        return all(_truth(operand, client) for operand in node.operands)
    if isinstance(node, Or):
        return any(_truth(operand, client) for operand in node.operands)
    if isinstance(node, Not):
        return not _truth(node.operand, client)
    return _value(node, client) is True


def _compare(node: Compare, client: Mapping[str, Any]) -> bool:
    left = _value(node.left, client)
    if left is _INVALID:
        return False
    right = _value(node.right, client)
    if right is _INVALID:
        return False
    # The type checker and _normalize guarantee plain int/float/str/bool/tuple operands here.
    op = node.op
    result: Any
    if op == "==":
        result = left == right
    elif op == "!=":
        result = left != right
    elif op == "<":
        result = left < right  # type: ignore[operator]
    elif op == "<=":
        result = left <= right  # type: ignore[operator]
    elif op == ">":
        result = left > right  # type: ignore[operator]
    elif op == ">=":
        result = left >= right  # type: ignore[operator]
    elif op == "in":
        result = left in right  # type: ignore[operator]
    else:
        result = left not in right  # type: ignore[operator]
    return bool(result)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criteria:
    """A compiled, type-checked selection criteria.

    ``expression`` is ``None`` for empty criteria, which match every client.
    """

    source: str
    expression: Node | None

    def matches(self, client: Mapping[str, Any]) -> bool:
        """Whether ``client`` (a mapping of attribute name to value) satisfies the criteria.

        Never raises: comparisons on missing or wrongly-typed attributes are false, and a
        ``client`` that is not a mapping is treated as having no attributes.
        """
        if self.expression is None:
            return True
        return _truth(self.expression, client)

    def names(self) -> frozenset[str]:
        """The attribute names referenced by the criteria."""
        found: set[str] = set()
        for node in _walk(self.expression):
            if isinstance(node, Name):
                found.add(node.name)
        return frozenset(found)


def _walk(root: Node | None) -> Iterator[Node]:
    stack: list[Node] = [] if root is None else [root]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Compare):
            stack.extend((node.right, node.left))
        elif isinstance(node, Not):
            stack.append(node.operand)
        elif isinstance(node, And | Or):
            stack.extend(reversed(node.operands))
        elif isinstance(node, ListLiteral):
            stack.extend(reversed(node.items))


def compile_criteria(
    text: str, attributes: Mapping[str, AttributeType] = CLIENT_ATTRIBUTES
) -> Criteria:
    """Parse and type-check a selection criteria string.

    ``attributes`` maps the names the criteria may use to their types. Raises
    ``CriteriaError`` if the text is not a string, is too long, or is not a valid,
    well-typed condition.
    """
    if not isinstance(text, str):
        raise CriteriaError(f"criteria must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise CriteriaError(
            f"criteria is too long ({len(text)} characters; maximum is {MAX_LENGTH})"
        )
    if not text.strip():
        return Criteria(text, None)
    expression = _Parser(_tokenize(text), attributes).parse()
    _require_boolean(expression, "the criteria")
    return Criteria(text, expression)
