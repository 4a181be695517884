"""DATA_QUERY expressions: the ``-d``/``--where`` language for selecting data IDs.

A query such as ``instrument='MegaPrime' AND visit IN (1..10:2) AND band != 'u'`` is
parsed by a hand-written tokenizer and recursive-descent parser (never ``eval``) into an
immutable tree, which can then be

* compiled to a SQLAlchemy Core condition with every constant bound as a parameter
  (:func:`to_sqlalchemy`), for registry queries;
* evaluated against an in-memory data ID with the same semantics (:func:`evaluate`),
  for files that are not in the registry yet;
* written back as canonical text (:func:`format_query`, :func:`normalize`).

Language summary: ``OR`` binds loosest, then ``AND``, then ``NOT``; comparisons are
``= != <> < <= > >=``; ``key [NOT] IN (v1, v2, a..b, a..b:stride)`` where ranges are
inclusive integer ranges; constants are integers, floats, ``'single'`` or ``"double"``
quoted strings (a doubled quote escapes itself), ``TRUE`` and ``FALSE``; keys are names,
optionally dotted (``exposure.day_obs``); keywords are case-insensitive. An empty query
parses to :class:`MatchAll` and matches everything.
"""

from .errors import DataQueryError, DataQuerySyntaxError, DataQueryTypeError, UnknownKeyError
from .formatter import format_query, normalize
from .inmemory import evaluate
from .nodes import (
    And,
    Comparison,
    Identifier,
    In,
    Literal,
    MatchAll,
    Node,
    Not,
    Or,
    Range,
    identifiers,
)
from .parser import MAX_DEPTH, parse
from .sql import Resolver, resolver_from_columns, sql_kind, to_sqlalchemy

#: Alias of :func:`format_query`, reading naturally as ``dataquery.format(node)``.
format = format_query

__all__ = [
    "MAX_DEPTH",
    "And",
    "Comparison",
    "DataQueryError",
    "DataQuerySyntaxError",
    "DataQueryTypeError",
    "Identifier",
    "In",
    "Literal",
    "MatchAll",
    "Node",
    "Not",
    "Or",
    "Range",
    "Resolver",
    "UnknownKeyError",
    "evaluate",
    "format",
    "format_query",
    "identifiers",
    "normalize",
    "parse",
    "resolver_from_columns",
    "sql_kind",
    "to_sqlalchemy",
]
