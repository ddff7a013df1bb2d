"""Unit tests for rescued data (``_rescued_data``) and the schema counts (``transforms.schema_versions``).

Each review line runs through both parser paths (as a plain line: Arrow; with a leading space: judged
alone by ``coerce_review``); the rescued JSON must be the same exact text on both.
"""
import json

import pyarrow as pa
import pytest

from transforms import schema_versions as sv
from transforms.clean import clean_reviews
from transforms.parse import Chunk, coerce_review, parse_reviews
from transforms.products import clean_product
from transforms.schemas import CLEAN_REVIEW_SCHEMA

R2018 = {"overall": 5.0, "verified": True, "reviewTime": "06 17, 2018", "reviewerID": "R1", "asin": "B004LLIKVU",
         "reviewerName": "john", "reviewText": "Great gift.", "summary": "Five Stars", "unixReviewTime": 1529193600}
R2023 = {"rating": 4.0, "title": "t", "text": "x", "images": [], "asin": "B0VARIANT1", "parent_asin": "B0PARENT01",
         "user_id": "U1", "timestamp": 1588615855070, "helpful_vote": 2, "verified_purchase": True}


def rescued(lines):
    """Lines -> {source_position: _rescued_data} of the clean rows, the same on both parser paths."""
    out = []
    for prefix in (b"", b" "):
        batch, parse_dead, _ = parse_reviews(Chunk(b"\n".join(prefix + ln for ln in lines) + b"\n", "s", 1))
        table, dead = clean_reviews(batch)
        assert parse_dead == [] and dead == []
        out.append({r["source_position"]: r["_rescued_data"] for r in table.to_pylist()})
    assert out[0] == out[1], "Arrow path and per-record path disagree"
    return out[0]


def raw(base, extra_json):
    """A record's JSON line with ``extra_json`` (raw JSON text of more members) spliced in at the end."""
    text = json.dumps(base)
    return (text[:-1] + ", " + extra_json + "}").encode() if extra_json else text.encode()


@pytest.mark.parametrize("extra, expected", [
    ('"foo": 1', '{"foo":1}'),
    ('"foo": "bar", "n": {"a": [1, null, true], "b": {}}', '{"foo":"bar","n":{"a":[1,null,true],"b":{}}}'),
    ('"z": 1, "a": 2', '{"z":1,"a":2}'),                                   # the record's own order
    ('"big": 123456789012345678901234567890', '{"big":123456789012345678901234567890}'),  # exact
    ('"u64": 18446744073709551615', '{"u64":18446744073709551615}'),
    ('"f": 1.5e-7, "neg": -0.25', '{"f":1.5e-7,"neg":-0.25}'),
    ('"caf\\u00e9": "\\u65e5\\u672c \\ud83d\\ude00"', '{"café":"日本 😀"}'),   # UTF-8, unescaped
    ('"empty": "", "list": [], "obj": {}', '{"empty":"","list":[],"obj":{}}'),  # reviews: empties kept
    ('"gone": null', None),                                               # null: nothing to rescue
    ('"": 0', '{"":0}'),
    ('"_row": 7, "source_position": 8, "_rescued_data": "x"', '{"_row":7,"source_position":8,"_rescued_data":"x"}'),
])
def test_unknown_fields_of_a_2018_review(extra, expected):
    got = rescued([raw(R2018, "")] + [raw(R2018, extra)] + [raw(R2018, '"other": [2]')])
    assert got == {1: None, 2: expected, 3: '{"other":[2]}'}
    if expected is not None:
        assert json.loads(got[2]) == json.loads("{" + extra + "}")


def test_fields_of_the_other_schema_are_rescued():
    got = rescued([
        raw(R2018, '"user_id": "U9", "timestamp": 1, "images": [{"large_image_url": "https://x"}]'),
        raw(R2023, '"reviewerID": "R9", "style": {"Size:": "L"}, "reviewTime": "01 2, 2020", "vote": "3"'),
        raw(R2023, '"helpful": [1, 2], "extra": true'),
    ])
    assert got == {
        1: '{"user_id":"U9","timestamp":1,"images":[{"large_image_url":"https://x"}]}',
        2: '{"reviewerID":"R9","style":{"Size:":"L"},"reviewTime":"01 2, 2020","vote":"3"}',
        3: '{"helpful":[1,2],"extra":true}',
    }


def test_known_fields_are_never_rescued():
    assert rescued([raw(R2018, '"style": {"a": "b"}, "image": ["https://i"], "vote": "2", "helpful": [1, 1]'),
                    raw(R2023, "")]) == {1: None, 2: None}


