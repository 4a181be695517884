"""Tests of the DATA_QUERY language: parser, errors, formatter, evaluator and SQL compiler."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.dataquery import (
    MAX_DEPTH,
    And,
    Comparison,
    DataQueryError,
    DataQuerySyntaxError,
    DataQueryTypeError,
    Identifier,
    In,
    Literal,
    MatchAll,
    Node,
    Not,
    Or,
    Range,
    UnknownKeyError,
    evaluate,
    format_query,
    identifiers,
    normalize,
    parse,
    resolver_from_columns,
    to_sqlalchemy,
)
from registry.dataquery.lexer import KEYWORDS

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cmp(op: str, key: str, value: Any) -> Comparison:
    return Comparison(op, Identifier(key), Literal(value))  # type: ignore[arg-type]


A, B, C = cmp("=", "a", 1), cmp("=", "b", 2), cmp("=", "c", 3)


# -- parsing ---------------------------------------------------------------------------


def test_documented_examples_parse_to_expected_trees() -> None:
    assert parse("instrument='MegaPrime' AND exposure IN (1001, 1002) AND detector < 4 AND band='r'") == And(
        (
            cmp("=", "instrument", "MegaPrime"),
            In(Identifier("exposure"), (Literal(1001), Literal(1002))),
            cmp("<", "detector", 4),
            cmp("=", "band", "r"),
        )
    )
    assert parse("visit IN (1..10) OR (tract = 9813 AND patch != 42)") == Or(
        (In(Identifier("visit"), (Range(1, 10),)), And((cmp("=", "tract", 9813), cmp("!=", "patch", 42))))
    )
    assert parse("NOT (band IN ('g', 'r'))") == Not(In(Identifier("band"), (Literal("g"), Literal("r"))))
    assert parse("skymap = 'rings' AND tract=1 AND patch IN (0, 1, 2)") == And(
        (
            cmp("=", "skymap", "rings"),
            cmp("=", "tract", 1),
            In(Identifier("patch"), (Literal(0), Literal(1), Literal(2))),
        )
    )
    assert parse("exposure.day_obs >= 20240101") == cmp(">=", "exposure.day_obs", 20240101)
    assert parse("physical_filter = 'r.MP9601'") == cmp("=", "physical_filter", "r.MP9601")


@pytest.mark.parametrize("text", ["", "   ", "\t\n  "])
def test_empty_query_means_no_constraint(text: str) -> None:
    node = parse(text)
    assert node == MatchAll()
    assert evaluate(node, {}) is True
    assert format_query(node) == ""
    assert identifiers(node) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1 OR b=2 AND c=3", Or((A, And((B, C))))),
        ("a=1 AND b=2 OR c=3", Or((And((A, B)), C))),
        ("(a=1 OR b=2) AND c=3", And((Or((A, B)), C))),
        ("NOT a=1 AND b=2", And((Not(A), B))),
        ("NOT a=1 OR b=2", Or((Not(A), B))),
        ("NOT (a=1 OR b=2)", Not(Or((A, B)))),
        ("NOT NOT a=1", Not(Not(A))),
        ("a=1 AND NOT b=2 OR NOT c=3", Or((And((A, Not(B))), Not(C)))),
        ("((a=1))", A),
    ],
)
def test_precedence(text: str, expected: Node) -> None:
    assert parse(text) == expected


def test_precedence_matches_truth_table() -> None:
    node = parse("a = 1 OR b = 1 AND NOT c = 1")
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                expected = a == 1 or (b == 1 and not c == 1)
                assert evaluate(node, {"a": a, "b": b, "c": c}) is expected


@pytest.mark.parametrize(
    "text", ["a=1 OR b=2 OR c=3", "(a=1 OR b=2) OR c=3", "a=1 OR (b=2 OR c=3)", "((a=1 OR b=2)) OR (c=3)"]
)
def test_or_is_associative_and_flat(text: str) -> None:
    assert parse(text) == Or((A, B, C))


@pytest.mark.parametrize("text", ["a=1 AND b=2 AND c=3", "(a=1 AND b=2) AND c=3", "a=1 AND (b=2 AND c=3)"])
def test_and_is_associative_and_flat(text: str) -> None:
    assert parse(text) == And((A, B, C))


def test_long_or_chains_stay_shallow() -> None:
    text = " OR ".join(f"visit = {i}" for i in range(5000))
    node = parse(text)
    assert isinstance(node, Or) and len(node.operands) == 5000
    assert evaluate(node, {"visit": 4999}) and not evaluate(node, {"visit": 5000})
    assert parse(format_query(node)) == node
    column = sa.column("visit", sa.Integer)
    assert str(to_sqlalchemy(node, {"visit": column}).compile()).count("visit =") == 5000


@pytest.mark.parametrize(
    ("op", "stored", "holds"),
    [
        ("=", "=", [False, True, False]),
        ("!=", "!=", [True, False, True]),
        ("<>", "!=", [True, False, True]),
        ("<", "<", [True, False, False]),
        ("<=", "<=", [True, True, False]),
        (">", ">", [False, False, True]),
        (">=", ">=", [False, True, True]),
    ],
)
def test_comparison_operators(op: str, stored: str, holds: list[bool]) -> None:
    node = parse(f"detector {op} 5")
    assert node == cmp(stored, "detector", 5)
    assert [evaluate(node, {"detector": d}) for d in (4, 5, 6)] == holds
    assert parse(f"detector{op}5") == node


def test_literal_on_the_left_and_key_to_key_comparisons() -> None:
    assert parse("5 < detector") == Comparison("<", Literal(5), Identifier("detector"))
    assert evaluate(parse("5 < detector"), {"detector": 6})
    assert evaluate(parse("visit >= exposure"), {"visit": 3, "exposure": 3})
    assert evaluate(parse("1 = 1"), {})
    assert not evaluate(parse("'a' > 'b'"), {})


def test_in_and_not_in() -> None:
    node = parse("band IN ('g', 'r')")
    assert node == In(Identifier("band"), (Literal("g"), Literal("r")))
    assert [evaluate(node, {"band": b}) for b in "gri"] == [True, True, False]
    negated = parse("band NOT IN ('g', 'r')")
    assert negated == In(Identifier("band"), (Literal("g"), Literal("r")), negated=True)
    assert [evaluate(negated, {"band": b}) for b in "gri"] == [False, False, True]
    assert parse("band IN ('r')") == In(Identifier("band"), (Literal("r"),))


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ("1..10", (Range(1, 10),)),
        ("1..10:3", (Range(1, 10, 3),)),
        ("1 .. 10 : 3", (Range(1, 10, 3),)),
        ("-3..3", (Range(-3, 3),)),
        ("-9..-5:2", (Range(-9, -5, 2),)),
        ("4..4", (Range(4, 4),)),
        ("1..10:1", (Range(1, 10),)),
        ("0, 5..7, 20..30:5, 99", (Literal(0), Range(5, 7), Range(20, 30, 5), Literal(99))),
    ],
)
def test_ranges(items: str, expected: tuple[Any, ...]) -> None:
    assert parse(f"visit IN ({items})") == In(Identifier("visit"), expected)


def test_range_membership_with_stride() -> None:
    node = parse("visit IN (1..10:3)")
    assert [v for v in range(-2, 15) if evaluate(node, {"visit": v})] == [1, 4, 7, 10]
    node = parse("visit NOT IN (2..8:2, 11)")
    assert [v for v in range(0, 13) if evaluate(node, {"visit": v})] == [0, 1, 3, 5, 7, 9, 10, 12]
    node = parse("visit IN (-6..-1:5)")
    assert [v for v in range(-10, 3) if evaluate(node, {"visit": v})] == [-6, -1]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x = 42", 42),
        ("x = -42", -42),
        ("x = - 42", -42),
        ("x = 007", 7),
        ("x = 1.5", 1.5),
        ("x = -0.25", -0.25),
        ("x = 1e3", 1000.0),
        ("x = 2.5E-3", 0.0025),
        ("x = 6e+2", 600.0),
        ("x = 'r'", "r"),
        ('x = "r"', "r"),
        ("x = ''", ""),
        ('x = ""', ""),
        ("x = 'it''s'", "it's"),
        ('x = "say ""hi"""', 'say "hi"'),
        ("x = \"it's\"", "it's"),
        ("x = 'say \"hi\"'", 'say "hi"'),
        ("x = ''''", "'"),
        ("x = 'two words  and\ttab'", "two words  and\ttab"),
        ("x = 'AND OR NOT IN ( ) ..'", "AND OR NOT IN ( ) .."),
        ("x = 'Ωμέγα'", "Ωμέγα"),
        ("x = TRUE", True),
        ("x = false", False),
        ("x = -9223372036854775808", -(2**63)),
        ("x = 9223372036854775807", 2**63 - 1),
    ],
)
def test_literals(text: str, value: Any) -> None:
    node = parse(text)
    assert node == cmp("=", "x", value)
    assert isinstance(node, Comparison) and type(node.right.value) is type(value)  # type: ignore[union-attr]


