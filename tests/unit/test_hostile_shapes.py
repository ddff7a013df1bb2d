"""Unit tests: record shapes and review times that used to crash the job (issue 21), as the rules in the
docstring of ``transforms.parse`` now decide them.

* nesting deeper than ``MAX_NESTING_DEPTH`` -> ``too_deep``; more than ``MAX_RECORD_FIELDS`` object keys
  -> ``too_many_fields``; both before Arrow sees the line (a few hundred levels in ``style`` raised an
  uncaught recursion error, a few thousand crashed the interpreter inside pyarrow);
* a review time outside 1900-01-01 .. 2199-12-31 23:59:59 UTC -> ``review_time_out_of_range``, for the
  2014/2018 ``unixReviewTime`` (seconds) and the 2023 ``timestamp`` (milliseconds) alike; the warn
  expectation's plausible range lies inside that bound.
"""
import datetime as dt
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import reasons
from transforms.clean import clean_reviews
from transforms.expectations import FUTURE_TOLERANCE_S, REVIEW_TIME_MIN_S
from transforms.parse import (MAX_NESTING_DEPTH, MAX_RECORD_FIELDS, MAX_REVIEW_TIME_S, MIN_REVIEW_TIME_S, Chunk,
                              classify_line, parse_reviews, review_time_of, shape_verdict)

R2018 = {"asin": "B000000001", "reviewerID": "R1", "overall": 5.0, "reviewText": "ok", "unixReviewTime": 1400000000}
R2023 = {"parent_asin": "B000000001", "user_id": "U1", "rating": 5.0, "text": "ok", "timestamp": 1400000000000}


def nested(depth, kind="obj"):
    """A JSON text nested ``depth`` levels (the innermost value 1 is not a level)."""
    return ('{"a":' * depth + "1" + "}" * depth) if kind == "obj" else ("[" * depth + "1" + "]" * depth)


def with_raw(base, field, raw_json):
    """``base`` as a JSON line with ``field`` set to the raw JSON text ``raw_json``."""
    return (json.dumps(base)[:-1] + f', "{field}": {raw_json}}}').encode()


def run(lines):
    batch, parse_dead, records = parse_reviews(Chunk(b"\n".join(lines) + b"\n", "s", 1))
    table, clean_dead = clean_reviews(batch)
    return table, parse_dead + list(clean_dead), records


def fates(lines):
    table, dead, records = run(lines)
    out = {r["source_position"]: "row" for r in table.to_pylist()}
    out.update({d["source_position"]: d["reason"] for d in dead})
    assert records == len(out) == len(lines)
    return out


# ---------------------------------------------------------------------------------------------------
# nesting depth and width

@pytest.mark.parametrize("field", ["style", "extra", "image", "reviewText"])
@pytest.mark.parametrize("kind", ["obj", "arr"])
@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH, 300, 3000, 20000])
def test_too_deep_is_a_dead_letter_and_neighbours_survive(field, kind, depth):
    # the record is level 1, so a value nested MAX_NESTING_DEPTH levels makes the record one too deep
    lines = [json.dumps(R2018).encode(), with_raw(R2018, field, nested(depth, kind)), json.dumps(R2018).encode()]
    assert fates(lines) == {1: "row", 2: reasons.TOO_DEEP, 3: "row"}


@pytest.mark.parametrize("depth", [1, 5, MAX_NESTING_DEPTH - 1])
def test_nesting_within_the_bound_is_kept(depth):
    line = with_raw(R2018, "extra", nested(depth))
    assert fates([line, json.dumps(R2018).encode()]) == {1: "row", 2: "row"}


def test_style_nested_a_few_hundred_levels_in_a_2023_record_too():
    line = with_raw(R2023, "details", nested(400))
    assert fates([line]) == {1: reasons.TOO_DEEP}


