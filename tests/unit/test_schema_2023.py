"""Unit tests for the Amazon Reviews 2023 schema: recognised per record, mapped onto the silver columns.

Every input is a hand-written record. Each review goes through ``parse_reviews`` then ``clean_reviews``
twice: as a plain line (Arrow's path) and with a leading space (a suspect line, judged alone by
``coerce_review``), and both must give the same silver row. Expected values are written out by hand.
"""
import datetime as dt
import json

import pyarrow as pa
import pytest

from transforms import reasons
from transforms import schema_versions as sv
from transforms.clean import clean_reviews
from transforms.enrich import dedupe_products, enrich_with_products
from transforms.parse import Chunk, judge_review_line, parse_reviews, review_time_of
from transforms.products import clean_product
from transforms.schemas import CLEAN_REVIEW_SCHEMA, SILVER_PRODUCT_SCHEMA

SOURCE = "abfs://reviews/2023/part-0.jsonl"
ABSENT = object()
UTC = dt.timezone.utc

IMG1 = {"small_image_url": "https://s/1._SL256_.jpg", "medium_image_url": "https://m/1._SL800_.jpg",
        "large_image_url": "https://l/1.jpg", "attachment_type": "IMAGE"}
R2023 = {"rating": 4.0, "title": "Cute <b>box</b>", "text": "Loved it &amp; so did my kids", "images": [IMG1],
         "asin": "B0VARIANT1", "parent_asin": "B0PARENT01", "user_id": "AGUSER2023", "timestamp": 1588615855070,
         "helpful_vote": 2, "verified_purchase": True}
R2018 = {"overall": 5.0, "verified": True, "reviewTime": "06 17, 2018", "reviewerID": "A31UBHTUUIFJUT",
         "asin": "B004LLIKVU", "style": {"Gift Amount:": " 50"}, "reviewerName": "john", "reviewText": "Great gift.",
         "summary": "Five Stars", "unixReviewTime": 1529193600}
R2014 = {"reviewerID": "AIDZZQQ6NZFT5", "asin": "B00ISDZK8S", "reviewerName": "Andrea", "helpful": [3, 4],
         "reviewText": "A quick cozy.", "overall": 4.0, "summary": "Cozy", "unixReviewTime": 1398902400,
         "reviewTime": "05 1, 2014"}


def rec(base, **fields):
    obj = dict(base)
    obj.update(fields)
    return {k: v for k, v in obj.items() if v is not ABSENT}


def line(obj):
    return json.dumps(obj).encode()


def run(lines, first_line=1):
    """-> (clean rows by source position, clean dead letters, parse dead letters) for both paths,
    checked equal."""
    results = []
    for prefix in (b"", b" "):
        batch, parse_dead, records = parse_reviews(Chunk(b"\n".join(prefix + ln for ln in lines) + b"\n",
                                                         SOURCE, first_line))
        table, dead = clean_reviews(batch)
        assert table.schema == CLEAN_REVIEW_SCHEMA
        assert records == table.num_rows + len(dead) + len(parse_dead)
        rows = {r["source_position"]: r for r in table.to_pylist()}
        results.append((rows, [(d["source_position"], d["stage"], d["reason"], d["detail"]) for d in dead],
                        sorted((d["source_position"], d["stage"], d["reason"], d["detail"]) for d in parse_dead)))
    assert results[0][0] == results[1][0], "Arrow path and per-record path disagree"
    assert sorted(results[0][1]) == sorted(results[1][1]) and results[0][2] == results[1][2]
    return results[0]


def one_row(obj):
    rows, dead, parse_dead = run([line(obj)])
    assert dead == [] and parse_dead == [], (dead, parse_dead)
    (row,) = rows.values()
    return row


# ---------------------------------------------------------------------------------------------------
# the 2023 review mapping

def test_2023_review_maps_onto_every_silver_column():
    when = dt.datetime(2020, 5, 4, 18, 10, 55, tzinfo=UTC)  # 1588615855070 ms, floor to seconds
    assert one_row(R2023) == {
        "reviewer_id": "AGUSER2023",
        "asin": "B0PARENT01",                 # the product key: parent_asin
        "overall": 4.0,
        "verified": True,
        "vote": 2,
        "unix_review_time": 1588615855,
        "review_time": when,
        "review_date": dt.date(2020, 5, 4),
        "year": 2020,
        "month": 5,
        "reviewer_name": None,
        "summary": "Cute box",                # title, tags stripped
        "review_text": "Loved it & so did my kids",
        "review_text_from_summary": False,
        "review_length_words": 7,
        "style": None,
        "image_urls": ["https://l/1.jpg"],
        "image_count": 1,
        "variant_asin": "B0VARIANT1",          # the record's own asin
        "schema_version": "2023",
        "_rescued_data": None,
        "source": SOURCE,
        "source_position": 1,
    }


