"""Unit tests for transforms.parse: JSON lines -> Arrow rows + dead letters.

Each chunk is written by hand; every line carries its own expectation (a kept row with canonical values,
a dead letter with stage and reason, or a blank line that is not a record). The checks that every test
shares are in ``_check``: records = rows + dead letters, 1-based positions = first_line + line index,
payloads = the raw line.
"""
import json

import orjson
import pyarrow as pa
import pytest

from transforms import reasons
from transforms.parse import (
    BLANK,
    PARSED_REVIEW_SCHEMA,
    STYLE_TYPE,
    Chunk,
    classify_line,
    coerce_review,
    judge_review_line,
    parse_reviews,
    raw_payloads,
    struct_to_map,
)

SOURCE = "abfs://reviews/partition_1/part-0001.json"


def good(asin, **fields):
    obj = {"asin": asin, "reviewerID": "R" + asin, "overall": 5.0, "unixReviewTime": 1388534400,
           "reviewText": "text of " + asin, "summary": "sum", "verified": True}
    obj.update(fields)
    return json.dumps(obj).encode()


def _parse(lines, first_line=1, sep=b"\n", trailing=True, **kw):
    data = sep.join(lines) + (sep if trailing else b"")
    return parse_reviews(Chunk(data, SOURCE, first_line), **kw)


def _rows_by_position(batch):
    return {r["source_position"]: r for r in batch.table.to_pylist()}


def _dead_by_position(dead):
    out = {}
    for d in dead:
        assert d["source_position"] not in out, "one dead letter per line"
        out[d["source_position"]] = d
    return out


def _check(batch, dead, records, first_line=1, n_lines=None):
    """Invariants every parse result satisfies."""
    assert batch.table.schema == PARSED_REVIEW_SCHEMA
    assert records == batch.table.num_rows + len(dead)
    assert batch.source == SOURCE
    rows = batch.table.to_pylist()
    row_positions = [r["source_position"] for r in rows]
    dead_positions = [d["source_position"] for d in dead]
    assert len(set(row_positions)) == len(row_positions), "a line yields at most one row"
    assert not set(row_positions) & set(dead_positions), "a line is a row or a dead letter, not both"
    for r in rows:
        assert r["source_position"] == first_line + r["_row"]
    for d in dead:
        assert d["record_type"] == "review"
        assert d["source"] == SOURCE
        assert d["source_position"] >= first_line
        if n_lines is not None:
            assert d["source_position"] < first_line + n_lines
        assert d["stage"] in (reasons.PARSE, reasons.CLEAN)
        if d["stage"] == reasons.PARSE:
            assert d["reason"] in reasons.PARSE_REASONS
        else:
            assert d["reason"] in reasons.REVIEW_CLEAN_REASONS


# ---------------------------------------------------------------------------------------------------
# every dirty kind, one line each, between good lines

DIRTY = [
    # (name, line, stage, reason)
    ("truncated", b'{"asin": "X1", "reviewerID": "R", "overall": 5.0, "reviewText": "cut he',
     reasons.PARSE, reasons.MALFORMED_JSON),
    ("truncated_ending_in_brace", b'{"asin": "X2", "style": {"Size:": "L"}',
     reasons.PARSE, reasons.MALFORMED_JSON),
    ("unterminated_string_ending_in_brace", b'{"asin": "X3", "reviewText": "great}',
     reasons.PARSE, reasons.MALFORMED_JSON),
    ("log_line", b"2023-07-01 12:00:01,123 ERROR reader: connection reset by peer",
     reasons.PARSE, reasons.MALFORMED_JSON),
    ("html_page", b"<html><head><title>503 Service Unavailable</title></head><body>busy</body></html>",
     reasons.PARSE, reasons.HTML_PAYLOAD),
    ("html_fragment", b"<!DOCTYPE html>", reasons.PARSE, reasons.HTML_PAYLOAD),
    ("invalid_utf8_valid_json", b'{"asin": "X4", "reviewerID": "R\xff\xfe", "overall": 4.0}',
     reasons.PARSE, reasons.INVALID_UTF8),
    ("invalid_utf8_latin1", b'{"asin": "X5", "reviewText": "caf\xe9"}', reasons.PARSE, reasons.INVALID_UTF8),
    ("json_array", b'[{"asin": "X6"}]', reasons.PARSE, reasons.NOT_AN_OBJECT),
    ("json_string", b'"just a string"', reasons.PARSE, reasons.NOT_AN_OBJECT),
    ("json_number", b"42", reasons.PARSE, reasons.NOT_AN_OBJECT),
    ("json_null", b"null", reasons.PARSE, reasons.NOT_AN_OBJECT),
    ("review_text_object", good("X7", reviewText={"text": "x"}), reasons.PARSE, reasons.WRONG_TYPE),
    ("image_number", good("X8", image=88), reasons.PARSE, reasons.WRONG_TYPE),
    ("verified_number", good("X9", verified=1), reasons.PARSE, reasons.WRONG_TYPE),
    ("unix_time_float", good("XA", unixReviewTime=1388534400.5), reasons.PARSE, reasons.WRONG_TYPE),
    ("unix_time_words", good("XB", unixReviewTime="yesterday"), reasons.PARSE, reasons.WRONG_TYPE),
    ("overall_bool", good("XC", overall=True), reasons.PARSE, reasons.WRONG_TYPE),
    ("overall_five", good("XD", overall="five"), reasons.CLEAN, reasons.OVERALL_NOT_NUMERIC),
    ("overall_nan_string", good("XE", overall="NaN"), reasons.CLEAN, reasons.OVERALL_NOT_NUMERIC),
]