def test_literals_of_different_types_are_different_nodes() -> None:
    assert Literal(1) != Literal(1.0)
    assert Literal(1) != Literal(True)
    assert parse("x = 1") != parse("x = 1.0") != parse("x = TRUE")
    assert len({Literal(1), Literal(1.0), Literal(True)}) == 3


def test_keywords_are_case_insensitive() -> None:
    upper = parse("NOT a IN (1) AND b NOT IN (2) OR c = TRUE AND d = FALSE")
    for text in (
        "not a in (1) and b not in (2) or c = true and d = false",
        "Not a In (1) AnD b nOt iN (2) oR c = True AND d = fAlSe",
    ):
        assert parse(text) == upper


def test_identifiers_are_case_sensitive_and_may_be_dotted() -> None:
    assert parse("Band = 'r'") != parse("band = 'r'")
    assert parse("exposure.day_obs = 1") == cmp("=", "exposure.day_obs", 1)
    assert parse("a.b.c_1 = 1") == cmp("=", "a.b.c_1", 1)
    assert parse("_x9 = 1") == cmp("=", "_x9", 1)
    # A dotted part may spell a keyword; only bare words are keywords.
    assert parse("record.in = 1") == cmp("=", "record.in", 1)
    assert parse("ANDROID = 1") == cmp("=", "ANDROID", 1)
    assert parse("INSTRUMENT = 'x'") == cmp("=", "INSTRUMENT", "x")