@pytest.mark.parametrize("ms, seconds", [
    (1588615855070, 1588615855),
    (1588615855999, 1588615855),   # floor, not rounding
    (1588615855000, 1588615855),
    (999, 0),
    (-1, -1),                       # floor division below the epoch
    (-1500, -2),
    (0, 0),
])
def test_2023_timestamp_milliseconds_to_seconds(ms, seconds):
    assert one_row(rec(R2023, timestamp=ms))["unix_review_time"] == seconds
    assert review_time_of(line(rec(R2023, timestamp=ms))) == seconds


def test_2023_timestamp_as_string_or_integral_float():
    assert one_row(rec(R2023, timestamp="1588615855070"))["unix_review_time"] == 1588615855
    assert one_row(rec(R2023, timestamp=1588615855070.0))["unix_review_time"] == 1588615855


def test_2023_images_large_then_medium_then_small():
    images = [
        IMG1,
        {"small_image_url": "https://s/2", "medium_image_url": "https://m/2", "large_image_url": None,
         "attachment_type": "IMAGE"},
        {"attachment_type": "IMAGE", "small_image_url": "https://s/3"},     # keys in any order, some absent
        {"attachment_type": "IMAGE", "large_image_url": None, "medium_image_url": None, "small_image_url": None},
        {"large_image_url": "88", "attachment_type": "IMAGE"},              # not a URL: not kept
    ]
    row = one_row(rec(R2023, images=images))
    assert row["image_urls"] == ["https://l/1.jpg", "https://m/2", "https://s/3"]
    assert row["image_count"] == 3


@pytest.mark.parametrize("images, urls, count", [([], [], 0), (ABSENT, None, 0), (None, None, 0)])
def test_2023_no_images(images, urls, count):
    row = one_row(rec(R2023, images=images))
    assert (row["image_urls"], row["image_count"]) == (urls, count)


@pytest.mark.parametrize("fields, expected", [
    ({"helpful_vote": 0}, 0),
    ({"helpful_vote": 1234}, 1234),
    ({"helpful_vote": ABSENT}, 0),       # absent: 0, as an absent 2018 vote
    ({"helpful_vote": "17"}, 17),
    ({"helpful_vote": -3}, None),        # the 2018 vote rule: not digits -> null
])
def test_2023_helpful_vote(fields, expected):
    assert one_row(rec(R2023, **fields))["vote"] == expected


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (ABSENT, None), ("false", False)])
def test_2023_verified_purchase(value, expected):
    assert one_row(rec(R2023, verified_purchase=value))["verified"] is expected


def test_2023_text_missing_falls_back_to_title():
    row = one_row(rec(R2023, text=ABSENT))
    assert (row["review_text"], row["review_text_from_summary"]) == ("Cute box", True)


@pytest.mark.parametrize("fields, stage, reason, detail", [
    ({"parent_asin": ABSENT}, reasons.CLEAN, reasons.MISSING_ASIN, None),   # the product key, not asin
    ({"parent_asin": " "}, reasons.CLEAN, reasons.MISSING_ASIN, None),
    ({"user_id": ABSENT}, reasons.CLEAN, reasons.MISSING_REVIEWER_ID, None),
    ({"rating": ABSENT}, reasons.CLEAN, reasons.MISSING_OVERALL, None),
    ({"rating": 0.0}, reasons.CLEAN, reasons.OVERALL_OUT_OF_RANGE, None),
    ({"rating": 6}, reasons.CLEAN, reasons.OVERALL_OUT_OF_RANGE, None),
    ({"timestamp": ABSENT}, reasons.CLEAN, reasons.MISSING_REVIEW_TIME, None),
])
def test_2023_clean_rejections(fields, stage, reason, detail):
    rows, dead, parse_dead = run([line(R2023), line(rec(R2023, **fields)), line(rec(R2023, user_id="U3"))])
    assert parse_dead == []
    assert dead == [(2, stage, reason, detail)]
    assert sorted(rows) == [1, 3]