@pytest.mark.parametrize("name, line, stage, reason", DIRTY, ids=[d[0] for d in DIRTY])
def test_each_dirty_kind_between_good_lines(name, line, stage, reason):
    lines = [good("G1"), good("G2"), line, good("G3"), good("G4")]
    batch, dead, records = _parse(lines, first_line=11)
    _check(batch, dead, records, first_line=11, n_lines=len(lines))
    assert records == 5
    assert [(d["stage"], d["reason"], d["source_position"]) for d in dead] == [(stage, reason, 13)]
    assert dead[0]["payload"] == line.decode("utf-8", "backslashreplace")
    assert dead[0]["payload_bytes"] == len(line)
    assert dead[0]["payload_truncated"] is False
    assert sorted(_rows_by_position(batch)) == [11, 12, 14, 15]
    assert sorted(batch.table["asin"].to_pylist()) == ["G1", "G2", "G3", "G4"]


@pytest.mark.parametrize("name, line, stage, reason", DIRTY, ids=[d[0] for d in DIRTY])
def test_each_dirty_kind_alone(name, line, stage, reason):
    batch, dead, records = _parse([line])
    _check(batch, dead, records)
    assert records == 1 and batch.table.num_rows == 0
    assert [(d["stage"], d["reason"], d["source_position"]) for d in dead] == [(stage, reason, 1)]


def test_wrong_type_detail_names_the_field():
    _, dead, _ = _parse([good("A", reviewText={"x": 1}), good("B", image=88), good("C", overall=[5])])
    details = {d["source_position"]: d["detail"] for d in dead}
    assert details[1].startswith("reviewText")
    assert details[2].startswith("image")
    assert details[3].startswith("overall")


def test_invalid_utf8_payload_is_backslash_escaped():
    line = b'{"asin": "A", "reviewText": "bad \xff byte"}'
    _, dead, _ = _parse([good("G"), line])
    (d,) = dead
    assert d["reason"] == reasons.INVALID_UTF8
    assert d["payload"] == '{"asin": "A", "reviewText": "bad \\xff byte"}'
    assert d["payload_bytes"] == len(line)


def test_too_large_line():
    pad = "x" * 1000
    big = good("BIG", reviewText=pad)
    assert len(big) > 1024
    # a line of exactly the limit is fine, one byte more is too large
    exact = good("OK", reviewText="")
    exact = good("OK", reviewText="y" * (1024 - len(exact)))
    assert len(exact) == 1024
    batch, dead, records = _parse([good("G1"), big, exact, good("G2")], max_record_bytes=1024)
    _check(batch, dead, records)
    assert [(d["stage"], d["reason"], d["source_position"]) for d in dead] == [
        (reasons.PARSE, reasons.TOO_LARGE, 2)]
    assert dead[0]["payload_bytes"] == len(big)
    assert sorted(batch.table["asin"].to_pylist()) == ["G1", "G2", "OK"]


