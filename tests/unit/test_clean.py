"""Unit tests for transforms.clean: rejection rules (with precedence) and value rules.

Every input is a hand-written JSON line run through ``parse_reviews`` then ``clean_reviews``, as in the
job. Expected values follow the module docstring of ``transforms.clean``; dates are computed with
``datetime`` in UTC, independently of Arrow.
"""
import datetime as dt
import json

import pyarrow as pa
import pytest

from transforms import reasons
from transforms.clean import clean_reviews
from transforms.parse import Chunk, parse_reviews
from transforms.schemas import CLEAN_REVIEW_SCHEMA

SOURCE = "abfs://reviews/partition_7/part-0003.json"
ABSENT = object()
BASE = {"asin": "B000001", "reviewerID": "R1", "overall": 5.0, "unixReviewTime": 1388534400,
        "reviewText": "Good stuff", "summary": "Nice", "verified": True, "reviewerName": "Ann"}


def line(**fields):
    obj = dict(BASE)
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not ABSENT}).encode()


def run(lines, first_line=1, **kw):
    batch, parse_dead, records = parse_reviews(Chunk(b"\n".join(lines) + b"\n", SOURCE, first_line))
    table, dead = clean_reviews(batch, **kw)
    assert table.schema == CLEAN_REVIEW_SCHEMA
    assert table.num_rows + len(dead) == batch.table.num_rows  # no parsed row is lost
    assert records == table.num_rows + len(dead) + len(parse_dead)
    return table, dead, parse_dead


def one_row(**fields):
    table, dead, parse_dead = run([line(**fields)])
    assert dead == [] and parse_dead == [], (dead, parse_dead)
    assert table.num_rows == 1
    return table.to_pylist()[0]


def _utc(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------------------------------------
# rejection rules

@pytest.mark.parametrize("fields, reason", [
    ({"asin": ABSENT}, reasons.MISSING_ASIN),
    ({"asin": None}, reasons.MISSING_ASIN),
    ({"asin": ""}, reasons.MISSING_ASIN),
    ({"asin": "  "}, reasons.MISSING_ASIN),
    ({"asin": "\t\n"}, reasons.MISSING_ASIN),
    ({"reviewerID": ABSENT}, reasons.MISSING_REVIEWER_ID),
    ({"reviewerID": None}, reasons.MISSING_REVIEWER_ID),
    ({"reviewerID": " "}, reasons.MISSING_REVIEWER_ID),
    ({"overall": ABSENT}, reasons.MISSING_OVERALL),
    ({"overall": None}, reasons.MISSING_OVERALL),
    ({"overall": 0}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": 0.0}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": "0"}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": 0.999}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": 5.001}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": 6}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": -1}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": "6.0"}, reasons.OVERALL_OUT_OF_RANGE),
    ({"unixReviewTime": ABSENT}, reasons.MISSING_REVIEW_TIME),
    ({"unixReviewTime": None}, reasons.MISSING_REVIEW_TIME),
])
def test_each_rejection_rule(fields, reason):
    bad = line(**{"asin": "BAD", **fields})
    lines = [line(asin="G1"), bad, line(asin="G2")]
    table, dead, parse_dead = run(lines, first_line=41)
    assert parse_dead == []
    assert [(d["stage"], d["reason"], d["source_position"]) for d in dead] == [(reasons.CLEAN, reason, 42)]
    d = dead[0]
    assert d["record_type"] == "review" and d["source"] == SOURCE
    assert d["payload"] == bad.decode() and d["payload_bytes"] == len(bad) and d["payload_truncated"] is False
    assert table["asin"].to_pylist() == ["G1", "G2"]
    assert table["source_position"].to_pylist() == [41, 43]


@pytest.mark.parametrize("overall", [1, 1.0, "1", 2.5, 5, 5.0, "5.0"])
def test_overall_boundaries_kept(overall):
    assert one_row(overall=overall)["overall"] == float(overall)