def test_identifiers_lists_every_key() -> None:
    node = parse("a = 1 AND (b IN (1..3) OR NOT c.d < e) AND 5 > f AND 'x' = 'y'")
    assert identifiers(node) == {"a", "b", "c.d", "e", "f"}


def test_nodes_are_immutable_and_validated() -> None:
    node = parse("a = 1")
    with pytest.raises(AttributeError):
        node.op = "<"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Range(5, 1)
    with pytest.raises(ValueError):
        Range(1, 5, 0)
    with pytest.raises(ValueError):
        In(Identifier("a"), ())
    with pytest.raises(ValueError):
        And((A,))
    with pytest.raises(ValueError):
        Literal(float("nan"))
    with pytest.raises(ValueError):
        Comparison("==", Identifier("a"), Literal(1))  # type: ignore[arg-type]
    assert And((And((A, B)), C)) == And((A, B, C))


# -- syntax errors -----------------------------------------------------------------------


def assert_points_at(error: DataQuerySyntaxError, query: str, column: int) -> None:
    assert error.column == column
    assert error.query == query
    first, shown, caret = str(error).split("\n")
    assert first.startswith(f"Syntax error at column {column}: ")
    assert shown == query
    assert caret == " " * column + "^"


SYNTAX_ERRORS: list[tuple[str, int, str]] = [
    # unknown characters
    ("band = 'r' ; visit = 1", 11, "unexpected character ';'"),
    ("band = 'r' # comment", 11, "unexpected character '#'"),
    ("band = 'r' && visit = 1", 11, "use AND"),
    ("visit = 1 || visit = 2", 10, "use OR"),
    ("visit = 1 OR !visit = 2", 13, "use NOT"),
    ("band == 'r'", 5, "use '=' for equality"),
    ("visit = 12ab", 10, "after a number"),
    ("exposure. = 3", 8, "unexpected '.'"),
    ("visit = .5", 8, "unexpected '.'"),
    ("band = `r`", 7, "unexpected character '`'"),
    ("bänd = 'r'", 1, "unexpected character 'ä'"),
    # unterminated strings
    ("band = 'r", 7, "unterminated string"),
    ('band = "r', 7, "unterminated string"),
    ("band = 'it''s", 7, "unterminated string"),
    # parentheses
    ("(band = 'r'", 11, "to close the '(' at column 0"),
    ("(band = 'r' OR (visit = 1)", 26, "to close the '(' at column 0"),
    ("band = 'r')", 10, "unmatched ')'"),
    ("()", 1, "expected a condition after '('"),
    ("(band = 'r' visit = 1)", 12, "expected AND, OR or ')'"),
    # dangling operators and missing operands
    ("band = 'r' AND", 14, "expected a condition after 'AND'"),
    ("band = 'r' OR ", 14, "expected a condition after 'OR'"),
    ("NOT", 3, "expected a condition after 'NOT'"),
    ("AND band = 'r'", 0, "expected a condition, found 'AND'"),
    ("instrument='MegaPrime' AND band =", 33, "expected a value after '='"),
    ("band = AND visit = 1", 7, "expected a value after '=', found 'AND'"),
    ("band", 4, "expected a comparison operator or IN after 'band'"),
    ("band 'r'", 5, "expected a comparison operator or IN after 'band'"),
    ("-5 visit", 3, "expected a comparison operator or IN after '-5'"),
    ("band = 'r' visit = 1", 11, "expected AND, OR or end of query"),
    ("a < b < c", 6, "comparisons cannot be chained"),
    ("a NOT = 1", 6, "expected IN after NOT"),
    ("visit = -'x'", 9, "expected a number after '-'"),
    # IN lists
    ("visit IN ()", 10, "empty IN list"),
    ("visit NOT IN ( )", 15, "empty IN list"),
    ("visit IN 1, 2", 9, "expected '(' after IN"),
    ("visit IN (1, )", 13, "expected a value after ','"),
    ("visit IN (1 2)", 12, "expected ',' or ')' in the IN list opened at column 9"),
    ("visit IN (1, 2", 14, "expected ',' or ')'"),
    ("visit IN (a, b)", 10, "expected a value after '('"),
    # ranges
    ("visit IN (5..1)", 10, "empty range"),
    ("visit IN (1..5:0)", 15, "positive integer stride"),
    ("visit IN (1..5:-2)", 15, "positive integer stride"),
    ("visit IN (1..5:)", 15, "positive integer stride"),
    ("visit IN (1.5..3)", 10, "range start must be an integer"),
    ("visit IN (1..'x')", 13, "range end must be an integer"),
    ("visit IN (1..x)", 13, "expected a value after '..'"),
    ("visit = 1..5", 9, "only allowed inside an IN"),
    ("visit 1..5", 6, "expected a comparison operator"),
    # numbers out of range
    ("visit = 9223372036854775808", 8, "does not fit in 64 bits"),
    ("visit = 99999999999999999999999", 8, "does not fit in 64 bits"),
    ("seeing < 1e999", 9, "out of range"),
]