def test_payload_truncation():
    line = good("T", reviewText="\u00e9" * 100)  # multi-byte characters: the cut may split one
    batch, dead, _ = _parse([line], max_record_bytes=1024, max_payload_bytes=51)
    assert batch.table.num_rows == 1 and not dead
    bad = b"{" + line  # malformed now
    _, dead, _ = _parse([bad], max_payload_bytes=51)
    (d,) = dead
    assert d["payload_truncated"] is True
    assert d["payload_bytes"] == len(bad)
    assert d["payload"] == bad[:51].decode("utf-8", "backslashreplace")
    assert d["payload"].startswith('{{"asin": "T"')


def test_too_large_payload_is_truncated():
    big = good("BIG", reviewText="z" * 3000)
    _, dead, _ = _parse([big], max_record_bytes=1024, max_payload_bytes=100)
    (d,) = dead
    assert d["reason"] == reasons.TOO_LARGE
    assert d["payload_bytes"] == len(big)
    assert d["payload_truncated"] is True
    assert d["payload"] == big[:100].decode()


# ---------------------------------------------------------------------------------------------------
# coercions that keep the row

def test_coercions_keep_rows_with_canonical_types():
    lines = [
        good("A", overall="4.0"),
        good("B", verified="true"),
        good("C", verified=" FALSE "),
        good("D", unixReviewTime="100"),
        good("E", vote=3),
        good("F", style=json.dumps({"Size:": " Large", "Color:": "Red"})),
        good("G", image="http://img/1.jpg"),
        good("H", overall=3),
        good("J", reviewerID=12345),
        good("K", overall=" 2.5 "),
    ]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == [] and records == len(lines) == batch.table.num_rows
    rows = {r["asin"]: r for r in batch.table.to_pylist()}
    assert rows["A"]["overall"] == 4.0
    assert rows["B"]["verified"] is True
    assert rows["C"]["verified"] is False
    assert rows["D"]["unixReviewTime"] == 100
    assert rows["E"]["vote"] == "3"
    assert dict(rows["F"]["style"]) == {"Size:": " Large", "Color:": "Red"}
    assert rows["G"]["image"] == ["http://img/1.jpg"]
    assert rows["H"]["overall"] == 3.0
    assert rows["J"]["reviewerID"] == "12345"
    assert rows["K"]["overall"] == 2.5


def test_integral_float_time_is_coerced():
    # 1388534400.0 is an integer written as a float: the int rule keeps it
    lines = [good("A"), good("I", unixReviewTime=1388534400.0), good("B")]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == []
    assert _rows_by_position(batch)[2]["unixReviewTime"] == 1388534400


def test_integral_float_time_before_an_arrow_detected_defect():
    lines = [good("A"), good("I", unixReviewTime=1388534400.0), good("B", verified="true"),
             good("C", reviewText={"x": 1}), good("D")]
    try:
        batch, dead, records = _parse(lines)
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"parse_reviews raised {type(err).__name__}: {err}") from err
    _check(batch, dead, records)
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.WRONG_TYPE, 4)]
    rows = _rows_by_position(batch)
    assert sorted(rows) == [1, 2, 3, 5]
    assert rows[2]["unixReviewTime"] == 1388534400 and rows[3]["verified"] is True


def test_types_of_the_parsed_table():
    batch, _, _ = _parse([good("A", overall="4.0", style={"a": "b"}), good("B", image=["u"], helpful=[1, 2])])
    t = batch.table
    assert t.schema.field("overall").type == pa.float64()
    assert t.schema.field("style").type == STYLE_TYPE
    assert t.schema.field("unixReviewTime").type == pa.int64()
    rows = {r["asin"]: r for r in t.to_pylist()}
    assert rows["B"]["helpful"] == [1, 2]
    assert dict(rows["A"]["style"]) == {"a": "b"}


def test_style_object_becomes_map_of_non_null_values():
    lines = [good("A", style={"Size:": "L", "Color:": None}),
             good("B", style={"Format:": "Kindle", "Count:": 2}),
             good("C"),
             good("D", style={})]
    batch, dead, _ = _parse(lines)
    assert dead == []
    rows = {r["asin"]: r for r in batch.table.to_pylist()}
    assert dict(rows["A"]["style"]) == {"Size:": "L"}
    assert dict(rows["B"]["style"]) == {"Format:": "Kindle", "Count:": "2"}
    assert rows["C"]["style"] is None
    assert dict(rows["D"]["style"]) == {}


