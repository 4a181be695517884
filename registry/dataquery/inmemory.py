"""Evaluate a query against one in-memory data ID, with the same meaning as the SQL form.

This lets the same ``-d`` expression select raw files before they are ingested, or filter
data IDs that never reach the database. ``None`` in a data ID behaves like SQL ``NULL``:
comparisons with it are unknown, ``NOT unknown`` stays unknown, and a data ID matches
only when the whole query is definitely true.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from .errors import DataQueryTypeError, UnknownKeyError
from .kinds import compatible, describe_operand, value_kind
from .nodes import And, Comparison, Identifier, In, MatchAll, Node, Not, Operand, Or, Range, identifiers

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_MISSING = object()


def lookup(data_id: Mapping[str, Any], name: str) -> Any:
    """Value of key ``name`` in ``data_id``.

    A dotted name is first looked up as a whole key (``{"exposure.day_obs": ...}``) and
    otherwise walked through nested mappings or attributes (``data_id["exposure"].day_obs``),
    so flat data IDs and data IDs carrying dimension records both work.
    """
    if name in data_id:
        return data_id[name]
    head, *rest = name.split(".")
    value: Any = data_id.get(head, _MISSING) if rest else _MISSING
    for part in rest:
        if value is _MISSING:
            break
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
    if value is _MISSING:
        raise UnknownKeyError(name, (str(key) for key in data_id))
    return value


class _Evaluator:
    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values

    def operand(self, operand: Operand) -> Any:
        if isinstance(operand, Identifier):
            return self.values[operand.name]
        return operand.value

    def run(self, node: Node) -> bool | None:
        # Every branch is evaluated (no short-circuit) so that a type error is raised
        # regardless of operand order, as it is when the query is compiled to SQL.
        match node:
            case MatchAll():
                return True
            case Or(operands=operands):
                results = [self.run(operand) for operand in operands]
                if any(result is True for result in results):
                    return True
                return None if any(result is None for result in results) else False
            case And(operands=operands):
                results = [self.run(operand) for operand in operands]
                if any(result is False for result in results):
                    return False
                return None if any(result is None for result in results) else True
            case Not(operand=operand):
                result = self.run(operand)
                return None if result is None else not result
            case Comparison():
                return self.comparison(node)
            case In():
                return self.membership(node)
        raise TypeError(f"cannot evaluate {type(node).__name__} as a condition")

    def comparison(self, node: Comparison) -> bool | None:
        left, right = self.operand(node.left), self.operand(node.right)
        if left is None or right is None:
            return None
        left_kind, right_kind = value_kind(left), value_kind(right)
        if not compatible(left_kind, right_kind):
            assert left_kind is not None and right_kind is not None
            raise DataQueryTypeError(
                f"cannot compare {describe_operand(node.left, left_kind)} "
                f"with {describe_operand(node.right, right_kind)}"
            )
        try:
            return bool(_OPERATORS[node.op](left, right))
        except TypeError as error:
            raise DataQueryTypeError(
                f"cannot evaluate {node.op!r} between {left!r} and {right!r}: {error}"
            ) from None

    def membership(self, node: In) -> bool | None:
        value = self.operand(node.operand)
        if value is None:
            return None
        kind = value_kind(value)
        found = False
        for item in node.items:
            if isinstance(item, Range):
                if kind != "integer":
                    where = describe_operand(node.operand, kind) if kind else repr(value)
                    raise DataQueryTypeError(
                        f"a range such as {item.start}..{item.stop} needs an integer, not {where}"
                    )
                found = found or value in item
            else:
                item_kind = value_kind(item.value)
                if not compatible(kind, item_kind):
                    assert kind is not None and item_kind is not None
                    raise DataQueryTypeError(
                        f"cannot compare {describe_operand(node.operand, kind)} "
                        f"with {describe_operand(item, item_kind)} in an IN list"
                    )
                found = found or value == item.value
        return found != node.negated


def evaluate(node: Node, data_id: Mapping[str, Any]) -> bool:
    """True if ``data_id`` satisfies the query ``node`` (SQL semantics, incl. ``NULL``).

    Raises
    ------
    UnknownKeyError
        If the query uses a key ``data_id`` does not have.
    DataQueryTypeError
        If a key is compared with a value of an incompatible type.
    """
    values = {name: lookup(data_id, name) for name in identifiers(node)}
    return _Evaluator(values).run(node) is True
