"""The selection-criteria language's parts: limits, attribute types, errors and the tree.

Shared by the reader (``criteria_reader``) and the checker and evaluator (``criteria``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

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