def test_deep_nesting_in_a_subprocess_does_not_crash_the_interpreter():
    # the segfault (exit 139) happened in the C++ reader: run it where a crash cannot take pytest down
    code = ("from tests.unit.test_hostile_shapes import *\n"
            "print(sorted(fates([with_raw(R2018, 'style', nested(5000)), json.dumps(R2018).encode()]).items()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str([(1, reasons.TOO_DEEP), (2, "row")])


def test_too_many_fields():
    wide = json.dumps({f"k{i}": "v" for i in range(MAX_RECORD_FIELDS)})
    lines = [with_raw(R2018, "style", wide), with_raw(R2018, "extra", wide), json.dumps(R2018).encode()]
    assert fates(lines) == {1: reasons.TOO_MANY_FIELDS, 2: reasons.TOO_MANY_FIELDS, 3: "row"}


def test_many_colons_in_text_are_only_suspects():
    # the cheap test over-counts colons inside strings: such a line is judged alone and kept
    line = json.dumps(dict(R2018, reviewText="a:b " * (MAX_RECORD_FIELDS + 10))).encode()
    brackets = json.dumps(dict(R2018, reviewText="[{" * (MAX_NESTING_DEPTH + 10))).encode()
    table, dead, _ = run([line, brackets])
    assert dead == [] and table.num_rows == 2


def test_shape_verdict_counts_levels_and_keys():
    assert shape_verdict(json.loads(nested(MAX_NESTING_DEPTH))) is None  # the record is the first level
    assert shape_verdict(json.loads(nested(MAX_NESTING_DEPTH + 1))).reason == reasons.TOO_DEEP
    assert shape_verdict({"a": [[{}]] * 3}, max_depth=4) is None
    assert shape_verdict({"a": [[{"b": []}]]}, max_depth=4).reason == reasons.TOO_DEEP
    assert shape_verdict({"a": {"b": 1, "c": 2}}, max_fields=3) is None
    assert shape_verdict({"a": {"b": 1, "c": 2}, "d": 1}, max_fields=3).reason == reasons.TOO_MANY_FIELDS


def test_products_use_the_same_bound():
    # ParseProductsFn judges every product line with classify_line
    obj, verdict = classify_line(with_raw({"asin": "B000000001"}, "details", nested(400)))
    assert verdict.reason == reasons.TOO_DEEP and verdict.stage == reasons.PARSE


# ---------------------------------------------------------------------------------------------------
# review time

@pytest.mark.parametrize("value", [2 ** 62, 10 ** 12, 10 ** 14, 1e12, "1000000000000", 10 ** 30, -10 ** 12,
                                   MAX_REVIEW_TIME_S + 1, MIN_REVIEW_TIME_S - 1])
def test_legacy_review_time_out_of_range(value):
    lines = [json.dumps(dict(R2018, unixReviewTime=value)).encode(), json.dumps(R2018).encode()]
    assert fates(lines) == {1: reasons.REVIEW_TIME_OUT_OF_RANGE, 2: "row"}
    assert review_time_of(lines[0]) is None  # the streaming watermark never sees it either


@pytest.mark.parametrize("value", [2 ** 62, 10 ** 17, 1e15, 10 ** 30, (MAX_REVIEW_TIME_S + 1) * 1000])
def test_2023_timestamp_out_of_range(value):
    lines = [json.dumps(dict(R2023, timestamp=value)).encode(), json.dumps(R2023).encode()]
    assert fates(lines) == {1: reasons.REVIEW_TIME_OUT_OF_RANGE, 2: "row"}


@pytest.mark.parametrize("value", [1.5, "yesterday", [1], True])
def test_review_time_not_a_number_stays_wrong_type(value):
    assert fates([json.dumps(dict(R2018, unixReviewTime=value)).encode()]) == {1: reasons.WRONG_TYPE}


def test_bound_edges_are_kept_with_their_dates():
    lines = [json.dumps(dict(R2018, unixReviewTime=MIN_REVIEW_TIME_S)).encode(),
             json.dumps(dict(R2018, unixReviewTime=MAX_REVIEW_TIME_S)).encode(),
             json.dumps(dict(R2023, timestamp=MAX_REVIEW_TIME_S * 1000 + 999)).encode()]
    table, dead, _ = run(lines)
    assert dead == []
    assert table["review_date"].to_pylist() == [dt.date(1900, 1, 1), dt.date(2199, 12, 31), dt.date(2199, 12, 31)]
    assert table["year"].to_pylist() == [1900, 2199, 2199]


def test_hard_bound_and_expectation_are_consistent():
    # the hard bound is about representability, the warn expectation about plausibility: the plausible
    # range must lie inside the representable one for any "now" this code will run at
    assert dt.datetime.fromtimestamp(MIN_REVIEW_TIME_S, dt.timezone.utc) == dt.datetime(1900, 1, 1,
                                                                                        tzinfo=dt.timezone.utc)
    assert dt.datetime.fromtimestamp(MAX_REVIEW_TIME_S + 1, dt.timezone.utc) == dt.datetime(2200, 1, 1,
                                                                                            tzinfo=dt.timezone.utc)
    assert MIN_REVIEW_TIME_S < REVIEW_TIME_MIN_S
    assert dt.datetime(2150, 1, 1, tzinfo=dt.timezone.utc).timestamp() + FUTURE_TOLERANCE_S < MAX_REVIEW_TIME_S


def test_implausible_but_representable_time_is_kept_and_warned():
    lines = [json.dumps(dict(R2018, unixReviewTime=0)).encode(),
             json.dumps(dict(R2018, unixReviewTime=5_000_000_000)).encode(), json.dumps(R2018).encode()]
    batch, parse_dead, _ = parse_reviews(Chunk(b"\n".join(lines) + b"\n", "s", 1))
    result = clean_reviews(batch, now_s=1_700_000_000)
    assert parse_dead == [] and result.table.num_rows == 3
    assert result.expectations["review_time_range"] == {"action": "warn", "failed_rows": 2}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.integers(0, 6), st.booleans())
def test_lines_with_more_colons_than_the_limit_counted_line_by_line(lines, limit, crlf):
    """The cheap pre-scan's per-line byte count (``_Lines.lines_with_more``) equals counting each line on
    its own, with LF or CRLF endings."""
    from transforms.parse import _Lines
    end = b"\r\n" if crlf else b"\n"
    data = b"".join(line + end for line in lines)
    got = _Lines(data)
    want = [i for i, line in enumerate(lines) if line.rstrip(b"\r").count(b":") > limit]
    assert got.lines_with_more(b":", limit, got.ends - got.starts) == want