@pytest.mark.parametrize("fields, reason", [
    ({"asin": ABSENT, "reviewerID": ABSENT}, reasons.MISSING_ASIN),
    ({"asin": "  ", "reviewerID": None, "overall": None, "unixReviewTime": None}, reasons.MISSING_ASIN),
    ({"reviewerID": ABSENT, "overall": ABSENT}, reasons.MISSING_REVIEWER_ID),
    ({"reviewerID": "", "overall": 0, "unixReviewTime": ABSENT}, reasons.MISSING_REVIEWER_ID),
    ({"overall": ABSENT, "unixReviewTime": ABSENT}, reasons.MISSING_OVERALL),
    ({"overall": 0, "unixReviewTime": ABSENT}, reasons.OVERALL_OUT_OF_RANGE),
    ({"overall": 9, "unixReviewTime": None}, reasons.OVERALL_OUT_OF_RANGE),
])
def test_rejection_precedence(fields, reason):
    table, dead, _ = run([line(**fields)])
    assert table.num_rows == 0
    assert [d["reason"] for d in dead] == [reason]  # one dead letter per row: the first rule it fails


def test_overall_not_numeric_is_a_clean_stage_dead_letter_from_the_parser():
    bad = line(overall="five")
    table, dead, parse_dead = run([line(asin="G"), bad])
    assert dead == []
    assert [(d["stage"], d["reason"], d["source_position"], d["payload"]) for d in parse_dead] == [
        (reasons.CLEAN, reasons.OVERALL_NOT_NUMERIC, 2, bad.decode())]
    assert table["asin"].to_pylist() == ["G"]


def test_clean_dead_letter_payload_is_the_original_line():
    # odd spacing, key order and non-ASCII text: the payload is the raw line, not a re-serialisation
    raw = '{ "reviewerID":"R9" ,  "overall" : 0 , "asin":"A9", "reviewText":"caf\u00e9 \\u00e9", ' \
          '"unixReviewTime": 1 }'
    lines = [line(asin="G1"), raw.encode(), line(asin="G2")]
    table, dead, _ = run(lines, first_line=7)
    (d,) = dead
    assert d["reason"] == reasons.OVERALL_OUT_OF_RANGE
    assert d["source_position"] == 8
    assert d["payload"] == raw
    assert d["payload_bytes"] == len(raw.encode())


def test_clean_dead_letter_payload_of_a_coerced_row_with_crlf():
    # the parser appends coerced rows after the Arrow rows: the payload must still be that row's line
    bad = line(asin="BAD", overall="0", reviewText="zero stars")  # string overall: a coerced row
    lines = [line(asin="G1"), bad, line(asin="G2"), line(asin="G3", reviewerID=None)]
    batch, _, _ = parse_reviews(Chunk(b"\r\n".join(lines) + b"\r\n", SOURCE, 1))
    table, dead = clean_reviews(batch)
    got = {d["source_position"]: (d["reason"], d["payload"]) for d in dead}
    assert got == {2: (reasons.OVERALL_OUT_OF_RANGE, bad.decode()),
                   4: (reasons.MISSING_REVIEWER_ID, lines[3].decode())}
    assert sorted(table["asin"].to_pylist()) == ["G1", "G2"]


def test_clean_dead_letter_payload_truncated():
    bad = line(overall=0, reviewText="x" * 200)
    _, dead, _ = run([bad], max_payload_bytes=32)
    (d,) = dead
    assert d["payload"] == bad[:32].decode()
    assert d["payload_bytes"] == len(bad) and d["payload_truncated"] is True


def test_all_rows_rejected_gives_an_empty_clean_table():
    table, dead, _ = run([line(asin=None), line(overall=0), line(unixReviewTime=None)])
    assert table.num_rows == 0 and table.schema == CLEAN_REVIEW_SCHEMA
    assert sorted(d["reason"] for d in dead) == sorted(
        [reasons.MISSING_ASIN, reasons.OVERALL_OUT_OF_RANGE, reasons.MISSING_REVIEW_TIME])


# ---------------------------------------------------------------------------------------------------
# value rules