def test_style_non_json_string_after_a_style_object_is_wrong_type():
    lines = [good("A", style={"Size:": "L"}), good("B", style="Size: L"), good("C", style={"Size:": "M"})]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.WRONG_TYPE, 2)]
    assert sorted(batch.table["asin"].to_pylist()) == ["A", "C"]


@pytest.mark.parametrize("style", ["Size: L", 5, ["L"]], ids=["non_json_string", "number", "list"])
def test_style_wrong_type_when_no_line_has_a_style_object(style):
    lines = [good("A"), good("B", style=style), good("C")]
    try:
        batch, dead, records = _parse(lines)
    except Exception as err:  # noqa: BLE001 - the bug: the chunk fails instead of one dead letter
        raise AssertionError(f"parse_reviews raised {type(err).__name__}: {err}") from err
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.WRONG_TYPE, 2)]
    assert sorted(batch.table["asin"].to_pylist()) == ["A", "C"]


def test_style_wrong_type_before_a_style_object():
    lines = [good("A", style="not json"), good("B", style={"Size:": "L"})]
    try:
        batch, dead, records = _parse(lines)
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"parse_reviews raised {type(err).__name__}: {err}") from err
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.WRONG_TYPE, 1)]
    assert batch.table["asin"].to_pylist() == ["B"]


def test_image_list_keeps_only_strings():
    # the same line through the Arrow path (A) and the one-by-one path (B, a suspect for its string rating)
    image = ["u1", 88, None, "u2"]
    batch, dead, _ = _parse([good("A", image=image), good("B", image=image, overall="5")])
    assert dead == []
    rows = {r["asin"]: r for r in batch.table.to_pylist()}
    assert rows["A"]["image"] == rows["B"]["image"] == ["u1", "u2"]


def test_extra_fields_are_ignored():
    lines = [good("A", reviewTime="01 1, 2014", extra={"nested": [1]}), good("B", reviewTime=5)]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == [] and sorted(batch.table["asin"].to_pylist()) == ["A", "B"]
    assert batch.table.schema == PARSED_REVIEW_SCHEMA


# ---------------------------------------------------------------------------------------------------
# line structure

def test_crlf_line_endings():
    lines = [good("A"), good("B", overall="4.0"), b"not json", good("C"), good("D", verified="false")]
    batch, dead, records = _parse(lines, sep=b"\r\n")
    _check(batch, dead, records)
    assert records == 5
    (d,) = dead
    assert (d["reason"], d["source_position"], d["payload"], d["payload_bytes"]) == (
        reasons.MALFORMED_JSON, 3, "not json", 8)
    rows = _rows_by_position(batch)
    assert {p: r["asin"] for p, r in rows.items()} == {1: "A", 2: "B", 4: "C", 5: "D"}
    assert rows[2]["overall"] == 4.0 and rows[5]["verified"] is False
    assert all(not r["reviewText"].endswith("\r") for r in rows.values())


def test_crlf_many_lines_with_gaps():
    # >= 64 pending lines that are not contiguous: the numpy gather path, with CR line ends
    lines = [good(f"A{i:03d}") for i in range(120)]
    lines[5] = b"garbage"
    lines[60] = good("A060", verified="yes")     # caught by Arrow, not by the suspicion test
    lines[90] = good("A090", overall="4.5")      # suspect (string overall), kept
    lines[119] = good("A119", unixReviewTime="7")  # Arrow type change in the last line, kept
    batch, dead, records = _parse(lines, sep=b"\r\n", first_line=1001)
    _check(batch, dead, records, first_line=1001, n_lines=120)
    assert records == 120
    assert [(d["reason"], d["source_position"]) for d in sorted(dead, key=lambda d: d["source_position"])] == [
        (reasons.MALFORMED_JSON, 1006), (reasons.WRONG_TYPE, 1061)]
    rows = _rows_by_position(batch)
    assert len(rows) == 118
    assert all(rows[1001 + i]["asin"] == f"A{i:03d}" for i in range(120) if i not in (5, 60))
    assert rows[1091]["overall"] == 4.5 and rows[1120]["unixReviewTime"] == 7


def test_blank_and_whitespace_lines_are_not_records():
    lines = [b"", good("A"), b"   ", b"\t", good("B"), b"", b" \t \r", good("C")]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == []
    assert records == 3
    assert {p: r["asin"] for p, r in _rows_by_position(batch).items()} == {2: "A", 5: "B", 8: "C"}