@pytest.mark.parametrize(("query", "column", "reason"), SYNTAX_ERRORS)
def test_syntax_errors_point_at_the_offending_column(query: str, column: int, reason: str) -> None:
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse(query)
    assert reason in caught.value.reason
    assert_points_at(caught.value, query, column)


def test_syntax_error_kinds_and_message_shape() -> None:
    with pytest.raises(ValueError) as caught:
        parse("instrument='MegaPrime' AND")
    error = caught.value
    assert isinstance(error, DataQuerySyntaxError) and isinstance(error, DataQueryError)
    assert str(error) == (
        "Syntax error at column 26: expected a condition after 'AND', found end of query\n"
        "instrument='MegaPrime' AND\n"
        "                          ^"
    )


def test_syntax_error_caret_in_multi_line_and_tabbed_queries() -> None:
    query = "band = 'r'\n  AND visit IN ()"
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse(query)
    error = caught.value
    assert error.column == query.index(")")
    first, shown, caret = str(error).split("\n")
    assert first.startswith(f"Syntax error at line 2, column 16 (offset {error.column}):")
    assert shown == "  AND visit IN ()"
    assert caret == " " * 16 + "^"

    with pytest.raises(DataQuerySyntaxError) as caught:
        parse("band =\t\t#")
    assert caught.value.column == 8
    assert str(caught.value).split("\n")[2] == "      \t\t^"


def test_syntax_errors_survive_pickling() -> None:
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse("visit IN ()")
    clone = pickle.loads(pickle.dumps(caught.value))
    assert (clone.column, clone.query, str(clone)) == (10, "visit IN ()", str(caught.value))


def test_nesting_depth_is_limited() -> None:
    ok = "(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH
    assert parse(ok) == cmp("=", "a", 1)
    deep = "(" * (MAX_DEPTH + 50) + "a = 1" + ")" * (MAX_DEPTH + 50)
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse(deep)
    assert_points_at(caught.value, deep, MAX_DEPTH)
    nots = "NOT " * (MAX_DEPTH + 1) + "a = 1"
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse(nots)
    assert caught.value.column == 4 * MAX_DEPTH


QUERY_PIECES = st.sampled_from(
    ["a", "b.c", "=", "!=", "<>", "<", ">=", "AND", "or", "NOT", "IN", "(", ")", ",", "..", ":", "-",
     "1", "2.5", "'x'", "'it''s'", '"q"', "'", "TRUE", ";", ".", "1e5", "  ", "\n"]
)  # fmt: skip


@SETTINGS
@given(
    st.one_of(st.lists(QUERY_PIECES, max_size=12).map(" ".join), st.lists(QUERY_PIECES).map("".join), st.text())
)
def test_parse_either_succeeds_or_raises_a_located_syntax_error(text: str) -> None:
    try:
        node = parse(text)
    except DataQuerySyntaxError as error:
        assert 0 <= error.column <= len(text)
        assert error.query == text
        assert str(error).endswith("^")
    else:
        assert parse(format_query(node)) == node


# -- in-memory evaluation ------------------------------------------------------------------


def test_evaluate_unknown_key() -> None:
    with pytest.raises(UnknownKeyError) as caught:
        evaluate(parse("visit = 1 OR bnd = 'r'"), {"visit": 1, "band": "r", "detector": 3})
    error = caught.value
    assert isinstance(error, KeyError) and error.key == "bnd"
    assert str(error) == "unknown key 'bnd' in data query; known keys: band, detector, visit"


def test_evaluate_dotted_keys_flat_or_nested() -> None:
    node = parse("exposure.day_obs >= 20240101 AND exposure = 7")
    assert evaluate(node, {"exposure": 7, "exposure.day_obs": 20240102})
    assert evaluate(parse("exposure.day_obs = 20240101"), {"exposure": {"day_obs": 20240101}})
    assert evaluate(parse("exposure.day_obs = 20240101"), {"exposure": SimpleNamespace(day_obs=20240101)})
    with pytest.raises(UnknownKeyError):
        evaluate(parse("exposure.night = 1"), {"exposure": {"day_obs": 20240101}})