@pytest.mark.parametrize("fields, reason, detail_start", [
    ({"rating": "five"}, reasons.OVERALL_NOT_NUMERIC, "'five'"),
    ({"rating": True}, reasons.WRONG_TYPE, "rating"),
    ({"timestamp": "yesterday"}, reasons.WRONG_TYPE, "timestamp"),
    ({"timestamp": 1.5}, reasons.WRONG_TYPE, "timestamp"),
    ({"timestamp": 10 ** 17}, reasons.REVIEW_TIME_OUT_OF_RANGE, "timestamp"),  # year > 2199: outside the bound
    ({"verified_purchase": 1}, reasons.WRONG_TYPE, "verified_purchase"),
    ({"text": {"body": "x"}}, reasons.WRONG_TYPE, "text"),
    ({"images": 3}, reasons.WRONG_TYPE, "images"),
])
def test_2023_parse_rejections(fields, reason, detail_start):
    rows, dead, parse_dead = run([line(R2023), line(rec(R2023, **fields)), line(R2023)])
    assert dead == []
    assert [(p, r) for p, _, r, _ in parse_dead] == [(2, reason)]
    assert parse_dead[0][3].startswith(detail_start)
    assert sorted(rows) == [1, 3]


def test_2023_rating_as_string_is_kept_and_judged_alone():
    # a string rating among numbers: Arrow meets it, the chunk is scanned for them once, each judged alone
    lines = [line(rec(R2023, user_id=f"U{i}", rating="3" if i % 7 == 0 else 5.0)) for i in range(200)]
    rows, dead, parse_dead = run(lines)
    assert dead == [] and parse_dead == [] and len(rows) == 200
    assert {p: r["overall"] for p, r in rows.items()} == {i + 1: 3.0 if i % 7 == 0 else 5.0 for i in range(200)}


def test_2023_every_rating_a_string():
    lines = [line(rec(R2023, user_id=f"U{i}", rating=str(1 + i % 5))) for i in range(100)]
    rows, dead, parse_dead = run(lines)
    assert dead == [] and parse_dead == []
    assert [rows[i + 1]["overall"] for i in range(100)] == [float(1 + i % 5) for i in range(100)]


def test_legacy_time_out_of_the_hard_bound_is_out_of_range():
    # the bound is 1900-01-01 .. 2199-12-31 23:59:59 UTC (transforms.parse): year 9999 is representable
    # in Arrow but not a review time, and a window end after it would not be a date
    rows, dead, parse_dead = run([line(R2018), line(rec(R2018, unixReviewTime=253402300800)),
                                  line(rec(R2018, unixReviewTime=253402300799)),
                                  line(rec(R2018, unixReviewTime=7258118399))])
    assert [(p, r) for p, _, r, _ in parse_dead] == [(2, reasons.REVIEW_TIME_OUT_OF_RANGE),
                                                     (3, reasons.REVIEW_TIME_OUT_OF_RANGE)]
    assert rows[4]["review_date"] == dt.date(2199, 12, 31)


# ---------------------------------------------------------------------------------------------------
# schemas mixed in one chunk

def test_mixed_chunk_each_row_gets_its_schema_and_values():
    objs = [
        R2014,
        R2023,
        R2018,
        rec(R2023, user_id="U2", parent_asin="B0PARENT02", asin="B0VARIANT2", images=[], helpful_vote=0,
            verified_purchase=False, timestamp=1214337799000, rating=2.0),
        rec(R2014, reviewerID="R2", helpful=[0, 0]),
        rec(R2018, reviewerID="R3", vote="1,234", image=["https://img/1.jpg"], style=ABSENT),
        rec(R2014, reviewerID="R4", helpful=ABSENT),   # neither helpful nor a 2018-only field: 2018
    ]
    rows, dead, parse_dead = run([line(o) for o in objs], first_line=11)
    assert dead == [] and parse_dead == []
    got = {p: (r["schema_version"], r["reviewer_id"], r["asin"], r["variant_asin"], r["overall"], r["vote"],
               r["verified"], r["unix_review_time"], r["image_count"], r["style"]) for p, r in rows.items()}
    assert got == {
        11: ("2014", "AIDZZQQ6NZFT5", "B00ISDZK8S", None, 4.0, 3, None, 1398902400, 0, None),
        12: ("2023", "AGUSER2023", "B0PARENT01", "B0VARIANT1", 4.0, 2, True, 1588615855, 1, None),
        13: ("2018", "A31UBHTUUIFJUT", "B004LLIKVU", None, 5.0, 0, True, 1529193600, 0, [("Gift Amount", "50")]),
        14: ("2023", "U2", "B0PARENT02", "B0VARIANT2", 2.0, 0, False, 1214337799, 0, None),
        15: ("2014", "R2", "B00ISDZK8S", None, 4.0, 0, None, 1398902400, 0, None),
        16: ("2018", "R3", "B004LLIKVU", None, 5.0, 1234, True, 1529193600, 1, None),
        17: ("2018", "R4", "B00ISDZK8S", None, 4.0, 0, None, 1398902400, 0, None),
    }
    assert rows[12]["summary"] == "Cute box" and rows[13]["summary"] == "Five Stars"
    assert rows[11]["reviewer_name"] == "Andrea" and rows[12]["reviewer_name"] is None


