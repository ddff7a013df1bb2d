"""Unit tests for transforms.expectations and how clean_reviews applies them (exact counts per action).

Reviews are hand-written JSON lines run through ``parse_reviews`` then ``clean_reviews`` with a fixed
"now", as in the job.
"""
import datetime as dt
import json
import pickle

import pyarrow as pa
import pytest

from transforms import expectations as ex
from transforms import reasons
from transforms.clean import CleanResult, clean_reviews
from transforms.parse import Chunk, parse_reviews
from transforms.schemas import CLEAN_REVIEW_SCHEMA

SOURCE = "abfs://reviews/part-0.json"
NOW = int(dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc).timestamp())
T1995 = int(dt.datetime(1995, 1, 1, tzinfo=dt.timezone.utc).timestamp())
ABSENT = object()
BASE = {"asin": "B000000001", "reviewerID": "R1", "overall": 5.0, "unixReviewTime": 1388534400,
        "reviewText": "Good stuff", "summary": "Nice", "verified": True}
NAMES = ["missing_asin", "missing_reviewer_id", "missing_overall", "overall_out_of_range", "missing_review_time",
         "review_time_range", "empty_review_text", "asin_shape"]


def line(**fields):
    obj = dict(BASE)
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not ABSENT}).encode()


def run(lines, expectations=ex.EXPECTATIONS, now_s=NOW):
    batch, parse_dead, _ = parse_reviews(Chunk(b"\n".join(lines) + b"\n", SOURCE, 1))
    assert parse_dead == []
    result = clean_reviews(batch, expectations=expectations, now_s=now_s)
    table, dead = result
    assert table.schema == CLEAN_REVIEW_SCHEMA
    assert table.num_rows + len(dead) == len(lines)
    return table, dead, result.expectations


def failed(counts):
    return {name: c["failed_rows"] for name, c in counts.items() if c["failed_rows"]}


def test_declared_in_order_with_their_default_actions():
    assert [e.name for e in ex.EXPECTATIONS] == NAMES
    assert [e.action for e in ex.EXPECTATIONS] == ["drop"] * 5 + ["warn"] * 3
    assert [e.name for e in ex.EXPECTATIONS if e.required] == [
        "missing_asin", "missing_reviewer_id", "missing_overall", "missing_review_time"]
    # the rating rule keeps the dead-letter reason the cleaner always gave
    assert ex.EXPECTATIONS[3].name == reasons.OVERALL_OUT_OF_RANGE


def test_clean_rows_fail_nothing():
    table, dead, counts = run([line(), line(asin="0000031852"), line(asin="000100039X")])
    assert dead == [] and table.num_rows == 3
    assert counts == {name: {"action": "drop" if i < 5 else "warn", "failed_rows": 0} for i, name in enumerate(NAMES)}


# ---------------------------------------------------------------------------------------------------
# warn

@pytest.mark.parametrize("t, ok", [
    (T1995, True),
    (T1995 - 1, False),               # 1994-12-31 23:59:59
    (0, False),
    (NOW, True),
    (NOW + 86400, True),              # one day of tolerance: dates at midnight UTC
    (NOW + 86401, False),
    (4102444800, False),              # 2100-01-01
])
def test_review_time_range_warns(t, ok):
    table, dead, counts = run([line(unixReviewTime=t), line()])
    assert dead == [] and table.num_rows == 2
    assert failed(counts) == ({} if ok else {"review_time_range": 1})


def test_review_time_range_default_now_is_the_clock():
    _, _, counts = run([line(unixReviewTime=4102444800), line()], now_s=None)
    assert counts["review_time_range"] == {"action": "warn", "failed_rows": 1}


@pytest.mark.parametrize("fields, empty", [
    ({"reviewText": ""}, True),
    ({"reviewText": "   \t"}, True),          # whitespace only
    ({"reviewText": "<br />"}, True),         # only a tag
    ({"reviewText": None, "summary": None}, True),
    ({"reviewText": None, "summary": "From summary"}, False),
    ({"reviewText": "x"}, False),
])
def test_empty_review_text_warns(fields, empty):
    table, dead, counts = run([line(**fields)])
    assert dead == [] and table.num_rows == 1
    assert failed(counts) == ({"empty_review_text": 1} if empty else {})


