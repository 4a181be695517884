"""Hand-written tokenizer for DATA_QUERY text.

Every token remembers its 0-based column so that the parser can point at the exact
character that broke a query.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .errors import DataQuerySyntaxError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class TokenType(enum.Enum):
    NAME = "name"
    INT = "integer"
    FLOAT = "float"
    STRING = "string"
    AND = "AND"
    OR = "OR"
    NOT = "NOT"
    IN = "IN"
    TRUE = "TRUE"
    FALSE = "FALSE"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    OP = "operator"
    RANGE = "'..'"
    COLON = "':'"
    MINUS = "'-'"
    END = "end of query"


KEYWORDS: dict[str, TokenType] = {
    "AND": TokenType.AND,
    "OR": TokenType.OR,
    "NOT": TokenType.NOT,
    "IN": TokenType.IN,
    "TRUE": TokenType.TRUE,
    "FALSE": TokenType.FALSE,
}

_SINGLE: dict[str, TokenType] = {
    "(": TokenType.LPAREN,
    ")": TokenType.RPAREN,
    ",": TokenType.COMMA,
    ":": TokenType.COLON,
    "-": TokenType.MINUS,
}

# Characters people reach for from other languages, with the word this language uses.
_HINTS: dict[str, str] = {
    "&": "use AND",
    "|": "use OR",
    "!": "use NOT, or != for inequality",
    ";": "a query is a single expression",
}


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical unit: its type, its text as written, where it starts, and its value."""

    type: TokenType
    text: str
    column: int
    value: object = None

    def describe(self) -> str:
        """How to name this token in an error message."""
        if self.type is TokenType.END:
            return "end of query"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        if self.type is TokenType.STRING:
            return f"string {text}"
        return repr(text)


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_name_char(ch: str) -> bool:
    return _is_name_start(ch) or ("0" <= ch <= "9")


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


class _Lexer:
    def __init__(self, query: str) -> None:
        self.query = query
        self.pos = 0
        self.tokens: list[Token] = []

    def error(self, reason: str, column: int) -> DataQuerySyntaxError:
        return DataQuerySyntaxError(reason, self.query, column)

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.query[index] if index < len(self.query) else ""

    def emit(self, type_: TokenType, start: int, value: object = None) -> None:
        self.tokens.append(Token(type_, self.query[start : self.pos], start, value))

    def run(self) -> list[Token]:
        while self.pos < len(self.query):
            ch = self.query[self.pos]
            if ch.isspace():
                self.pos += 1
            elif _is_name_start(ch):
                self.name()
            elif _is_digit(ch):
                self.number()
            elif ch in ("'", '"'):
                self.string(ch)
            elif ch in _SINGLE:
                self.pos += 1
                self.emit(_SINGLE[ch], self.pos - 1)
            else:
                self.punctuation(ch)
        self.tokens.append(Token(TokenType.END, "", len(self.query)))
        return self.tokens

    def name(self) -> None:
        start = self.pos
        while _is_name_char(self.peek()):
            self.pos += 1
        dotted = False
        while self.peek() == "." and _is_name_start(self.peek(1)):
            dotted = True
            self.pos += 1
            while _is_name_char(self.peek()):
                self.pos += 1
        text = self.query[start : self.pos]
        keyword = None if dotted else KEYWORDS.get(text.upper())
        if keyword is not None:
            self.emit(keyword, start)
        else:
            self.emit(TokenType.NAME, start, text)

    def number(self) -> None:
        start = self.pos
        while _is_digit(self.peek()):
            self.pos += 1
        is_float = False
        # "1..5" is a range, so a dot only starts a fraction when a digit follows it.
        if self.peek() == "." and _is_digit(self.peek(1)):
            is_float = True
            self.pos += 1
            while _is_digit(self.peek()):
                self.pos += 1
        if self.peek() in ("e", "E"):
            sign = 1 if self.peek(1) in ("+", "-") else 0
            if _is_digit(self.peek(1 + sign)):
                is_float = True
                self.pos += 1 + sign
                while _is_digit(self.peek()):
                    self.pos += 1
        if _is_name_char(self.peek()):
            raise self.error(f"unexpected character {self.peek()!r} after a number", self.pos)
        text = self.query[start : self.pos]
        if is_float:
            value = float(text)
            if not math.isfinite(value):
                raise self.error(f"number {text} is out of range", start)
            self.emit(TokenType.FLOAT, start, value)
        else:
            # The bound checked here is the magnitude; the sign is applied by the parser.
            ivalue = int(text)
            if ivalue > -INT64_MIN:
                raise self.error(f"integer {text} does not fit in 64 bits", start)
            self.emit(TokenType.INT, start, ivalue)

    def string(self, quote: str) -> None:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while True:
            end = self.query.find(quote, self.pos)
            if end < 0:
                raise self.error(f"unterminated string; no closing {quote} found", start)
            chars.append(self.query[self.pos : end])
            if self.query.startswith(quote, end + 1):
                # A doubled quote stands for one literal quote character.
                chars.append(quote)
                self.pos = end + 2
            else:
                self.pos = end + 1
                break
        self.emit(TokenType.STRING, start, "".join(chars))

    def punctuation(self, ch: str) -> None:
        start = self.pos
        two = self.query[start : start + 2]
        if two == "..":
            self.pos += 2
            self.emit(TokenType.RANGE, start)
        elif two == "==":
            raise self.error("use '=' for equality, not '=='", start)
        elif two in ("!=", "<>", "<=", ">="):
            self.pos += 2
            self.emit(TokenType.OP, start, "!=" if two == "<>" else two)
        elif ch in ("=", "<", ">"):
            self.pos += 1
            self.emit(TokenType.OP, start, ch)
        elif ch in _HINTS:
            raise self.error(f"unexpected character {ch!r}; {_HINTS[ch]}", start)
        elif ch == ".":
            raise self.error("unexpected '.'; a dot may only join two names or form '..'", start)
        else:
            raise self.error(f"unexpected character {ch!r}", start)


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens, ending with a single ``END`` token."""
    return _Lexer(query).run()