@pytest.mark.parametrize(
    ("text", "data_id", "fragment"),
    [
        ("exposure = 'r'", {"exposure": 5}, "cannot compare key 'exposure' (an integer) with a string 'r'"),
        ("band = 3", {"band": "r"}, "cannot compare key 'band' (a string) with an integer 3"),
        ("band < 2.5", {"band": "r"}, "key 'band' (a string)"),
        ("'r' = exposure", {"exposure": 5}, "cannot compare a string 'r' with key 'exposure' (an integer)"),
        ("flag = 1", {"flag": True}, "key 'flag' (a boolean)"),
        ("band IN ('r', 1)", {"band": "r"}, "in an IN list"),
        ("band IN (1..3)", {"band": "r"}, "needs an integer, not key 'band' (a string)"),
        ("seeing IN (1..3)", {"seeing": 1.0}, "needs an integer"),
        ("band = exposure", {"band": "r", "exposure": 3}, "key 'band' (a string) with key 'exposure'"),
        # Every branch is checked even when the result is already decided.
        ("exposure = 5 OR band = 3", {"exposure": 5, "band": "r"}, "key 'band'"),
    ],
)
def test_evaluate_type_errors(text: str, data_id: Mapping[str, Any], fragment: str) -> None:
    with pytest.raises(DataQueryTypeError) as caught:
        evaluate(parse(text), data_id)
    assert isinstance(caught.value, ValueError)
    assert fragment in str(caught.value)


def test_numbers_of_either_kind_compare() -> None:
    assert evaluate(parse("detector < 3.5"), {"detector": 3})
    assert evaluate(parse("seeing >= 1"), {"seeing": 1.0})
    assert evaluate(parse("detector IN (2.0)"), {"detector": 2})


def test_evaluate_null_follows_sql_three_valued_logic() -> None:
    row = {"seeing": None, "visit": 1}
    for text, expected in [
        ("seeing < 1.0", False),
        ("NOT seeing < 1.0", False),
        ("seeing IN (1.0)", False),
        ("seeing NOT IN (1.0)", False),
        ("seeing < 1.0 OR visit = 1", True),
        ("NOT (seeing < 1.0 AND visit = 2)", True),
        ("NOT (seeing < 1.0 OR visit = 2)", False),
        ("seeing = 1.0 AND visit = 1", False),
    ]:
        assert evaluate(parse(text), row) is expected, text


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("instrument='MegaPrime' and band='r'", "instrument = 'MegaPrime' AND band = 'r'"),
        ("(a=1 or b=2) and c<>3", "(a = 1 OR b = 2) AND c != 3"),
        ("a=1 or (b=2 and c=3)", "a = 1 OR b = 2 AND c = 3"),
        ("not (a=1 or b=2)", "NOT (a = 1 OR b = 2)"),
        ("not (not (a=1))", "NOT NOT a = 1"),
        ("v in (1..10:1, 3..9:2, -4)", "v IN (1..10, 3..9:2, -4)"),
        ("v not in (1)", "v NOT IN (1)"),
        ('b = "it\'s"', "b = 'it''s'"),
        ("x = 1e3 and y = true", "x = 1000.0 AND y = TRUE"),
        ("  ", ""),
    ],
)
def test_normalize(text: str, canonical: str) -> None:
    assert normalize(text) == canonical
    assert normalize(canonical) == canonical


def _is_keyword(name: str) -> bool:
    return name.upper() in KEYWORDS


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,6}){0,2}", fullmatch=True)
NAMES = NAMES.filter(lambda name: "." in name or not _is_keyword(name))
ANY_LITERALS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.booleans(),
).map(Literal)
ANY_RANGES = st.builds(
    lambda start, length, stride: Range(start, start + length, stride),
    st.integers(-(10**12), 10**12),
    st.integers(0, 10**6),
    st.integers(1, 1000),
)
OPS = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])


def trees(operands: st.SearchStrategy[Any], items: st.SearchStrategy[Any]) -> st.SearchStrategy[Node]:
    leaves = st.one_of(
        st.builds(Comparison, OPS, operands, operands),
        st.builds(In, operands, st.lists(items, min_size=1, max_size=4).map(tuple), st.booleans()),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            children.map(Not),
            st.lists(children, min_size=2, max_size=4).map(lambda xs: And(tuple(xs))),
            st.lists(children, min_size=2, max_size=4).map(lambda xs: Or(tuple(xs))),
        ),
        max_leaves=12,
    )


ANY_TREES = trees(st.one_of(NAMES.map(Identifier), ANY_LITERALS), st.one_of(ANY_LITERALS, ANY_RANGES))


@SETTINGS
@given(ANY_TREES)
def test_format_round_trips_any_tree(node: Node) -> None:
    text = format_query(node)
    assert parse(text) == node
    assert format_query(parse(text)) == text