@pytest.mark.parametrize("asin, ok", [
    ("B00ISDZK8S", True), ("0000031852", True), ("000100039X", True), ("B0PARENT01", True),
    ("b00isdzk8s", False), ("B0052GPA", False), ("B00ISDZK8SX", False), ("B00ISD-K8S", False),
    (" B00ISDZK8S", False), ("B00ISDZK8\u00c9", False),
])
def test_asin_shape_warns(asin, ok):
    table, dead, counts = run([line(asin=asin)])
    assert dead == [] and table["asin"].to_pylist() == [asin]
    assert failed(counts) == ({} if ok else {"asin_shape": 1})


def test_warn_counts_are_exact_and_rows_kept():
    lines = [line(), line(reviewText=""), line(asin="short", reviewText=""), line(unixReviewTime=5),
             line(asin="short"), line(asin="x", overall=0)]   # the last is dropped: not counted as a warning
    table, dead, counts = run(lines)
    assert table.num_rows == 5 and [d["reason"] for d in dead] == ["overall_out_of_range"]
    assert failed(counts) == {"overall_out_of_range": 1, "empty_review_text": 2, "asin_shape": 2,
                              "review_time_range": 1}


# ---------------------------------------------------------------------------------------------------
# drop

def test_drop_counts_match_dead_letters_first_rule_wins():
    lines = [line(asin=None), line(asin=None, reviewerID=None), line(reviewerID=" "), line(overall=ABSENT),
             line(overall=0, unixReviewTime=ABSENT), line(overall=9), line(unixReviewTime=None), line()]
    table, dead, counts = run(lines)
    assert table.num_rows == 1
    assert [(d["source_position"], d["stage"], d["reason"]) for d in dead] == [
        (1, "clean", "missing_asin"), (2, "clean", "missing_asin"), (3, "clean", "missing_reviewer_id"),
        (4, "clean", "missing_overall"), (5, "clean", "overall_out_of_range"), (6, "clean", "overall_out_of_range"),
        (7, "clean", "missing_review_time")]
    assert failed(counts) == {"missing_asin": 2, "missing_reviewer_id": 1, "missing_overall": 1,
                              "overall_out_of_range": 2, "missing_review_time": 1}
    assert all(d["payload"] == lines[d["source_position"] - 1].decode() and d["detail"] is None for d in dead)


def test_override_a_warning_to_drop():
    exps = ex.configure({"review_time_range": "drop", "asin_shape": "drop"})
    lines = [line(), line(unixReviewTime=5), line(asin="short"), line(asin="short", unixReviewTime=5)]
    table, dead, counts = run(lines, exps)
    assert table.num_rows == 1
    # declaration order: review_time_range comes before asin_shape
    assert [(d["source_position"], d["stage"], d["reason"]) for d in dead] == [
        (2, "clean", "review_time_range"), (3, "clean", "asin_shape"), (4, "clean", "review_time_range")]
    assert counts["review_time_range"] == {"action": "drop", "failed_rows": 2}
    assert counts["asin_shape"] == {"action": "drop", "failed_rows": 1}
    assert dead[0]["payload"] == lines[1].decode() and dead[0]["source"] == SOURCE


def test_override_the_rating_rule_to_warn_keeps_the_row():
    table, dead, counts = run([line(overall=0), line(overall=6), line()], ex.configure({"overall_out_of_range": "warn"}))
    assert dead == [] and table["overall"].to_pylist() == [0.0, 6.0, 5.0]
    assert counts["overall_out_of_range"] == {"action": "warn", "failed_rows": 2}


# ---------------------------------------------------------------------------------------------------
# fail

def test_fail_keeps_rows_counts_them_and_signals():
    exps = ex.configure(ex.parse_overrides(["review_time_range=fail", "empty_review_text = FAIL"]))
    lines = [line(), line(unixReviewTime=5), line(unixReviewTime=6, reviewText=""), line(overall=0, unixReviewTime=7)]
    table, dead, counts = run(lines, exps)
    assert table.num_rows == 3 and [d["reason"] for d in dead] == ["overall_out_of_range"]
    assert counts["review_time_range"] == {"action": "fail", "failed_rows": 2}
    assert counts["empty_review_text"] == {"action": "fail", "failed_rows": 1}
    assert ex.failures(counts) == {"review_time_range": 2, "empty_review_text": 1}
    _, _, clean_counts = run([line()], exps)
    assert ex.failures(clean_counts) == {}


