"""Canonical text form of a syntax tree.

The output uses upper-case keywords, single-quoted strings and the fewest parentheses
that preserve the tree, and it parses back to an equal tree, so it is safe to store in
provenance records or to show as the "query that actually ran".
"""

from __future__ import annotations

from .nodes import And, Comparison, Identifier, In, InItem, Literal, MatchAll, Node, Not, Or, Range
from .parser import parse

# Binding strength of each logical node; operands that bind more loosely get parentheses.
_OR, _AND, _NOT, _ATOM = 1, 2, 3, 4


def _precedence(node: Node) -> int:
    if isinstance(node, Or):
        return _OR
    if isinstance(node, And):
        return _AND
    if isinstance(node, Not):
        return _NOT
    return _ATOM


def format_literal(literal: Literal) -> str:
    """Source text of one literal."""
    value = literal.value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    # repr() of a float is the shortest text that reads back as the same float.
    return repr(value)


def _format_item(item: InItem) -> str:
    if isinstance(item, Range):
        text = f"{item.start}..{item.stop}"
        return text if item.stride == 1 else f"{text}:{item.stride}"
    return format_literal(item)


def _format_operand(operand: Identifier | Literal) -> str:
    return operand.name if isinstance(operand, Identifier) else format_literal(operand)


def _wrap(node: Node, minimum: int) -> str:
    text = format_query(node)
    return f"({text})" if _precedence(node) < minimum else text


def format_query(node: Node) -> str:
    """Canonical text of ``node``; ``parse(format_query(node)) == node`` for parsed trees."""
    match node:
        case MatchAll():
            return ""
        case Or(operands=operands):
            return " OR ".join(_wrap(operand, _AND) for operand in operands)
        case And(operands=operands):
            return " AND ".join(_wrap(operand, _NOT) for operand in operands)
        case Not(operand=operand):
            return "NOT " + _wrap(operand, _NOT)
        case Comparison(op=op, left=left, right=right):
            return f"{_format_operand(left)} {op} {_format_operand(right)}"
        case In(operand=operand, items=items, negated=negated):
            keyword = "NOT IN" if negated else "IN"
            listed = ", ".join(_format_item(item) for item in items)
            return f"{_format_operand(operand)} {keyword} ({listed})"
        case Identifier() | Literal():
            return _format_operand(node)
    raise TypeError(f"cannot format {type(node).__name__} as a query")


def normalize(text: str) -> str:
    """Canonical form of query ``text`` (parse, then format)."""
    return format_query(parse(text))
