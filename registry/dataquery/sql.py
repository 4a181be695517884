"""Compile a query tree into a SQLAlchemy Core boolean expression.

Every constant in the query becomes a bound parameter, so user text never reaches the
SQL string; keys reach SQL only as the columns the resolver returns for them, never as
text. Column types, where SQLAlchemy knows them, are checked against the constants
before any SQL is issued.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.sql.base import ColumnCollection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from .errors import DataQueryTypeError, UnknownKeyError
from .kinds import Kind, compatible, describe_operand, value_kind
from .nodes import And, Comparison, Identifier, In, MatchAll, Node, Not, Operand, Or, Range

Resolver: TypeAlias = Callable[[str], ColumnElement[Any]]

_OPERATORS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def resolver_from_columns(mapping: Mapping[str, ColumnElement[Any]]) -> Resolver:
    """Resolver looking keys up in ``mapping``; unknown keys list the known ones."""
    columns = dict(mapping)

    def resolve(name: str) -> ColumnElement[Any]:
        try:
            return columns[name]
        except KeyError:
            raise UnknownKeyError(name, columns) from None

    return resolve


def sql_kind(type_: TypeEngine[Any]) -> Kind | None:
    """Kind of values a column of SQLAlchemy type ``type_`` holds; ``None`` if unclear."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.Boolean):
        return "boolean"
    if isinstance(type_, sa.Integer):
        return "integer"
    # Float is not a Numeric subclass in every SQLAlchemy release, so name both.
    if isinstance(type_, (sa.Numeric, sa.Float)):
        return "float"
    if isinstance(type_, sa.String):
        return "string"
    return None


def _as_column(resolved: Any) -> ColumnElement[Any]:
    # ORM attributes (``Exposure.day_obs``) are accepted through their clause element.
    clause = getattr(resolved, "__clause_element__", None)
    return clause() if callable(clause) else resolved


class _Compiler:
    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self.columns: dict[str, ColumnElement[Any]] = {}

    def column(self, name: str) -> ColumnElement[Any]:
        if name not in self.columns:
            try:
                resolved = self.resolve(name)
            except UnknownKeyError:
                raise
            except KeyError:
                raise UnknownKeyError(name) from None
            self.columns[name] = _as_column(resolved)
        return self.columns[name]

    def kind(self, operand: Operand) -> Kind | None:
        if isinstance(operand, Identifier):
            return sql_kind(self.column(operand.name).type)
        return value_kind(operand.value)

    def bind(self, value: Any, against: ColumnElement[Any] | None) -> ColumnElement[Any]:
        """Bound parameter for ``value``, typed like ``against`` when the kinds agree."""
        if against is not None and sql_kind(against.type) == value_kind(value):
            return sa.literal(value, against.type)
        return sa.literal(value)

    def expression(self, operand: Operand, other: Operand | None) -> ColumnElement[Any]:
        if isinstance(operand, Identifier):
            return self.column(operand.name)
        against = self.column(other.name) if isinstance(other, Identifier) else None
        return self.bind(operand.value, against)

    def check(self, left: Operand, right: Operand, context: str = "") -> None:
        left_kind, right_kind = self.kind(left), self.kind(right)
        if not compatible(left_kind, right_kind):
            assert left_kind is not None and right_kind is not None
            raise DataQueryTypeError(
                f"cannot compare {describe_operand(left, left_kind)} "
                f"with {describe_operand(right, right_kind)}{context}"
            )

    def run(self, node: Node) -> ColumnElement[bool]:
        match node:
            case MatchAll():
                return sa.true()
            case Or(operands=operands):
                return sa.or_(*(self.run(operand) for operand in operands))
            case And(operands=operands):
                return sa.and_(*(self.run(operand) for operand in operands))
            case Not(operand=operand):
                return sa.not_(self.run(operand))
            case Comparison(op=op, left=left, right=right):
                self.check(left, right)
                return _OPERATORS[op](self.expression(left, right), self.expression(right, left))
            case In():
                return self.membership(node)
        raise TypeError(f"cannot compile {type(node).__name__} as a condition")

    def membership(self, node: In) -> ColumnElement[bool]:
        subject = self.expression(node.operand, None)
        kind = self.kind(node.operand)
        against = subject if isinstance(node.operand, Identifier) else None
        values: list[ColumnElement[Any]] = []
        clauses: list[ColumnElement[bool]] = []
        for item in node.items:
            if isinstance(item, Range):
                if kind not in ("integer", None):
                    where = describe_operand(node.operand, kind)
                    raise DataQueryTypeError(
                        f"a range such as {item.start}..{item.stop} needs an integer, not {where}"
                    )
                clauses.append(self.range(subject, item, against))
            else:
                self.check(node.operand, item, " in an IN list")
                values.append(self.bind(item.value, against))
        if values:
            clauses.insert(0, subject.in_(values))
        condition = clauses[0] if len(clauses) == 1 else sa.or_(*clauses)
        return sa.not_(condition) if node.negated else condition

    def range(
        self, subject: ColumnElement[Any], item: Range, against: ColumnElement[Any] | None
    ) -> ColumnElement[bool]:
        start = self.bind(item.start, against)
        within = subject.between(start, self.bind(item.stop, against))
        if item.stride == 1:
            return within
        # Inside [start, stop] the offset is non-negative, so SQL's truncating modulo
        # agrees with Python's.
        on_stride = ((subject - start) % sa.literal(item.stride)) == sa.literal(0)
        return sa.and_(within, on_stride)


def to_sqlalchemy(
    node: Node,
    resolve: Resolver | Mapping[str, ColumnElement[Any]] | ColumnCollection[str, Any],
) -> ColumnElement[bool]:
    """SQLAlchemy Core condition equivalent to ``node``, for use in ``select().where()``.

    ``resolve`` maps each key to its column: a callable (which may raise ``KeyError``
    for unknown keys), a mapping from key to column, or a column collection such as
    ``table.c``. An empty query compiles to ``true()``.

    Raises
    ------
    UnknownKeyError
        If a key cannot be resolved.
    DataQueryTypeError
        If a column of known type is compared with a constant of another kind, or a
        range is used against a non-integer column.
    """
    if isinstance(resolve, ColumnCollection):
        resolve = resolver_from_columns({key: resolve[key] for key in resolve.keys()})
    elif isinstance(resolve, Mapping):
        resolve = resolver_from_columns(resolve)
    return _Compiler(resolve).run(node)
