"""Coarse value categories used to reject comparisons that cannot be meaningful.

Both back ends (SQL and in-memory) classify each side of a comparison into one of these
kinds and refuse to mix numbers with strings or booleans, so a mistyped query fails the
same way whether it runs against the registry or against raw files.
"""

from __future__ import annotations

import numbers
from typing import Any
from typing import Literal as TypingLiteral
from typing import TypeAlias

from .formatter import format_literal
from .nodes import Identifier, Operand

Kind: TypeAlias = TypingLiteral["integer", "float", "string", "boolean"]

_ARTICLE: dict[str, str] = {
    "integer": "an integer",
    "float": "a float",
    "string": "a string",
    "boolean": "a boolean",
}


def value_kind(value: Any) -> Kind | None:
    """Kind of a Python value, or ``None`` for types the query language has no literal for."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def _family(kind: Kind) -> str:
    return "number" if kind in ("integer", "float") else kind


def compatible(a: Kind | None, b: Kind | None) -> bool:
    """True unless both kinds are known and belong to different families."""
    return a is None or b is None or _family(a) == _family(b)


def describe(kind: Kind) -> str:
    """Kind with its article, for error messages."""
    return _ARTICLE[kind]


def describe_operand(operand: Operand, kind: Kind) -> str:
    """``key 'band' (a string)`` or ``an integer 3``, for type error messages."""
    if isinstance(operand, Identifier):
        return f"key {operand.name!r} ({describe(kind)})"
    return f"{describe(kind)} {format_literal(operand)}"