def test_unknown_fields_with_changing_types_in_one_block():
    # Arrow infers one type per block: a field that is a number on one line and an object on the next
    # sends lines to be judged alone; the rescued text is still each line's own value
    lines = [raw(dict(R2018, reviewerID=f"R{i}"), f'"x": {v}')
             for i, v in enumerate(['1', '{"a": 1}', '"s"', '[1, "a"]', '2.5', '{"b": "c"}', 'false'])]
    got = rescued(lines)
    assert [json.loads(got[i + 1])["x"] for i in range(7)] == [1, {"a": 1}, "s", [1, "a"], 2.5, {"b": "c"}, False]


def test_nested_struct_fields_are_not_padded_with_nulls():
    # Arrow would give both rows struct<a, b>; the rescued text holds only what each line had
    got = rescued([raw(R2018, '"x": {"a": 1}'), raw(R2018, '"x": {"b": "s"}')])
    assert got == {1: '{"x":{"a":1}}', 2: '{"x":{"b":"s"}}'}


def test_coerce_review_without_the_line_rescues_from_the_object():
    v = coerce_review(dict(R2018, extra={"k": [1]}, gone=None))
    assert v.record["_rescued_data"] == '{"extra":{"k":[1]}}'


# ---------------------------------------------------------------------------------------------------
# products

def test_product_rescued_fields_skip_empty_values_and_ignored_scrapes():
    record = {"asin": "B001", "title": "T", "brand": "B", "main_cat": "M", "category": [], "price": "",
              "description": ["A gift card."], "feature": [], "also_buy": [], "also_view": ["B002"],
              "details": {}, "tech1": "<table>", "tech2": "", "fit": "", "similar_item": " class=x",
              "imageURL": [], "imageURLHighRes": [], "rank": [], "date": "", "new_field": 0}
    row, _, _ = clean_product(record, "s", 1)
    assert row["_rescued_data"] == '{"description":["A gift card."],"also_view":["B002"],"new_field":0}'


def test_product_rescued_big_int_exact_with_the_line():
    line = b'{"parent_asin": "P1", "store": "S", "rating_number": 123456789012345678901234567890}'
    obj = json.loads(line)
    row, _, _ = clean_product(obj, "s", 1, line)
    assert row["_rescued_data"] == '{"rating_number":123456789012345678901234567890}'
    row, _, _ = clean_product({"parent_asin": "P1", "store": "S"}, "s", 1)
    assert row["_rescued_data"] is None


# ---------------------------------------------------------------------------------------------------
# counts

def test_counts_of_a_clean_table():
    lines = [raw(R2018, ""), raw(R2018, '"foo": 1'), raw(R2018, '"foo": 2, "bar": [1]'),
             raw(dict(R2018, helpful=[1, 2], verified=None), ""), raw(R2023, '"reviewerID": "R"'),
             raw(R2023, "")]
    batch, _, _ = parse_reviews(Chunk(b"\n".join(lines) + b"\n", "s", 1))
    table, _ = clean_reviews(batch)
    assert sv.counts(table) == {"schema_version": {"2014": 1, "2018": 3, "2023": 2},
                                "rescued_fields": {"bar": 1, "foo": 2, "reviewerID": 1}}
    assert sv.counts(CLEAN_REVIEW_SCHEMA.empty_table()) == {"schema_version": {}, "rescued_fields": {}}


def test_product_counts_and_merge():
    rows = [clean_product(r, "s", i)[0] for i, r in enumerate([
        {"asin": "A", "description": ["d"]}, {"asin": "B"},
        {"parent_asin": "P", "store": "S", "features": ["f"], "average_rating": 4.5}])]
    got = sv.product_counts(rows)
    assert got == {"schema_version": {"2018": 2, "2023": 1},
                   "rescued_fields": {"average_rating": 1, "description": 1, "features": 1}}
    total = sv.merge_counts({}, got)
    sv.merge_counts(total, {"schema_version": {"2018": 1}, "rescued_fields": {"x": 2}})
    assert total == {"schema_version": {"2018": 3, "2023": 1},
                     "rescued_fields": {"average_rating": 1, "description": 1, "features": 1, "x": 2}}


def test_counts_on_a_plain_arrow_table():
    t = pa.table({"schema_version": ["2023", None, "2023"], "_rescued_data": [None, '{"a":1}', '{"a":2,"b":3}']})
    assert sv.counts(t) == {"schema_version": {"2023": 2}, "rescued_fields": {"a": 2, "b": 1}}