@st.composite
def spellings(draw: st.DrawFn, node: Node) -> str:
    """Some way of writing ``node``: random keyword case, spacing, quotes and redundant parentheses."""

    def gap() -> str:
        return draw(st.sampled_from([" ", "  ", "\t", "\n"]))

    def tight() -> str:
        return draw(st.sampled_from(["", " "]))

    def keyword(word: str) -> str:
        return draw(st.sampled_from([word.upper(), word.lower(), word.capitalize()]))

    def literal(lit: Literal) -> str:
        value = lit.value
        if isinstance(value, bool):
            return keyword("TRUE" if value else "FALSE")
        if isinstance(value, str):
            quote = draw(st.sampled_from(["'", '"']))
            return quote + value.replace(quote, quote * 2) + quote
        if isinstance(value, int):
            zeros = draw(st.sampled_from(["", "0", "00"]))
            return ("-" + tight() if value < 0 else "") + zeros + str(abs(value))
        return draw(st.sampled_from([repr(value), repr(value).upper()]))

    def operand(op: Identifier | Literal) -> str:
        return op.name if isinstance(op, Identifier) else literal(op)

    def item(it: Literal | Range) -> str:
        if isinstance(it, Literal):
            return literal(it)
        text = f"{it.start}{tight()}..{tight()}{it.stop}"
        if it.stride != 1 or draw(st.booleans()):
            text += f"{tight()}:{tight()}{it.stride}"
        return text

    def write(current: Node, minimum: int) -> str:
        level = {Or: 1, And: 2, Not: 3}.get(type(current), 4)
        text = bare(current)
        if level < minimum or draw(st.integers(0, 5)) == 0:
            return f"({tight()}{text}{tight()})"
        return text

    def bare(current: Node) -> str:
        if isinstance(current, Or):
            return (gap() + keyword("or") + gap()).join(write(op, 2) for op in current.operands)
        if isinstance(current, And):
            return (gap() + keyword("and") + gap()).join(write(op, 3) for op in current.operands)
        if isinstance(current, Not):
            return keyword("not") + gap() + write(current.operand, 3)
        if isinstance(current, Comparison):
            op = current.op if current.op != "!=" else draw(st.sampled_from(["!=", "<>"]))
            return f"{operand(current.left)}{gap()}{op}{gap()}{operand(current.right)}"
        assert isinstance(current, In)
        words = keyword("not") + gap() + keyword("in") if current.negated else keyword("in")
        listed = f"{tight()},{tight()}".join(item(it) for it in current.items)
        return f"{operand(current.operand)}{gap()}{words}{tight()}({tight()}{listed}{tight()})"

    return draw(st.sampled_from(["", " ", "\n"])) + write(node, 0) + draw(st.sampled_from(["", " "]))


@SETTINGS
@given(ANY_TREES.flatmap(lambda node: st.tuples(st.just(node), spellings(node))))
def test_any_spelling_parses_to_the_same_tree(pair: tuple[Node, str]) -> None:
    node, text = pair
    assert parse(text) == node
    assert parse(format_query(parse(text))) == parse(text)


# -- SQL -----------------------------------------------------------------------------------

INJECTED = "r'; DROP TABLE raw; --"

METADATA = sa.MetaData()
RAW = sa.Table(
    "raw",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("exposure", sa.Integer, nullable=False),
    sa.Column("detector", sa.Integer, nullable=False),
    sa.Column("band", sa.String(32), nullable=False),
    sa.Column("day_obs", sa.Integer, nullable=False),
    sa.Column("seeing", sa.Float, nullable=True),
    sa.Column("science", sa.Boolean, nullable=False),
)
COLUMNS: dict[str, sa.ColumnElement[Any]] = {c.name: c for c in RAW.c if c.name != "id"}
COLUMNS["exposure.day_obs"] = RAW.c.day_obs

BANDS = ["g", "r", "i", "z", "y", "u", INJECTED]
INSTRUMENTS = ["MegaPrime", "HSC", "LSSTCam"]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(56):
        rows.append(
            {
                "id": i,
                "instrument": INSTRUMENTS[i % 3],
                "exposure": 1000 + i,
                "detector": i % 10,
                "band": BANDS[i % 6] if i != 55 else INJECTED,
                "day_obs": 20240101 + i // 7,
                "seeing": None if i % 9 == 0 else 0.5 + (i % 13) / 10,
                "science": i % 3 != 0,
            }
        )
    return rows


ROWS = _rows()


def data_id(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "exposure.day_obs": row["day_obs"]}


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    METADATA.create_all(eng)
    with eng.begin() as conn:
        conn.execute(RAW.insert(), ROWS)
    yield eng
    eng.dispose()


def sql_ids(engine: sa.Engine, node: Node) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(RAW.c.id).where(to_sqlalchemy(node, COLUMNS))).scalars())


def python_ids(node: Node) -> set[int]:
    return {row["id"] for row in ROWS if evaluate(node, data_id(row))}