# ---------------------------------------------------------------------------------------------------
# configuration

@pytest.mark.parametrize("overrides, message", [
    ({"no_such_rule": "warn"}, "unknown expectation"),
    ({"asin_shape": "explode"}, "not one of"),
    ({"missing_asin": "warn"}, "required"),
    ({"missing_review_time": "fail"}, "required"),
])
def test_configure_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        ex.configure(overrides)


def test_configure_keeps_order_and_required_drop_is_accepted():
    exps = ex.configure({"missing_asin": "drop", "asin_shape": "fail"})
    assert [(e.name, e.action) for e in exps] == list(zip(NAMES, ["drop"] * 5 + ["warn", "warn", "fail"]))
    assert ex.EXPECTATIONS[-1].action == "warn"   # the defaults are untouched


@pytest.mark.parametrize("items", [["asin_shape"], ["=warn"], ["asin_shape:fail"]])
def test_parse_overrides_rejects(items):
    with pytest.raises(ValueError):
        ex.parse_overrides(items)


# ---------------------------------------------------------------------------------------------------
# apply_expectations alone, counts helpers, the result shape

def test_apply_expectations_on_a_table_without_payloads():
    table = pa.table({"overall": [1.0, 0.0, None], "source": ["a", "b", "c"], "source_position": [1, 2, 3]})
    exps = (ex.Expectation("rated", lambda t, now_s: pa.compute.is_valid(t["overall"]), "drop", "rated"),
            ex.Expectation("positive", lambda t, now_s: pa.compute.greater(t["overall"], 0), "warn", "> 0"))
    kept, dead, counts = ex.apply_expectations(table, exps)
    assert kept["source_position"].to_pylist() == [1, 2]
    assert [(d["reason"], d["source"], d["source_position"], d["payload"]) for d in dead] == [("rated", "c", 3, "")]
    assert counts == {"rated": {"action": "drop", "failed_rows": 1}, "positive": {"action": "warn", "failed_rows": 1}}
    empty, dead, counts = ex.apply_expectations(table.slice(0, 0), exps)
    assert empty.num_rows == 0 and dead == [] and counts["rated"]["failed_rows"] == 0


def test_merge_counts():
    total = ex.merge_counts({}, {"a": {"action": "warn", "failed_rows": 2}})
    ex.merge_counts(total, {"a": {"action": "warn", "failed_rows": 3}, "b": {"action": "fail", "failed_rows": 1}})
    assert total == {"a": {"action": "warn", "failed_rows": 5}, "b": {"action": "fail", "failed_rows": 1}}
    assert ex.failures(total) == {"b": 1}


def test_clean_result_is_backward_compatible():
    batch, _, _ = parse_reviews(Chunk(line() + b"\n" + line(asin="short") + b"\n", SOURCE, 1))
    result = clean_reviews(batch, 4096)
    table, dead = result                         # unpacks as the old pair
    assert isinstance(result, tuple) and len(result) == 2
    assert result.table is table and result.dead is dead
    table2, dead2, meta = result + (batch.meta,)  # what the Beam DoFn does
    assert table2 is table and meta is None
    assert result.expectations["asin_shape"] == {"action": "warn", "failed_rows": 1}
    again = pickle.loads(pickle.dumps(result))
    assert again.expectations == result.expectations and again[0].equals(table) and isinstance(again, CleanResult)


def test_blank_agrees_with_trimming_for_every_code_point():
    # _blank avoids copying strings (utf8_is_space); it must say what trimming whitespace would say
    strings = [chr(c) * 2 for c in range(0x30000) if not 0xD800 <= c < 0xE000] + ["", None, " a ", "\t\n"]
    arr = pa.array(strings, pa.string())
    trimmed = pa.compute.fill_null(pa.compute.equal(pa.compute.utf8_length(pa.compute.utf8_trim_whitespace(arr)), 0),
                                   True)
    assert ex._blank(arr).to_pylist() == trimmed.to_pylist()