@pytest.mark.parametrize("fields, expected", [
    ({"vote": "1,234"}, 1234),
    ({"vote": "12"}, 12),
    ({"vote": 7}, 7),
    ({"vote": "2,000,000"}, 2000000),
    ({"vote": ABSENT}, 0),
    ({"vote": ABSENT, "helpful": [3, 5]}, 3),     # 2014 schema: helpful votes of total votes
    ({"vote": ABSENT, "helpful": [0, 0]}, 0),
    ({"vote": "12", "helpful": [3, 5]}, 12),      # a vote present wins
    ({"vote": "abc"}, None),
    ({"vote": ""}, None),
    ({"vote": "1.5"}, None),
    ({"vote": "-3"}, None),
])
def test_vote(fields, expected):
    assert one_row(**fields)["vote"] == expected


@pytest.mark.parametrize("epoch", [
    1388534400,   # 2014-01-01 00:00:00 UTC
    1388534399,   # 2013-12-31 23:59:59 UTC: one second before midnight
    1388620799,   # 2014-01-01 23:59:59 UTC
    1456790399,   # 2016-02-29 23:59:59 UTC (leap day)
    1456790400,   # 2016-03-01 00:00:00 UTC
    0,
])
def test_review_time_columns(epoch):
    expected = dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)
    row = one_row(unixReviewTime=epoch)
    assert row["unix_review_time"] == epoch
    assert row["review_time"] == expected
    assert row["review_date"] == expected.date()
    assert (row["year"], row["month"]) == (expected.year, expected.month)


def test_review_time_known_values():
    rows = {r["unix_review_time"]: r for r in run([line(unixReviewTime=t) for t in
                                                    (1388534400, 1388534399)])[0].to_pylist()}
    assert rows[1388534400]["review_time"] == _utc(2014, 1, 1, 0, 0, 0)
    assert rows[1388534400]["review_date"] == dt.date(2014, 1, 1)
    assert (rows[1388534400]["year"], rows[1388534400]["month"]) == (2014, 1)
    assert rows[1388534399]["review_date"] == dt.date(2013, 12, 31)
    assert (rows[1388534399]["year"], rows[1388534399]["month"]) == (2013, 12)


def test_review_time_from_a_string_epoch():
    row = one_row(unixReviewTime="1388534400")
    assert row["review_date"] == dt.date(2014, 1, 1)


def test_review_text_from_summary():
    row = one_row(reviewText=None, summary="Works <b>great</b> &amp; cheap")
    assert row["summary"] == "Works great & cheap"
    assert row["review_text"] == "Works great & cheap"
    assert row["review_text_from_summary"] is True
    assert row["review_length_words"] == 4


def test_review_text_absent_uses_summary():
    row = one_row(reviewText=ABSENT, summary="Short one")
    assert (row["review_text"], row["review_text_from_summary"], row["review_length_words"]) == (
        "Short one", True, 2)


def test_review_text_and_summary_both_null():
    row = one_row(reviewText=None, summary=None)
    assert (row["review_text"], row["summary"], row["review_text_from_summary"], row["review_length_words"]) == (
        None, None, False, 0)


def test_review_text_present_is_kept():
    row = one_row(reviewText="Great<br />product &amp; fast", summary="s")
    assert row["review_text"] == "Great product & fast"
    assert row["review_text_from_summary"] is False
    assert row["review_length_words"] == 4


def test_empty_review_text_is_not_replaced():
    row = one_row(reviewText="", summary="S")
    assert (row["review_text"], row["review_text_from_summary"], row["review_length_words"]) == ("", False, 0)


def test_review_length_words_counts_whitespace_runs():
    row = one_row(reviewText="one\ttwo\nthree   four ")
    assert row["review_length_words"] == 4


def test_style_keys_and_values_trimmed():
    row = one_row(style={"Size:": " Large ", "Color:": "Red", " Format: ": "Kindle Edition"})
    assert dict(row["style"]) == {"Size": "Large", "Color": "Red", "Format": "Kindle Edition"}


def test_style_from_json_string_and_absent_and_empty():
    table, dead, _ = run([line(asin="S1", style=json.dumps({"Size Name:": " XL"})),
                          line(asin="S2", style=ABSENT), line(asin="S3", style={})])
    rows = {r["asin"]: r["style"] for r in table.to_pylist()}
    assert dict(rows["S1"]) == {"Size Name": "XL"}
    assert rows["S2"] is None
    assert dict(rows["S3"]) == {}