SQL_QUERIES = [
    "",
    "instrument='MegaPrime' AND exposure IN (1001, 1002, 1003, 1004) AND detector < 4 AND band='r'",
    "exposure IN (1000..1010) OR (detector = 3 AND band != 'g')",
    "NOT (band IN ('g', 'r'))",
    "band NOT IN ('g', 'r')",
    "exposure IN (1000..1055:7, 1001)",
    "exposure NOT IN (1000..1055:7, 1001)",
    "exposure.day_obs >= 20240105",
    "day_obs = 20240103 AND NOT science = TRUE",
    "science = FALSE OR seeing > 1.2",
    "seeing < 1.0",
    "NOT seeing < 1.0",
    "seeing IN (0.6, 0.7)",
    "seeing NOT IN (0.6, 0.7)",
    "detector < 3.5 AND detector >= 1",
    "5 < detector",
    "exposure > detector",
    "seeing > detector",
    "band = instrument",
    "band <> 'r' AND band < 'u'",
    "instrument >= 'LSSTCam'",
    "1 = 1",
    "'a' > 'b' OR detector = 0",
    "detector IN (-5..2, 8..100:4)",
    "detector IN (2.0)",
    f"band = '{INJECTED.replace(chr(39), chr(39) * 2)}'",
]


@pytest.mark.parametrize("text", SQL_QUERIES)
def test_sql_matches_evaluate(engine: sa.Engine, text: str) -> None:
    node = parse(text)
    expected = python_ids(node)
    assert sql_ids(engine, node) == expected
    assert sql_ids(engine, parse(format_query(node))) == expected


def test_the_fixture_queries_select_something_and_not_everything() -> None:
    sizes = [len(python_ids(parse(text))) for text in SQL_QUERIES[1:]]
    assert sum(0 < size < len(ROWS) for size in sizes) >= len(sizes) - 4


INT_KEYS = ["exposure", "detector", "day_obs", "exposure.day_obs"]
STRING_KEYS = ["instrument", "band"]
SMALL_INTS = st.one_of(st.integers(995, 1060), st.integers(-3, 12), st.integers(20240099, 20240110))
NUMBERS = st.one_of(
    SMALL_INTS,
    st.integers(-(10**9), 10**9),
    st.sampled_from([0.5, 0.6, 1.0, 1.2, 1.7, 3.0, 1001.0]),
    st.floats(-1e6, 1e6, allow_nan=False),
)
STRINGS = st.one_of(
    st.sampled_from(BANDS + INSTRUMENTS + ["", "R", "Mega"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5),
)
SMALL_RANGES = st.builds(
    lambda start, length, stride: Range(start, start + length, stride),
    st.one_of(st.integers(990, 1060), st.integers(-5, 12), st.integers(20240095, 20240110)),
    st.integers(0, 30),
    st.integers(1, 6),
)


def _conditions(
    keys: list[str], values: st.SearchStrategy[Any], items: st.SearchStrategy[Any]
) -> st.SearchStrategy[Node]:
    key = st.sampled_from(keys).map(Identifier)
    value = values.map(Literal)
    return st.one_of(
        st.builds(Comparison, OPS, key, value),
        st.builds(Comparison, OPS, value, key),
        st.builds(Comparison, OPS, key, key),
        st.builds(In, key, st.lists(items, min_size=1, max_size=4).map(tuple), st.booleans()),
    )


TYPED_LEAVES = st.one_of(
    _conditions(INT_KEYS, NUMBERS, st.one_of(NUMBERS.map(Literal), SMALL_RANGES)),
    _conditions(INT_KEYS + ["seeing"], NUMBERS, NUMBERS.map(Literal)),
    _conditions(STRING_KEYS, STRINGS, STRINGS.map(Literal)),
    _conditions(["science"], st.booleans(), st.booleans().map(Literal)),
    st.builds(Comparison, OPS, SMALL_INTS.map(Literal), SMALL_INTS.map(Literal)),
)
TYPED_TREES = st.recursive(
    TYPED_LEAVES,
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=TYPED_TREES)
def test_random_queries_sql_matches_evaluate(engine: sa.Engine, node: Node) -> None:
    assert sql_ids(engine, node) == python_ids(node), format_query(node)


def test_unknown_key_in_sql_lists_known_keys() -> None:
    with pytest.raises(UnknownKeyError) as caught:
        to_sqlalchemy(parse("band = 'r' AND filter = 'r'"), COLUMNS)
    assert caught.value.key == "filter"
    assert "'filter'" in str(caught.value)
    assert "known keys: band, day_obs, detector, exposure, exposure.day_obs" in str(caught.value)

    resolve = resolver_from_columns({"band": RAW.c.band})
    with pytest.raises(UnknownKeyError, match="known keys: band$"):
        to_sqlalchemy(parse("visit = 1"), resolve)


def test_column_collection_as_resolver() -> None:
    assert str(to_sqlalchemy(parse("band = 'r'"), RAW.c).compile()) == "raw.band = :param_1"
    with pytest.raises(UnknownKeyError, match="known keys: band, day_obs, detector, exposure, id, "):
        to_sqlalchemy(parse("visit = 1"), RAW.c)


def test_unknown_key_error_survives_pickling() -> None:
    error = UnknownKeyError("visit", ["band", "exposure"])
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.key, clone.known, str(clone)) == ("visit", ("band", "exposure"), str(error))


