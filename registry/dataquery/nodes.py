"""Immutable syntax tree of a DATA_QUERY expression.

Trees compare by value, so two queries that mean the same thing structurally (for
example ``a=1 and b=2`` and ``(a = 1) AND b = 2``) parse to equal trees. ``And`` and
``Or`` are n-ary and flatten nested nodes of the same kind on construction, because
both operators are associative; that keeps trees shallow for long ``OR`` chains and
gives every query one canonical form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal as TypingLiteral
from typing import TypeAlias

ComparisonOperator: TypeAlias = TypingLiteral["=", "!=", "<", "<=", ">", ">="]
COMPARISON_OPERATORS: frozenset[str] = frozenset({"=", "!=", "<", "<=", ">", ">="})

LiteralValue: TypeAlias = bool | int | float | str


class Node:
    """Base class of every syntax-tree node."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MatchAll(Node):
    """An empty query: no constraint, every data ID matches."""


@dataclass(frozen=True, slots=True)
class Identifier(Node):
    """A data ID key such as ``band`` or a dotted record field such as ``exposure.day_obs``."""

    name: str


@dataclass(frozen=True, slots=True, eq=False)
class Literal(Node):
    """A constant: integer, float, string or boolean.

    Equality includes the Python type, so ``1``, ``1.0`` and ``TRUE`` stay distinct
    even though they compare equal as Python values.
    """

    value: LiteralValue

    def __post_init__(self) -> None:
        if not isinstance(self.value, (bool, int, float, str)):
            raise TypeError(f"unsupported literal type {type(self.value).__name__}")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"literal {self.value!r} is not a finite number")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True, slots=True)
class Range(Node):
    """Inclusive integer range ``start..stop:stride``, only valid inside an ``IN`` list."""

    start: int
    stop: int
    stride: int = 1

    def __post_init__(self) -> None:
        for name in ("start", "stop", "stride"):
            if type(getattr(self, name)) is not int:
                raise TypeError(f"Range.{name} must be an int")
        if self.stride < 1:
            raise ValueError(f"range stride must be positive, got {self.stride}")
        if self.stop < self.start:
            raise ValueError(f"empty range {self.start}..{self.stop}")

    def __contains__(self, value: int) -> bool:
        return self.start <= value <= self.stop and (value - self.start) % self.stride == 0


Operand: TypeAlias = Identifier | Literal
InItem: TypeAlias = Literal | Range


@dataclass(frozen=True, slots=True)
class Comparison(Node):
    """``left op right``; ``<>`` is stored as ``!=``."""

    op: ComparisonOperator
    left: Operand
    right: Operand

    def __post_init__(self) -> None:
        if self.op not in COMPARISON_OPERATORS:
            raise ValueError(f"unknown comparison operator {self.op!r}")


@dataclass(frozen=True, slots=True)
class In(Node):
    """``operand IN (items)`` or, with ``negated``, ``operand NOT IN (items)``."""

    operand: Operand
    items: tuple[InItem, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        if not self.items:
            raise ValueError("an IN list needs at least one item")


@dataclass(frozen=True, slots=True)
class Not(Node):
    """Logical negation."""

    operand: Node


def _flatten(kind: type[Node], operands: tuple[Node, ...]) -> tuple[Node, ...]:
    flat: list[Node] = []
    for operand in operands:
        if isinstance(operand, kind):
            flat.extend(operand.operands)  # type: ignore[attr-defined]
        else:
            flat.append(operand)
    if len(flat) < 2:
        raise ValueError(f"{kind.__name__} needs at least two operands")
    return tuple(flat)


@dataclass(frozen=True, slots=True)
class And(Node):
    """Conjunction of two or more conditions."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", _flatten(And, tuple(self.operands)))


@dataclass(frozen=True, slots=True)
class Or(Node):
    """Disjunction of two or more conditions."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", _flatten(Or, tuple(self.operands)))


def identifiers(node: Node) -> set[str]:
    """Names of all keys a query uses, e.g. to check them before touching the database."""
    found: set[str] = set()
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        match current:
            case Identifier(name=name):
                found.add(name)
            case Comparison(left=left, right=right):
                stack.extend((left, right))
            case In(operand=operand):
                stack.append(operand)
            case Not(operand=operand):
                stack.append(operand)
            case And(operands=operands) | Or(operands=operands):
                stack.extend(operands)
    return found