def test_whitespace_around_a_json_object_is_fine():
    batch, dead, records = _parse([b"  " + good("A") + b"  ", b"\t" + good("B")])
    _check(batch, dead, records)
    assert dead == [] and sorted(batch.table["asin"].to_pylist()) == ["A", "B"]


def test_chunk_without_trailing_newline():
    lines = [good("A"), b"oops", good("B")]
    batch, dead, records = _parse(lines, trailing=False)
    _check(batch, dead, records)
    assert records == 3
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.MALFORMED_JSON, 2)]
    assert {p: r["asin"] for p, r in _rows_by_position(batch).items()} == {1: "A", 3: "B"}


def test_last_line_without_newline_is_bad():
    batch, dead, records = _parse([good("A"), b'{"asin": "B"'], trailing=False)
    _check(batch, dead, records)
    assert [(d["reason"], d["source_position"], d["payload"]) for d in dead] == [
        (reasons.MALFORMED_JSON, 2, '{"asin": "B"')]


def test_empty_chunk():
    batch, dead, records = parse_reviews(Chunk(b"", SOURCE, 1))
    assert (batch.table.num_rows, dead, records) == (0, [], 0)
    assert batch.table.schema == PARSED_REVIEW_SCHEMA


def test_only_blank_lines():
    batch, dead, records = _parse([b"", b"  ", b""])
    assert (batch.table.num_rows, dead, records) == (0, [], 0)


def test_lines_array_and_raw_payloads():
    lines = [good("A"), b"bad", good("B", overall="3")]
    batch, _, _ = _parse(lines)
    assert batch.lines.type == pa.binary()
    assert len(batch.lines) == 3
    assert [v.rstrip(b"\n") for v in batch.lines.to_pylist()] == lines
    row_of = {r["asin"]: r["_row"] for r in batch.table.to_pylist()}
    assert [p.rstrip(b"\n") for p in raw_payloads(batch, [row_of["B"], row_of["A"]])] == [lines[2], lines[0]]


# ---------------------------------------------------------------------------------------------------
# per-line recovery: a bad line never takes a good neighbour with it

def test_several_defects_start_middle_end():
    n = 40
    lines = [good(f"G{i:02d}") for i in range(n)]
    defects = {
        0: (b'{"asin": "bad0"', reasons.MALFORMED_JSON),                 # suspect: does not end in }
        1: (good("bad1", verified="maybe"), reasons.WRONG_TYPE),         # Arrow-detected
        19: (good("bad19", reviewText=["a"]), reasons.WRONG_TYPE),        # Arrow-detected
        20: (b'{"asin": "bad20\xff"}', reasons.INVALID_UTF8),           # looks like JSON, bad bytes
        21: (b'{"asin": "bad21", "x": tru}', reasons.MALFORMED_JSON),    # ends in }, Arrow-detected
        38: (b"[1, 2, 3]", reasons.NOT_AN_OBJECT),
        39: (good("bad39", image={"u": 1}), reasons.WRONG_TYPE),          # the very last line
    }
    coerced = {2: good("C02", overall="1.0"), 22: good("C22", unixReviewTime="5"), 37: good("C37", vote=12)}
    for i, (line, _) in defects.items():
        lines[i] = line
    for i, line in coerced.items():
        lines[i] = line
    batch, dead, records = _parse(lines, first_line=501)
    _check(batch, dead, records, first_line=501, n_lines=n)
    assert records == n
    got = {d["source_position"]: d["reason"] for d in dead}
    assert got == {501 + i: reason for i, (_, reason) in defects.items()}
    rows = _rows_by_position(batch)
    expected_rows = {501 + i for i in range(n)} - {501 + i for i in defects}
    assert set(rows) == expected_rows
    for i in range(n):
        if i in defects:
            continue
        expected_asin = json.loads(lines[i])["asin"]
        assert rows[501 + i]["asin"] == expected_asin
    assert rows[503]["overall"] == 1.0
    assert rows[523]["unixReviewTime"] == 5
    assert rows[538]["vote"] == "12"


def test_arrow_type_change_in_last_line():
    lines = [good(f"G{i}") for i in range(10)] + [good("LAST", verified="true", unixReviewTime="123")]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == [] and records == 11 == batch.table.num_rows
    last = _rows_by_position(batch)[11]
    assert (last["asin"], last["verified"], last["unixReviewTime"]) == ("LAST", True, 123)


