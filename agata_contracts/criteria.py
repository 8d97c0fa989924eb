"""Client selection criteria: AGATA's condition language over a client's stats.

Operators attach a *selection criteria* string to each task to say which devices may join it::

    data_qnt >= 30 and 'camera' in sensors

AGATA wrote these as Python expressions; so does this module, read with Python's own
``tokenize`` and ``ast`` (nothing is ever evaluated by Python: no ``eval``, ``exec`` or
``compile``). An allow-list keeps the language small: comparisons (``== != < <= > >=``,
``in``, ``not in``; no chaining), ``and``/``or``/``not``, parentheses, string, number and boolean
literals (``true``/``false`` as well as ``True``/``False``; keywords in any case), list literals of
strings or numbers, and the client's attribute names (``CLIENT_ATTRIBUTES``). Everything else
(calls, attribute access, subscripts, arithmetic, other names) is refused with an error that says
what and where. Length, token count, bracket depth and list size are bounded; the tree is then
type-checked.

Evaluation never raises: a comparison that reads a missing attribute or a value of the wrong
runtime type is false (so ``not data_qnt > 5`` is true for a client without ``data_qnt``), and
wrongly-typed elements of a list attribute are ignored. Empty criteria match every client.
"""

from __future__ import annotations

import ast
import io
import math
import numbers
import operator
import re
import tokenize
from collections.abc import Callable, Iterator, Mapping
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
# Reading the text: Python's tokenizer and parser, behind an allow-list
# --------------------------------------------------------------------------------------------

_KEYWORDS: Final = {"and": "and", "or": "or", "not": "not", "in": "in", "true": "True",
                    "false": "False"}
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_AST_OPS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in",
}
_HINTS: Final = {
    "*": "arithmetic is not allowed", "+": "arithmetic is not allowed",
    "-": "arithmetic is not allowed", "/": "arithmetic is not allowed",
    "%": "arithmetic is not allowed", "=": "use '==' to compare", "!": "use 'not'",
    "&": "use 'and'", "|": "use 'or'",
}
_NUMBER: Final = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SKIPPED: Final = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                             tokenize.ENDMARKER, tokenize.ENCODING})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "keyword", "number", "string", "op"
    text: str  # as written (keywords in lower case)
    position: int
    end: int


def _shorten(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unexpected(word: str, position: int) -> CriteriaError:
    return CriteriaError(f"unexpected character {word[0]!r}", position, _HINTS.get(word[0]))


def _string(text: str, position: int) -> str:
    """Check a string token (quotes, escapes) and return its value."""
    prefix = text[: len(text) - len(text.lstrip("rRbBuUfF"))]
    if prefix:
        raise CriteriaError(f"unknown name {prefix!r}", position)
    if text[:3] in ("'''", '"""'):
        raise CriteriaError("triple-quoted strings are not allowed", position)
    body, value, index = text[1:-1], [], 0
    while index < len(body):
        character = body[index]
        if character == "\\":
            escaped = body[index + 1]
            if escaped not in "'\"\\":
                raise CriteriaError(f"invalid escape sequence '\\{escaped}'",
                                    position + 1 + index, "only \\', \\\" and \\\\ are allowed")
            value.append(escaped)
            index += 2
            continue
        value.append(character)
        index += 1
    return "".join(value)


def _tokens(text: str) -> list[_Token]:
    """The text's tokens, each allowed by the language (characters, numbers, strings)."""
    flat = text.translate(str.maketrans("\t\n\r\f\v", "     "))
    raw: list[tokenize.TokenInfo] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(flat).readline):
            if token.type not in _SKIPPED:
                raw.append(token)
    except tokenize.TokenError:
        pass  # an unclosed bracket: the grammar check says which
    found: list[_Token] = []
    for index, token in enumerate(raw):
        position, end, word = token.start[1], token.end[1], token.string
        following = raw[index + 1] if index + 1 < len(raw) else None
        if len(found) >= MAX_TOKENS:
            raise CriteriaError(f"too many tokens (maximum is {MAX_TOKENS})", position)
        if token.type == tokenize.ERRORTOKEN:
            if word.isspace():
                continue
            if word in ("'", '"'):
                raise CriteriaError("unterminated string", position)
            raise _unexpected(word, position)
        if token.type == tokenize.COMMENT:
            raise _unexpected("#", position)
        if token.type == tokenize.NAME:
            strange = next((c for c in word if not c.isascii()), None)
            if strange is not None:
                raise _unexpected(strange, position + word.index(strange))
            kind = "keyword" if word.lower() in _KEYWORDS else "name"
            found.append(_Token(kind, word.lower() if kind == "keyword" else word, position,
                                end))
        elif token.type == tokenize.NUMBER:
            if not _NUMBER.fullmatch(word) or (
                    following is not None and following.start[1] == end
                    and following.type in (tokenize.NAME, tokenize.NUMBER)):
                raise CriteriaError(f"invalid number literal {_shorten(word)!r}", position)
            if math.isinf(float(word)):
                raise CriteriaError(f"number literal {_shorten(word)!r} is out of range",
                                    position)
            found.append(_Token("number", word, position, end))
        elif token.type == tokenize.STRING:
            _string(word, position)
            found.append(_Token("string", word, position, end))
        elif word in ("(", "[", ".") and found and _ends_operand(found[-1]):
            what = {"(": "function calls", "[": "subscripts", ".": "attribute access"}[word]
            raise CriteriaError(f"{what} are not allowed" if word != "." else
                                "attribute access is not allowed", position)
        elif word == ".":
            raise CriteriaError("attribute access is not allowed", position)
        elif word == "-":
            negative_number = (following is not None and following.type == tokenize.NUMBER
                               and following.start[1] == end)
            if (found and _ends_operand(found[-1])) or not negative_number:
                raise _unexpected("-", position)
            found.append(_Token("op", word, position, end))
        elif word in _COMPARISONS or word in ("(", ")", "[", "]", ","):
            found.append(_Token("op", word, position, end))
        else:
            raise _unexpected(word, position)
    return found


