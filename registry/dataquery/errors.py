"""Exceptions raised while parsing, compiling or evaluating a DATA_QUERY expression.

All of them derive from :class:`DataQueryError`, so a command-line front end can catch
one type and show the message as it is; each also derives from the builtin exception
callers would naturally expect (``ValueError`` for bad text or types, ``KeyError`` for
unknown keys).
"""

from __future__ import annotations

from collections.abc import Iterable


class DataQueryError(Exception):
    """Base class of every DATA_QUERY error."""


class DataQuerySyntaxError(DataQueryError, ValueError):
    """The query text is not well formed.

    ``str(error)`` is three lines: the reason with its column, the offending line of the
    query, and a caret ``^`` under the offending column, so it can be shown verbatim.

    Attributes
    ----------
    query:
        The full query text.
    column:
        0-based offset into ``query`` of the offending character (``len(query)`` when
        the query ended too early).
    reason:
        The first line without the position prefix.
    """

    def __init__(self, reason: str, query: str, column: int) -> None:
        self.reason = reason
        self.query = query
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        line_start = self.query.rfind("\n", 0, self.column) + 1
        line_end = self.query.find("\n", self.column)
        if line_end < 0:
            line_end = len(self.query)
        line = self.query[line_start:line_end]
        in_line = self.column - line_start
        # Keep tabs so the caret stays aligned however the terminal expands them.
        pad = "".join("\t" if ch == "\t" else " " for ch in line[:in_line])
        if line_start:
            line_number = self.query.count("\n", 0, self.column) + 1
            where = f"line {line_number}, column {in_line} (offset {self.column})"
        else:
            where = f"column {self.column}"
        return f"Syntax error at {where}: {self.reason}\n{line}\n{pad}^"

    def __reduce__(self) -> tuple[type, tuple[str, str, int]]:
        return (type(self), (self.reason, self.query, self.column))


class DataQueryTypeError(DataQueryError, ValueError):
    """A key is compared with a value of an incompatible type (e.g. integer vs string)."""


class UnknownKeyError(DataQueryError, KeyError):
    """The query names a key that the column resolver or data ID does not know.

    Attributes
    ----------
    key:
        The unknown key, as written in the query.
    known:
        The keys that would have been accepted, sorted; empty when not known.
    """

    def __init__(self, key: str, known: Iterable[str] = ()) -> None:
        self.key = key
        self.known = tuple(sorted(known))
        super().__init__(key)

    def __str__(self) -> str:
        # KeyError would otherwise show the repr of its argument only.
        message = f"unknown key {self.key!r} in data query"
        if self.known:
            message += f"; known keys: {', '.join(self.known)}"
        return message

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, ...]]]:
        return (type(self), (self.key, self.known))