def test_arrow_type_change_in_first_line():
    lines = [good("FIRST", unixReviewTime="9")] + [good(f"G{i}") for i in range(5)]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert dead == [] and batch.table.num_rows == 6
    assert _rows_by_position(batch)[1]["unixReviewTime"] == 9


def test_every_line_bad():
    lines = [b"x", b"[1]", b"<p>", good("W", image=1)]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert batch.table.num_rows == 0 and records == 4
    assert [d["reason"] for d in sorted(dead, key=lambda d: d["source_position"])] == [
        reasons.MALFORMED_JSON, reasons.NOT_AN_OBJECT, reasons.HTML_PAYLOAD, reasons.WRONG_TYPE]


def test_consecutive_arrow_detected_defects():
    lines = [good("A"), good("B", verified=2), good("C", verified=3), good("D", verified="true"), good("E")]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    assert sorted(d["source_position"] for d in dead) == [2, 3]
    assert sorted(batch.table["asin"].to_pylist()) == ["A", "D", "E"]


@pytest.mark.parametrize("value", ["--5", "\u00b2"])
def test_unparseable_digit_string_time_is_wrong_type(value):
    lines = [good("A"), good("B", unixReviewTime=value), good("C")]
    try:
        batch, dead, records = _parse(lines)
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"parse_reviews raised {type(err).__name__}: {err}") from err
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.WRONG_TYPE, 2)]
    assert sorted(batch.table["asin"].to_pylist()) == ["A", "C"]


@pytest.mark.parametrize("joined", [good("X") + b" " + good("Y"), good("X") + good("Y")], ids=["space", "none"])
def test_two_objects_on_one_line_is_malformed(joined):
    lines = [good("A"), joined, good("B")]
    try:
        batch, dead, records = _parse(lines)
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"parse_reviews raised {type(err).__name__}: {err}") from err
    assert classify_line(joined)[1].reason == reasons.MALFORMED_JSON  # what judging it alone says
    assert [(d["reason"], d["source_position"]) for d in dead] == [(reasons.MALFORMED_JSON, 2)]
    assert sorted(batch.table["asin"].to_pylist()) == ["A", "B"]


def test_nan_overall_literal_is_not_kept():
    line = b'{"asin": "A", "reviewerID": "R", "overall": NaN, "unixReviewTime": 1388534400}'
    assert classify_line(line)[1].reason == reasons.MALFORMED_JSON  # orjson: not JSON
    batch, dead, records = _parse([good("G"), line])
    assert records == 2
    assert batch.table["asin"].to_pylist() == ["G"]
    assert len(dead) == 1 and dead[0]["source_position"] == 2


# ---------------------------------------------------------------------------------------------------
# classify_line

@pytest.mark.parametrize("line, reason", [
    (b"{", reasons.MALFORMED_JSON),
    (b"hello world", reasons.MALFORMED_JSON),
    (b'{"a": 1,}', reasons.MALFORMED_JSON),
    (b"<html><body>503</body></html>", reasons.HTML_PAYLOAD),
    (b"  <div>x</div>", reasons.HTML_PAYLOAD),
    (b'{"a": "\xff"}', reasons.INVALID_UTF8),
    (b"<p>\xc3</p>", reasons.INVALID_UTF8),
    (b"[]", reasons.NOT_AN_OBJECT),
    (b'"s"', reasons.NOT_AN_OBJECT),
    (b"3.5", reasons.NOT_AN_OBJECT),
    (b"true", reasons.NOT_AN_OBJECT),
])
def test_classify_line_dead(line, reason):
    obj, verdict = classify_line(line)
    assert obj is None
    assert (verdict.stage, verdict.reason) == (reasons.PARSE, reason)
    assert verdict.record is None


@pytest.mark.parametrize("line", [b"", b"   ", b"\t\r\n"])
def test_classify_line_blank(line):
    assert classify_line(line) == (None, BLANK)


def test_classify_line_object():
    obj, verdict = classify_line(b'  {"asin": "A", "n": [1, 2]}  ')
    assert verdict is None and obj == {"asin": "A", "n": [1, 2]}