def _ends_operand(token: _Token) -> bool:
    return token.kind in ("name", "number", "string") or token.text in (
        ")", "]", "true", "false")


def _describe(token: _Token) -> str:
    if token.kind == "string":
        return f"string {_shorten(_string(token.text, token.position))!r}"
    if token.kind in ("name", "keyword", "number"):
        return f"{token.kind} {_shorten(token.text)!r}"
    return repr(token.text)


def _starts_operand(token: _Token) -> bool:
    return token.kind in ("name", "number", "string") or token.text in (
        "true", "false", "-")


def _check_grammar(tokens: list[_Token], text: str, attributes: Mapping[str, Any]) -> None:
    """Walk the tokens once, left to right, and stop at the first thing out of place.

    Python's parser would accept more (other keywords, tuples, chained operators); this says,
    in the language's own words, what is wrong and where. Names are checked here too, so an
    unknown name is reported where it appears.
    """
    stack: list[tuple[str, int]] = []
    expect_operand = True
    nots = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        in_list = bool(stack) and stack[-1][0] == "["
        closing = "expected ',' or ']'" if in_list else ("expected ')'" if stack else None)
        if expect_operand:
            if token.text == "not" and token.kind == "keyword" and not in_list:
                nots += 1
                if nots + len(stack) > MAX_DEPTH:
                    raise CriteriaError(f"nested too deeply (maximum depth is {MAX_DEPTH})",
                                        token.position)
            elif token.text in ("(", "["):
                if in_list:
                    raise CriteriaError("list elements must be string or number literals",
                                        token.position)
                if len(stack) + nots + 1 > MAX_DEPTH:
                    raise CriteriaError(f"nested too deeply (maximum depth is {MAX_DEPTH})",
                                        token.position)
                if following is not None and following.text == {"(": ")", "[": "]"}[
                        token.text]:
                    raise CriteriaError("empty parentheses" if token.text == "(" else
                                        "empty list literals are not allowed", token.position)
                stack.append((token.text, token.position))
            elif token.text == "]" and in_list and tokens[index - 1].text == ",":
                expect_operand = False
                continue
            elif _starts_operand(token):
                if in_list and not (token.kind in ("number", "string") or token.text == "-"):
                    raise CriteriaError("list elements must be string or number literals",
                                        token.position)
                if token.text == "-":
                    index += 1
                if token.kind == "name" and token.text not in attributes:
                    raise _unknown_name(token, attributes)
                expect_operand, nots = False, 0
            else:
                raise CriteriaError(f"unexpected {_describe(token)}", token.position)
        elif token.text in _COMPARISONS or token.text in ("in", "and", "or"):
            if in_list:
                raise CriteriaError(f"unexpected {_describe(token)}", token.position, closing)
            expect_operand = True
        elif token.text == "not" and token.kind == "keyword":
            if following is None or following.text != "in":
                raise CriteriaError("'not' here must be followed by 'in'", token.position)
            index += 1
            expect_operand = True
        elif token.text in (")", "]"):
            opener = {")": "(", "]": "["}[token.text]
            if not stack:
                raise CriteriaError(f"unmatched {token.text!r}", token.position)
            if stack[-1][0] != opener:
                raise CriteriaError(f"unexpected {token.text!r}", token.position, closing)
            stack.pop()
        elif token.text == "," and in_list:
            expect_operand = True
        else:
            raise CriteriaError(f"unexpected {_describe(token)}", token.position, closing)
        index += 1
    if expect_operand or stack:
        hint = f"{stack[-1][0]!r} at position {stack[-1][1]} was never closed" if stack else None
        raise CriteriaError("unexpected end of input", len(text), hint)


