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

``criteria_reader`` reads the text into the tree of ``criteria_nodes``; this module type-checks
and evaluates it, and is the one the rest of the project imports.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agata_contracts.criteria_nodes import (
    CLIENT_ATTRIBUTES,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST_ITEMS,
    MAX_TOKENS,
    And,
    AttributeType,
    Compare,
    CriteriaError,
    ListLiteral,
    Literal,
    Name,
    Node,
    Not,
    Or,
)
from agata_contracts.criteria_reader import parse_criteria, shorten

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

_ORDERING_OPS: Final = frozenset({"<", "<=", ">", ">="})
_EQUALITY_OPS: Final = frozenset({"==", "!="})


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
        return f"literal {shorten(repr(node.value))}"
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
    expression = parse_criteria(text, attributes)
    _require_boolean(expression, "the criteria")
    return Criteria(text, expression)