def test_classify_line_too_large_comes_first():
    line = b'{"a": "' + b"\xff" * 20 + b'"}'
    obj, verdict = classify_line(line, max_record_bytes=10)
    assert verdict.reason == reasons.TOO_LARGE
    assert classify_line(b"{}", max_record_bytes=2) == ({}, None)
    assert classify_line(b"{} ", max_record_bytes=2)[1].reason == reasons.TOO_LARGE


# ---------------------------------------------------------------------------------------------------
# coerce_review

def test_coerce_review_canonical_record():
    v = coerce_review({"asin": "A", "reviewerID": 7, "overall": "4.0", "verified": "True",
                       "unixReviewTime": "100", "vote": 3, "image": "u", "helpful": [3, 5],
                       "style": '{"Size:": "L", "n": 2, "gone": null}', "unknown": object()})
    assert v.reason is None and v.stage is None
    r = v.record
    assert r["asin"] == "A" and r["reviewerID"] == "7"
    assert r["overall"] == 4.0 and isinstance(r["overall"], float)
    assert r["verified"] is True
    assert r["unixReviewTime"] == 100
    assert r["vote"] == "3"
    assert r["image"] == ["u"]
    assert r["helpful"] == [3, 5]
    assert r["style"] == {"Size:": "L", "n": "2"}
    assert "unknown" not in r
    assert set(r) == set(PARSED_REVIEW_SCHEMA.names) - {"source_position", "_row"}


def test_coerce_review_absent_fields_are_none():
    r = coerce_review({}).record
    assert r.pop("schema_version") == "2018"  # a record with no field of any schema: see schema_versions
    assert all(v is None for v in r.values())


@pytest.mark.parametrize("helpful", [[1], [1, 2, 3], ["1", "2"], [True, False], "x", None])
def test_coerce_review_helpful_without_information(helpful):
    assert coerce_review({"helpful": helpful}).record["helpful"] is None


@pytest.mark.parametrize("obj, field", [
    ({"reviewText": {"a": 1}}, "reviewText"),
    ({"reviewText": ["a"]}, "reviewText"),
    ({"asin": True}, "asin"),
    ({"verified": 1}, "verified"),
    ({"verified": "yes"}, "verified"),
    ({"unixReviewTime": 1.5}, "unixReviewTime"),
    ({"unixReviewTime": "1.5"}, "unixReviewTime"),
    ({"unixReviewTime": True}, "unixReviewTime"),
    ({"image": 88}, "image"),
    ({"image": {"u": 1}}, "image"),
    ({"style": "Size: L"}, "style"),
    ({"style": "[1, 2]"}, "style"),
    ({"style": 5}, "style"),
    ({"overall": True}, "overall"),
    ({"overall": [5]}, "overall"),
    ({"overall": {"v": 5}}, "overall"),
])
def test_coerce_review_wrong_type(obj, field):
    v = coerce_review(obj)
    assert v.record is None
    assert (v.stage, v.reason) == (reasons.PARSE, reasons.WRONG_TYPE)
    assert v.detail.startswith(field)


@pytest.mark.parametrize("overall", ["five", "", "4 stars", "nan", "inf", "-Infinity"])
def test_coerce_review_overall_not_numeric(overall):
    v = coerce_review({"asin": "A", "overall": overall})
    assert v.record is None
    assert (v.stage, v.reason) == (reasons.CLEAN, reasons.OVERALL_NOT_NUMERIC)


@pytest.mark.parametrize("overall, expected", [(None, None), (0, 0.0), (7, 7.0), ("0", 0.0), (" 3.5 ", 3.5),
                                               (-1.5, -1.5)])
def test_coerce_review_overall_range_is_left_to_the_cleaner(overall, expected):
    assert coerce_review({"overall": overall}).record["overall"] == expected


@pytest.mark.parametrize("value, expected", [(100, 100), ("100", 100), (" 42 ", 42), ("-7", -7), (3.0, 3),
                                             (None, None)])
def test_coerce_review_time(value, expected):
    assert coerce_review({"unixReviewTime": value}).record["unixReviewTime"] == expected


@pytest.mark.parametrize("value", ["--5", "\u00b2"])
def test_coerce_review_bad_digit_string(value):
    try:
        v = coerce_review({"unixReviewTime": value})
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"coerce_review raised {type(err).__name__}: {err}") from err
    assert (v.stage, v.reason) == (reasons.PARSE, reasons.WRONG_TYPE)