def test_mixed_chunk_many_rows_in_blocks():
    # long runs of each schema, and rows of each interleaved: the Arrow table holds both kinds of row
    objs = []
    for i in range(300):
        base = (R2014, R2018, R2023)[(i // 50 + i % 3) % 3]
        key = "user_id" if base is R2023 else "reviewerID"
        objs.append(rec(base, **{key: f"U{i}"}))
    rows, dead, parse_dead = run([line(o) for o in objs])
    assert dead == [] and parse_dead == [] and len(rows) == 300
    for i, o in enumerate(objs):
        r = rows[i + 1]
        assert r["reviewer_id"] == f"U{i}"
        assert r["schema_version"] == {id(R2014): "2014", id(R2018): "2018", id(R2023): "2023"}[
            id((R2014, R2018, R2023)[(i // 50 + i % 3) % 3])]
        assert r["asin"] == o.get("parent_asin", o["asin"])


def test_record_with_fields_of_both_schemas_follows_the_majority():
    # a 2018 record carrying two 2023 fields stays 2018 (10 legacy fields vs 2); the 2023 fields are rescued
    mixed = rec(R2018, user_id="OTHER", timestamp=1)
    row = one_row(mixed)
    assert (row["schema_version"], row["reviewer_id"], row["unix_review_time"]) == ("2018", "A31UBHTUUIFJUT",
                                                                                 1529193600)
    assert json.loads(row["_rescued_data"]) == {"user_id": "OTHER", "timestamp": 1}
    # and a 2023 record with a stray 2018 field stays 2023
    row = one_row(rec(R2023, overall=1.0))
    assert (row["schema_version"], row["overall"]) == ("2023", 4.0)
    assert json.loads(row["_rescued_data"]) == {"overall": 1.0}


# ---------------------------------------------------------------------------------------------------
# the rule itself

@pytest.mark.parametrize("fields, version", [
    (set(R2014), "2014"),
    (set(R2018), "2018"),
    (set(R2023), "2023"),
    (set(), "2018"),                                    # nothing tells: the older default
    ({"asin"}, "2018"),
    ({"asin", "helpful"}, "2014"),
    ({"helpful", "vote"}, "2018"),
    ({"helpful", "image"}, "2018"),
    ({"user_id"}, "2023"),
    ({"user_id", "reviewerID"}, "2018"),                # a tie stays with the older schemas
    ({"user_id", "timestamp", "reviewerID"}, "2023"),
    ({"helpful", "user_id", "timestamp"}, "2023"),
    ({"asin", "foo", "bar"}, "2018"),                   # unknown fields do not count
])
def test_review_version_rule(fields, version):
    assert sv.review_version(fields) == version
    valid = {f: __import__("numpy").ones(1, dtype=bool) for f in fields}
    codes, _, _ = sv.review_version_codes(valid, 1)
    assert sv.REVIEW_VERSIONS[codes[0]] == version


def test_a_null_field_reads_as_absent():
    assert sv.present_fields({"helpful": None, "a": 0, "b": "", "c": False}) == {"a", "b", "c"}
    row = one_row(rec(R2014, helpful=None))
    assert row["schema_version"] == "2018"


def test_judge_review_line_2023():
    v = judge_review_line(line(R2023))
    assert v.record["asin"] == "B0PARENT01" and v.record["variant_asin"] == "B0VARIANT1"
    assert v.record["unixReviewTime"] == 1588615855 and v.record["schema_version"] == "2023"
    assert v.record["image"] == ["https://l/1.jpg"] and v.record["vote"] == "2"


# ---------------------------------------------------------------------------------------------------
# 2023 product metadata

P2023 = {"main_category": "SUBSCRIPTION BOXES", "title": "Loved Again Media - Movie Box &amp; more",
         "average_rating": 4.1, "rating_number": 75, "features": ["10 DVDs"], "description": [], "price": None,
         "images": [{"thumb": "https://t/1.jpg", "large": "https://l/1.jpg", "variant": "MAIN",
                     "hi_res": "https://h/1.jpg"},
                    {"thumb": "https://t/2.jpg", "large": None, "variant": "PT01", "hi_res": None},
                    {"thumb": None, "large": None, "variant": "PT02", "hi_res": None}],
         "videos": [], "store": "Loved Again Media", "categories": [], "details": {}, "parent_asin": "B08W5BSH6V",
         "bought_together": None}


def test_2023_product_maps_onto_every_silver_column():
    row, reason, detail = clean_product(P2023, "meta/Subscription_Boxes.jsonl", 3)
    assert (reason, detail) == (None, None)
    assert row == {
        "asin": "B08W5BSH6V",
        "title": "Loved Again Media - Movie Box & more",
        "brand": "Loved Again Media",
        "main_cat": "SUBSCRIPTION BOXES",
        "categories": None,             # [] -> null, as for 2018
        "price": None, "price_min": None, "price_max": None,
        "image_count": 2,               # the third entry has no URL
        "rank": None, "rank_category": None, "date_first_available": None,
        "schema_version": "2023",
        "_rescued_data": '{"average_rating":4.1,"rating_number":75,"features":["10 DVDs"]}',
        "source": "meta/Subscription_Boxes.jsonl",
        "source_position": 3,
    }
    assert list(row) == SILVER_PRODUCT_SCHEMA.names


@pytest.mark.parametrize("fields, expected", [
    ({"price": 12.99}, (12.99, 12.99, 12.99)),
    ({"price": "$12.99"}, (12.99, 12.99, 12.99)),
    ({"price": "$10.00 - $20.00"}, (15.0, 10.0, 20.0)),
    ({"price": "—"}, (None, None, None)),
    ({"price": -1}, (None, None, None)),
])
def test_2023_product_price(fields, expected):
    row, _, _ = clean_product(rec(P2023, **fields), "s", 1)
    assert (row["price"], row["price_min"], row["price_max"]) == expected


@pytest.mark.parametrize("fields, expected", [
    ({"store": "Unknown"}, (None, "SUBSCRIPTION BOXES")),
    ({"store": None}, (None, "SUBSCRIPTION BOXES")),
    ({"store": "by  Acme"}, ("Acme", "SUBSCRIPTION BOXES")),
    ({"main_category": None, "categories": ["Toys &amp; Games", "Puzzles"]}, ("Loved Again Media", "Toys & Games")),
])
def test_2023_product_brand_and_main_cat(fields, expected):
    row, _, _ = clean_product(rec(P2023, **fields), "s", 1)
    assert (row["brand"], row["main_cat"]) == expected


@pytest.mark.parametrize("fields, detail", [
    ({"parent_asin": ABSENT}, "parent_asin: missing"),
    ({"parent_asin": None}, "parent_asin: null"),
    ({"parent_asin": "  "}, "parent_asin: blank"),
    ({"parent_asin": 7}, "parent_asin: int"),
])
def test_2023_product_without_parent_asin_is_rejected(fields, detail):
    assert clean_product(rec(P2023, **fields), "s", 1) == (None, reasons.MISSING_ASIN, detail)


def test_product_version_rule():
    assert sv.product_version(set(P2023)) == "2023"
    assert sv.product_version({"asin", "title", "brand", "main_cat"}) == "2018"
    assert sv.product_version({"title", "price"}) == "2018"          # shared fields only
    assert sv.product_version({"asin", "parent_asin"}) == "2018"     # a tie
    # a 2018 product with a stray parent_asin keeps its asin as the key; the stray field is rescued
    row, _, _ = clean_product({"asin": "B001", "title": "T", "brand": "B", "parent_asin": "P9"}, "s", 1)
    assert (row["asin"], row["schema_version"], row["_rescued_data"]) == ("B001", "2018", '{"parent_asin":"P9"}')


def test_2023_review_joins_its_product_on_parent_asin():
    rows, _, _ = run([line(rec(R2023, parent_asin="B08W5BSH6V"))])
    reviews = pa.Table.from_pylist(list(rows.values()), schema=CLEAN_REVIEW_SCHEMA)
    product, _, _ = clean_product(P2023, "m", 1)
    products, _ = dedupe_products([product])
    out, matched, unmatched = enrich_with_products(reviews, products)
    assert (matched, unmatched) == (1, 0)
    row = out.to_pylist()[0]
    assert (row["asin"], row["variant_asin"], row["brand"], row["main_cat"]) == (
        "B08W5BSH6V", "B0VARIANT1", "Loved Again Media", "SUBSCRIPTION BOXES")


def test_schema_marker_fields_are_distinct_names():
    """The version rule counts a record's marker fields by set intersection (``schema_versions._newer``),
    which counts each listed field once only if every marker list holds distinct names."""
    for names in (sv.REVIEW_ONLY_LEGACY, sv.REVIEW_ONLY_2023, sv.PRODUCT_ONLY_2018, sv.PRODUCT_ONLY_2023):
        assert len(set(names)) == len(names), names