def test_plain_key_error_from_a_resolver_becomes_unknown_key() -> None:
    resolve: Callable[[str], Any] = RAW.c.__getitem__
    assert str(to_sqlalchemy(parse("band = 'r'"), resolve).compile()) == "raw.band = :param_1"
    with pytest.raises(UnknownKeyError) as caught:
        to_sqlalchemy(parse("visit = 1"), resolve)
    assert str(caught.value) == "unknown key 'visit' in data query"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("exposure = 'r'", "cannot compare key 'exposure' (an integer) with a string 'r'"),
        ("band = 3", "cannot compare key 'band' (a string) with an integer 3"),
        ("'HSC' < detector", "cannot compare a string 'HSC' with key 'detector' (an integer)"),
        ("band IN ('r', 1)", "cannot compare key 'band' (a string) with an integer 1 in an IN list"),
        ("exposure NOT IN (1001, 'x')", "key 'exposure' (an integer)"),
        ("band IN (1..3)", "range such as 1..3 needs an integer, not key 'band' (a string)"),
        ("seeing IN (1..3)", "not key 'seeing' (a float)"),
        ("science = 1", "key 'science' (a boolean) with an integer 1"),
        ("band = detector", "key 'band' (a string) with key 'detector' (an integer)"),
        ("1 = 'x'", "cannot compare an integer 1 with a string 'x'"),
    ],
)
def test_sql_type_errors(text: str, fragment: str) -> None:
    with pytest.raises(DataQueryTypeError) as caught:
        to_sqlalchemy(parse(text), COLUMNS)
    assert fragment in str(caught.value)


def test_untyped_columns_are_not_type_checked() -> None:
    untyped = {"band": sa.column("band"), "visit": sa.column("visit")}
    compiled = str(to_sqlalchemy(parse("visit IN (1..3) OR band = 1"), untyped).compile())
    assert compiled == "visit BETWEEN :param_1 AND :param_2 OR band = :param_3"


INJECTIONS = [
    "band = 'r''; DROP TABLE raw; --'",
    "band = \"r'; DROP TABLE raw; --\"",
    "band = 'x'' OR ''1''=''1'",
    "instrument IN ('HSC''); DELETE FROM raw; --', 'y')",
    "band = 'r\"; DROP TABLE raw; --'",
    "band = '); DROP TABLE raw; SELECT ('",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_attempts_are_plain_values(engine: sa.Engine, text: str) -> None:
    node = parse(text)
    assert isinstance(node, (Comparison, In))
    expected = python_ids(node)
    assert sql_ids(engine, node) == expected
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RAW)).scalar_one() == len(ROWS)


def test_backslash_is_not_an_escape() -> None:
    assert parse("band = 'r\\'") == cmp("=", "band", "r\\")
    # The doubled quote keeps everything up to the last quote inside one value.
    assert parse("band = '\\'' OR 1=1 --'") == cmp("=", "band", "\\' OR 1=1 --")
    with pytest.raises(DataQuerySyntaxError) as caught:
        parse("band = '\\' OR 1=1 --'")
    assert caught.value.column == len("band = '\\' OR 1=1 --")
    assert "unterminated string" in caught.value.reason


def test_injected_looking_band_matches_only_its_own_row(engine: sa.Engine) -> None:
    assert sql_ids(engine, parse("band = 'r''; DROP TABLE raw; --'")) == {55}
    assert sql_ids(engine, parse("band = 'x'' OR ''1''=''1'")) == set()


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("band = 'r''; DROP TABLE raw; --'", [INJECTED, "DROP"]),
        (
            "instrument = 'MegaPrime' AND exposure IN (987654, 123123..123199:3)",
            ["MegaPrime", 987654, 123123, 123199],
        ),
        ("seeing < 0.123456 OR detector >= 424242", [0.123456, 424242]),
        ("science = TRUE AND band NOT IN ('zzz', 'qqq')", ["zzz", "qqq", "true", "TRUE"]),
        ("4242 < detector", [4242]),
        ("'needle' = 'haystack'", ["needle", "haystack"]),
    ],
)
def test_compiled_sql_contains_parameters_not_values(text: str, values: list[Any]) -> None:
    statement = sa.select(RAW.c.id).where(to_sqlalchemy(parse(text), COLUMNS))
    compiled = statement.compile()
    where = str(compiled).split("WHERE", 1)[1]
    for value in values:
        assert str(value) not in where
    bound = set(compiled.params.values())
    for value in values:
        if value not in ("DROP", "true", "TRUE"):
            assert value in bound


def test_empty_query_compiles_to_true(engine: sa.Engine) -> None:
    assert sql_ids(engine, parse("")) == {row["id"] for row in ROWS}