def test_judge_review_line_combines_both():
    assert judge_review_line(b"") is BLANK
    assert judge_review_line(b"[1]").reason == reasons.NOT_AN_OBJECT
    assert judge_review_line(good("A", overall="five")).reason == reasons.OVERALL_NOT_NUMERIC
    assert judge_review_line(good("A", overall="2")).record["overall"] == 2.0


# ---------------------------------------------------------------------------------------------------
# struct_to_map

def _maps(arr):
    return [None if v is None else dict(v) for v in arr.to_pylist()]


def test_struct_to_map_non_null_fields():
    col = pa.array([{"Size:": "L", "Color:": None}, None, {"Size:": None, "Color:": "Red"},
                    {"Size:": None, "Color:": None}])
    assert pa.types.is_struct(col.type)
    out = struct_to_map(col)
    assert out.type == STYLE_TYPE
    assert _maps(out) == [{"Size:": "L"}, None, {"Color:": "Red"}, {}]


def test_struct_to_map_numeric_and_bool_children():
    col = pa.array([{"n": 2, "b": True}, {"n": None, "b": False}])
    assert _maps(struct_to_map(col)) == [{"n": "2", "b": "true"}, {"b": "false"}]


def test_struct_to_map_sliced_and_chunked():
    full = pa.array([{"a": "0", "b": None}, {"a": "1", "b": "x"}, None, {"a": None, "b": "y"}])
    assert _maps(struct_to_map(full.slice(1, 3))) == [{"a": "1", "b": "x"}, None, {"b": "y"}]
    chunked = pa.chunked_array([full.slice(0, 2), full.slice(2)])
    assert _maps(struct_to_map(chunked)) == [{"a": "0"}, {"a": "1", "b": "x"}, None, {"b": "y"}]


def test_struct_to_map_nested_values_fall_back_to_json():
    col = pa.array([{"dims": {"w": 1}, "name": "n"}, None])
    out = _maps(struct_to_map(col))
    assert out[1] is None
    assert out[0]["name"] == "n"
    assert orjson.loads(out[0]["dims"]) == {"w": 1}


def test_struct_to_map_empty_struct_type():
    col = pa.array([{}, None], type=pa.struct([]))
    assert _maps(struct_to_map(col)) == [{}, None]


def test_struct_to_map_other_input_types():
    assert _maps(struct_to_map(pa.nulls(2))) == [None, None]
    m = pa.array([[("k", "v")], None], type=STYLE_TYPE)
    assert _maps(struct_to_map(m)) == [{"k": "v"}, None]
    s = pa.array(['{"Size:": "L"}', None, "{}"])
    assert _maps(struct_to_map(s)) == [{"Size:": "L"}, None, {}]


def test_2014_helpful_written_as_integral_floats_keeps_its_votes():
    # real 2014 files (Electronics, Toys_and_Games, ...) write helpful as [1.0, 1.0] on some rows
    lines = [good("A", helpful=[3, 4]), good("F", helpful=[1.0, 2.0]), good("H", helpful=[0.5, 1.0])]
    batch, dead, records = _parse(lines)
    _check(batch, dead, records)
    rows = _rows_by_position(batch)
    assert [rows[i]["helpful"] for i in (1, 2, 3)] == [[3, 4], [1, 2], None]


def test_a_line_judged_before_arrow_meets_a_text_rating_is_not_judged_again():
    """Found by hypothesis (tests/composite/test_hostile_lines.py): the first line (a 2023 review whose text
    is an object, judged on its own as wrong_type) also holds a string "rating"; when Arrow then meets the
    second line's text rating, the chunk's text-rating lines are judged, and the first was judged again:
    two dead letters for one line. Only lines still pending are judged there now."""
    lines = [b'{"title": "t", "text": {"a": 1}, "asin": {}, "parent_asin": "B0PARENT01", "user_id": "U1", '
             b'"timestamp": 1588615855070, "rating": "<!-- c -->"}',
             b'{"reviewerID": "A1", "asin": "0000031852", "reviewText": "Nice", "overall": 4.0, "summary": "ok", '
             b'"unixReviewTime": 1398902400, "rating": "x"}']
    batch, dead, records = _parse(lines)
    assert records == 2
    assert [(d["source_position"], d["reason"]) for d in dead] == [(1, "wrong_type")]
    assert batch.table["source_position"].to_pylist() == [2]