def test_images():
    table, _, _ = run([
        line(asin="I1", image=["88", "https://images/1.jpg", "http://images/2.jpg", "88"]),
        line(asin="I2", image=ABSENT),
        line(asin="I3", image=[]),
        line(asin="I4", image="https://images/single.jpg"),
        line(asin="I5", image=["88"]),
    ])
    rows = {r["asin"]: r for r in table.to_pylist()}
    assert rows["I1"]["image_urls"] == ["https://images/1.jpg", "http://images/2.jpg"]
    assert rows["I1"]["image_count"] == 2
    assert rows["I2"]["image_urls"] is None and rows["I2"]["image_count"] == 0
    assert rows["I3"]["image_urls"] == [] and rows["I3"]["image_count"] == 0
    assert rows["I4"]["image_urls"] == ["https://images/single.jpg"] and rows["I4"]["image_count"] == 1
    assert rows["I5"]["image_urls"] == [] and rows["I5"]["image_count"] == 0


@pytest.mark.parametrize("name, expected", [
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("O&#39;Brien", "O'Brien"),
    ("&quot;Nick&quot;", '"Nick"'),
    ("Jos&eacute;", "Jos\u00e9"),
    ("  Amazon Customer  ", "  Amazon Customer  "),
    ("<b>a tag rule too</b>", "a tag rule too"),  # names follow the markup rule like all silver text
    ("&lt;script&gt;x&lt;/script&gt;", "x"),
    ("Tom <3", "Tom <3"),
    (None, None),
])
def test_reviewer_name(name, expected):
    assert one_row(reviewerName=name)["reviewer_name"] == expected


def test_verified_and_ids_and_lineage():
    table, _, _ = run([line(asin="V1", verified="true"), line(asin="V2", verified=False),
                       line(asin="V3", verified=ABSENT)], first_line=100)
    rows = {r["asin"]: r for r in table.to_pylist()}
    assert (rows["V1"]["verified"], rows["V2"]["verified"], rows["V3"]["verified"]) == (True, False, None)
    assert {r["source"] for r in rows.values()} == {SOURCE}
    assert {a: r["source_position"] for a, r in rows.items()} == {"V1": 100, "V2": 101, "V3": 102}
    assert rows["V1"]["reviewer_id"] == "R1"


def test_output_schema_and_columns():
    table, _, _ = run([line()])
    assert table.schema == CLEAN_REVIEW_SCHEMA
    assert "_row" not in table.column_names and "reviewText" not in table.column_names
    assert table.schema.field("review_time").type == pa.timestamp("ms", tz="UTC")


def test_mixed_chunk_end_to_end():
    lines = [
        line(asin="A1", overall="4.0", vote="1,234"),
        line(asin=" ", reviewerID=None),
        b"not json",
        line(asin="A2", reviewText=None, summary="From summary"),
        line(asin="A3", overall=6),
        line(asin="A4", overall="five"),
        line(asin="A5", unixReviewTime=None),
        line(asin="A6", style={"Size:": "M "}, image=["88", "http://x/1.jpg"]),
    ]
    table, dead, parse_dead = run(lines, first_line=1)
    assert sorted(table["asin"].to_pylist()) == ["A1", "A2", "A6"]
    assert {d["source_position"]: d["reason"] for d in dead} == {
        2: reasons.MISSING_ASIN, 5: reasons.OVERALL_OUT_OF_RANGE, 7: reasons.MISSING_REVIEW_TIME}
    assert {d["source_position"]: (d["stage"], d["reason"]) for d in parse_dead} == {
        3: (reasons.PARSE, reasons.MALFORMED_JSON), 6: (reasons.CLEAN, reasons.OVERALL_NOT_NUMERIC)}
    rows = {r["asin"]: r for r in table.to_pylist()}
    assert rows["A1"]["overall"] == 4.0 and rows["A1"]["vote"] == 1234
    assert rows["A2"]["review_text_from_summary"] is True
    assert dict(rows["A6"]["style"]) == {"Size": "M"} and rows["A6"]["image_count"] == 1
