"""Reading a criteria string into its tree: Python's tokenizer and parser, behind an allow-list.

Nothing is evaluated by Python: ``tokenize`` splits the text, a grammar check refuses anything
outside the language with a message that says what and where, and ``ast.parse`` (on the text
with its keywords in canonical case) gives the structure that becomes our own nodes.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agata_contracts.criteria_nodes import (
    MAX_DEPTH,
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


def shorten(text: str, limit: int = 30) -> str:
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
                raise CriteriaError(f"invalid number literal {shorten(word)!r}", position)
            if math.isinf(float(word)):
                raise CriteriaError(f"number literal {shorten(word)!r} is out of range",
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
        return f"string {shorten(_string(token.text, token.position))!r}"
    if token.kind in ("name", "keyword", "number"):
        return f"{token.kind} {shorten(token.text)!r}"
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


def parse_criteria(text: str, attributes: Mapping[str, AttributeType]) -> Node:
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


