"""Recursive-descent parser turning DATA_QUERY text into a :mod:`.nodes` tree.

Grammar (keywords are case-insensitive; precedence rises from ``OR`` to ``NOT`` to the
comparisons)::

    query      := <empty> | or_expr END
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := not_expr ( AND not_expr )*
    not_expr   := NOT not_expr | predicate
    predicate  := '(' or_expr ')'
                | operand OP operand              OP is = != <> < <= > >=
                | operand [NOT] IN '(' item ( ',' item )* ')'
    operand    := NAME | value
    item       := value | int '..' int [ ':' positive_int ]
    value      := ['-'] INT | ['-'] FLOAT | STRING | TRUE | FALSE
"""

from __future__ import annotations

from typing import NoReturn, cast

from .errors import DataQuerySyntaxError
from .lexer import INT64_MAX, Token, TokenType, tokenize
from .nodes import (
    And,
    Comparison,
    ComparisonOperator,
    Identifier,
    In,
    InItem,
    Literal,
    MatchAll,
    Node,
    Not,
    Operand,
    Or,
    Range,
)

#: Parentheses and NOTs deeper than this are refused, so that hostile input cannot
#: exhaust the interpreter stack here or in the code that walks the tree.
MAX_DEPTH = 100

_VALUE_START = frozenset(
    {TokenType.INT, TokenType.FLOAT, TokenType.STRING, TokenType.TRUE, TokenType.FALSE, TokenType.MINUS}
)


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0
        self.depth = 0

    # -- token helpers ---------------------------------------------------------------
    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    @property
    def previous(self) -> Token | None:
        return self.tokens[self.index - 1] if self.index else None

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.type is not TokenType.END:
            self.index += 1
        return token

    def accept(self, type_: TokenType) -> Token | None:
        if self.current.type is type_:
            return self.advance()
        return None

    def fail(self, reason: str, token: Token | None = None) -> NoReturn:
        column = (token or self.current).column
        raise DataQuerySyntaxError(reason, self.query, column)

    def after(self) -> str:
        previous = self.previous
        return f" after {previous.text!r}" if previous is not None else ""

    def found(self) -> str:
        return f"found {self.current.describe()}"

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"query is nested more than {MAX_DEPTH} levels deep", token)

    # -- grammar ----------------------------------------------------------------------
    def parse(self) -> Node:
        if self.current.type is TokenType.END:
            return MatchAll()
        node = self.or_expr()
        if self.current.type is TokenType.RPAREN:
            self.fail("unmatched ')'")
        if self.current.type is not TokenType.END:
            self.fail(f"expected AND, OR or end of query, {self.found()}")
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.accept(TokenType.OR):
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.accept(TokenType.AND):
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Node:
        nots: list[Token] = []
        while (token := self.accept(TokenType.NOT)) is not None:
            self.enter(token)
            nots.append(token)
        node = self.predicate()
        for _ in nots:
            node = Not(node)
        self.depth -= len(nots)
        return node

    def predicate(self) -> Node:
        token = self.current
        if token.type is TokenType.LPAREN:
            return self.group()
        if token.type is TokenType.NAME or token.type in _VALUE_START:
            left = self.operand()
            return self.condition(left, token.column)
        self.fail(f"expected a condition{self.after()}, {self.found()}")

    def group(self) -> Node:
        opening = self.advance()
        self.enter(opening)
        node = self.or_expr()
        if self.accept(TokenType.RPAREN) is None:
            self.fail(
                f"expected AND, OR or ')' to close the '(' at column {opening.column}, {self.found()}"
            )
        self.depth -= 1
        return node

    def condition(self, left: Operand, start: int) -> Node:
        last = self.tokens[self.index - 1]
        described = self.query[start : last.column + len(last.text)]
        token = self.current
        if token.type is TokenType.OP:
            self.advance()
            right = self.operand(what="a value")
            if self.current.type is TokenType.OP:
                self.fail("comparisons cannot be chained; combine them with AND")
            if self.current.type is TokenType.RANGE:
                self.fail("a range is only allowed inside an IN (...) list")
            return Comparison(cast(ComparisonOperator, token.value), left, right)
        if token.type is TokenType.IN:
            self.advance()
            return In(left, self.in_items(), negated=False)
        if token.type is TokenType.NOT:
            self.advance()
            if self.accept(TokenType.IN) is None:
                self.fail(f"expected IN after NOT, {self.found()}")
            return In(left, self.in_items(), negated=True)
        if token.type is TokenType.RANGE:
            self.fail("a range is only allowed inside an IN (...) list")
        self.fail(f"expected a comparison operator or IN after {described!r}, {self.found()}")

    def operand(self, what: str = "a key or value") -> Operand:
        token = self.current
        if token.type is TokenType.NAME:
            self.advance()
            return Identifier(cast(str, token.value))
        if token.type in _VALUE_START:
            return self.value()
        self.fail(f"expected {what}{self.after()}, {self.found()}")

    def value(self) -> Literal:
        token = self.current
        if token.type is TokenType.MINUS:
            self.advance()
            number = self.current
            if number.type not in (TokenType.INT, TokenType.FLOAT):
                self.fail(f"expected a number after '-', {self.found()}")
            self.advance()
            return Literal(-cast(int | float, number.value))
        if token.type in (TokenType.INT, TokenType.FLOAT):
            self.advance()
            if token.type is TokenType.INT and cast(int, token.value) > INT64_MAX:
                self.fail(f"integer {token.text} does not fit in 64 bits", token)
            return Literal(cast(int | float, token.value))
        if token.type is TokenType.STRING:
            self.advance()
            return Literal(cast(str, token.value))
        if token.type in (TokenType.TRUE, TokenType.FALSE):
            self.advance()
            return Literal(token.type is TokenType.TRUE)
        self.fail(f"expected a value{self.after()}, {self.found()}")

    def in_items(self) -> tuple[InItem, ...]:
        opening = self.current
        if self.accept(TokenType.LPAREN) is None:
            self.fail(f"expected '(' after IN, {self.found()}")
        if self.current.type is TokenType.RPAREN:
            self.fail("empty IN list; give at least one value")
        items: list[InItem] = []
        while True:
            items.append(self.in_item())
            if self.accept(TokenType.COMMA):
                continue
            if self.accept(TokenType.RPAREN):
                return tuple(items)
            self.fail(
                f"expected ',' or ')' in the IN list opened at column {opening.column}, {self.found()}"
            )

    def in_item(self) -> InItem:
        start_token = self.current
        start = self.value()
        if self.current.type is not TokenType.RANGE:
            return start
        self.require_integer(start, start_token, "range start")
        self.advance()
        stop_token = self.current
        stop = self.value()
        self.require_integer(stop, stop_token, "range end")
        stride = 1
        if self.accept(TokenType.COLON):
            stride_token = self.current
            if stride_token.type is not TokenType.INT or cast(int, stride_token.value) < 1:
                self.fail(f"expected a positive integer stride after ':', {self.found()}")
            self.advance()
            stride = cast(int, stride_token.value)
        if cast(int, stop.value) < cast(int, start.value):
            self.fail(f"empty range: {start.value} is greater than {stop.value}", start_token)
        return Range(cast(int, start.value), cast(int, stop.value), stride)

    def require_integer(self, literal: Literal, token: Token, what: str) -> None:
        if type(literal.value) is not int:
            self.fail(f"{what} must be an integer, found {token.describe()}", token)


def parse(text: str) -> Node:
    """Parse DATA_QUERY ``text`` into a syntax tree.

    An empty or all-whitespace query returns :class:`MatchAll`, meaning "no constraint".

    Raises
    ------
    DataQuerySyntaxError
        If the text is not well formed; the error carries the 0-based column.
    """
    return _Parser(text).parse()