def _unknown_name(token: _Token, attributes: Mapping[str, Any]) -> CriteriaError:
    allowed = (f"allowed names: {', '.join(sorted(attributes))}" if attributes
               else "no names are allowed")
    return CriteriaError(f"unknown name {token.text!r}", token.position, allowed)


class _Builder:
    """Turns Python's tree of the checked text into the language's nodes."""

    def __init__(self, tokens: list[_Token], attributes: Mapping[str, AttributeType]) -> None:
        self.tokens = tokens
        self.attributes = attributes

    def position(self, node: ast.AST) -> int:
        return int(getattr(node, "col_offset", 1)) - 1  # the text was wrapped in "(...)"

    def operator_after(self, node: ast.AST) -> int:
        end = int(getattr(node, "end_col_offset", 1)) - 1
        return next((t.position for t in self.tokens if t.position >= end
                     and (t.text in _COMPARISONS or t.text in ("in", "not"))), end)

    def build(self, node: ast.expr) -> Node:
        if isinstance(node, ast.BoolOp):
            operands = tuple(self.build(value) for value in node.values)
            kind = And if isinstance(node.op, ast.And) else Or
            return kind(operands, operands[0].position)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.build(node.operand), self.position(node))
        if isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                raise CriteriaError("chained comparisons are not allowed",
                                    self.operator_after(node.comparators[0]),
                                    "join two comparisons with 'and'")
            return Compare(_AST_OPS[type(node.ops[0])], self.build(node.left),
                           self.build(node.comparators[0]), self.operator_after(node.left))
        if isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return Literal(node.id == "True", AttributeType.BOOLEAN, self.position(node))
            return Name(node.id, self.attributes[node.id], self.position(node))
        if isinstance(node, ast.List):
            items = tuple(self.literal(element) for element in node.elts)
            if len(items) > MAX_LIST_ITEMS:
                raise CriteriaError(
                    f"list literal is too long (maximum is {MAX_LIST_ITEMS} elements)",
                    self.position(node))
            return ListLiteral(items, self.position(node))
        return self.literal(node)

    def literal(self, node: ast.expr) -> Literal:
        sign = 1
        position = self.position(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, bool):
            return Literal(value, AttributeType.BOOLEAN, position)
        if isinstance(value, int | float):
            return Literal(sign * value, AttributeType.NUMBER, position)
        if isinstance(value, str) and sign == 1:
            return Literal(value, AttributeType.STRING, position)
        raise CriteriaError("unexpected expression", position)


def _parse(text: str, attributes: Mapping[str, AttributeType]) -> Node:
    tokens = _tokens(text)
    _check_grammar(tokens, text, attributes)
    canonical = list(text.translate(str.maketrans("\t\n\r\f\v", "     ")))
    for token in tokens:
        if token.kind == "keyword":
            canonical[token.position:token.end] = list(_KEYWORDS[token.text].ljust(
                token.end - token.position))
    try:
        tree = ast.parse("(" + "".join(canonical) + ")", mode="eval")
    except SyntaxError as exc:  # the grammar check lets nothing through that Python refuses
        raise CriteriaError(f"cannot parse: {exc.msg}", max(0, (exc.offset or 1) - 2)) from None
    return _Builder(tokens, attributes).build(tree.body)


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
        raw: object = client.get(node.name, _INVALID)
        return _INVALID if raw is _INVALID else _normalize(raw, node.type)
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


_OPERATIONS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "in": lambda left, right: left in right,
    "not in": lambda left, right: left not in right,
}


def _compare(node: Compare, client: Mapping[str, Any]) -> bool:
    left = _value(node.left, client)
    if left is _INVALID:
        return False
    right = _value(node.right, client)
    if right is _INVALID:
        return False
    # The type checker and _normalize guarantee plain int/float/str/bool/tuple operands here.
    result = _OPERATIONS[node.op](left, right)
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
    expression = _parse(text, attributes)
    _require_boolean(expression, "the criteria")
    return Criteria(text, expression)
