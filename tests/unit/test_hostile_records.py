"""Property-based tests (hypothesis): hostile review records through ``parse_reviews`` + ``clean_reviews``.

Records start from a 2014, 2018 or 2023 review, then lose fields, get values of the wrong type, gain
fields of the other schemas and fields no schema knows, with random JSON values (nested, unicode,
integers beyond 64 bits, floats). Whatever comes in:

* nothing raises, and every non-blank line ends either as a clean row or as exactly one dead letter;
* each clean row's ``schema_version`` follows the documented rule (re-implemented here from the
  docstring of ``transforms.schema_versions``), and its ``_rescued_data`` parses back to exactly the
  record's fields that its schema does not know (null values excepted);
* the per-record parser path (a line judged alone) gives the same version, keys and rescued data as
  Arrow's path;
* the drop expectations' counts are exactly their dead letters.

Hostile product records go through ``clean_product``: a row that fits the silver schema, or
``missing_asin``; its rescued data is exactly the non-empty fields no rule knows.
"""
import json

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transforms import schema_versions as sv
from transforms.clean import clean_reviews
from transforms.parse import Chunk, _read_json, parse_reviews

# the schemas as documented (written out again here, independent of the module's constants)
LEGACY_ONLY = {"overall", "verified", "reviewerID", "reviewerName", "reviewText", "summary", "unixReviewTime",
               "vote", "image", "helpful", "style", "reviewTime"}
ONLY_2023 = {"rating", "title", "text", "images", "parent_asin", "user_id", "timestamp", "helpful_vote",
             "verified_purchase"}
KNOWN = {"2014": LEGACY_ONLY | {"asin"}, "2018": LEGACY_ONLY | {"asin"}, "2023": ONLY_2023 | {"asin"}}

BASES = [
    {"reviewerID": "A1", "asin": "0000031852", "reviewerName": "Ann", "helpful": [1, 2], "reviewText": "Nice",
     "overall": 4.0, "summary": "ok", "unixReviewTime": 1398902400, "reviewTime": "05 1, 2014"},
    {"overall": 5.0, "verified": True, "reviewTime": "06 17, 2018", "reviewerID": "A2", "asin": "B004LLIKVU",
     "style": {"Gift Amount:": " 50"}, "reviewerName": "john", "reviewText": "Great.", "summary": "Five",
     "unixReviewTime": 1529193600, "vote": "1,234", "image": ["https://img/1.jpg"]},
    {"rating": 3.0, "title": "t", "text": "x", "images": [{"small_image_url": "https://s", "medium_image_url": "https://m",
     "large_image_url": "https://l", "attachment_type": "IMAGE"}], "asin": "B0VARIANT1", "parent_asin": "B0PARENT01",
     "user_id": "U1", "timestamp": 1588615855070, "helpful_vote": 2, "verified_purchase": True},
]
ALL_FIELDS = sorted(LEGACY_ONLY | ONLY_2023 | {"asin"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)
field_names = st.sampled_from(ALL_FIELDS) | st.text(max_size=10)


@st.composite
def hostile_record(draw):
    base = dict(BASES[draw(st.integers(0, 2))])
    for name in draw(st.sets(st.sampled_from(sorted(base)), max_size=4)):
        del base[name]                                               # missing fields
    for name in draw(st.sets(st.sampled_from(ALL_FIELDS), max_size=3)):
        base[name] = draw(json_values)                               # wrong types, other schema's fields
    other = BASES[draw(st.integers(0, 2))]
    for name in draw(st.sets(st.sampled_from(sorted(other)), max_size=4)):
        base.setdefault(name, other[name])                           # a second schema's fields, real values
    base.update(draw(st.dictionaries(field_names, json_values, max_size=4)))  # unknown fields
    return base


@st.composite
def chunk_lines(draw):
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            lines.append(draw(st.sampled_from([b"", b"   ", b"not json", b"[1, 2]", b'{"asin": "X"'])))
        else:
            lines.append(json.dumps(draw(hostile_record()), ensure_ascii=draw(st.booleans())).encode())
    return lines


def expected_version(obj):
    present = {k for k, v in obj.items() if v is not None}
    if len(present & ONLY_2023) > len(present & LEGACY_ONLY):
        return "2023"
    if "helpful" in present and not present & {"vote", "verified", "style", "image"}:
        return "2014"
    return "2018"


def run(lines, prefix=b""):
    data = b"\n".join(prefix + ln if ln.strip() else ln for ln in lines) + b"\n"
    batch, parse_dead, records = parse_reviews(Chunk(data, "s", 1))
    result = clean_reviews(batch)
    table, dead = result
    drops = {name: c["failed_rows"] for name, c in result.expectations.items() if c["action"] == "drop"}
    assert sum(drops.values()) == len(dead)   # each expectation's count = its dead letters
    assert all(drops[d["reason"]] for d in dead)
    return table, parse_dead + dead, records


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_lines())
@example(lines=[json.dumps(dict(BASES[0], style=[None, None])).encode()])  # found by CI: Arrow's list<null>
@example(lines=[json.dumps(dict(BASES[1], extra=[None, None, None], style={"a": [None, None]})).encode(),
                json.dumps(dict(BASES[2], images=[None, None])).encode()])
def test_hostile_records_reconcile_and_rescue_exactly(lines):
    nonblank = {i + 1 for i, ln in enumerate(lines) if ln.strip()}
    seen = {}
    for prefix in (b"", b" "):
        table, dead, records = run(lines, prefix)
        assert records == len(nonblank)
        rows = table.to_pylist()
        positions = [r["source_position"] for r in rows] + [d["source_position"] for d in dead]
        assert sorted(positions) == sorted(nonblank), "each non-blank line: one row or one dead letter"
        assert table.num_rows + len(dead) == len(nonblank)
        for r in rows:
            obj = json.loads(lines[r["source_position"] - 1])
            version = expected_version(obj)
            assert r["schema_version"] == version
            want = {k: v for k, v in obj.items() if k not in KNOWN[version] and v is not None}
            if want:
                assert json.loads(r["_rescued_data"]) == want
            else:
                assert r["_rescued_data"] is None
            assert r["variant_asin"] is None or version == "2023"
        seen[prefix] = ({r["source_position"]: (r["schema_version"], r["_rescued_data"], r["asin"],
                                                r["variant_asin"], r["reviewer_id"], r["unix_review_time"])
                         for r in rows}, sorted(d["source_position"] for d in dead))
    assert seen[b""] == seen[b" "], "Arrow path and per-record path disagree"


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sets(st.sampled_from(ALL_FIELDS + ["other"])), min_size=1, max_size=20))
def test_vectorised_version_rule_equals_the_per_record_rule(rows):
    n = len(rows)
    valid = {f: np.array([f in r for r in rows]) for f in ALL_FIELDS + ["other"]}
    codes, _, _ = sv.review_version_codes(valid, n)
    for r, code in zip(rows, codes):
        expected = expected_version(dict.fromkeys(r, 1))
        assert sv.review_version(r) == expected
        assert sv.REVIEW_VERSIONS[code] == expected


def test_lists_of_nulls_read_by_arrow_are_valid_arrays():
    """Arrow's JSON reader gives ``[null, null]`` a null child shorter than its offsets (reading it back
    raised ArrowIndexError and crashed the job); the parser's reader hands on arrays that validate."""
    lines = [b'{"style": [null, null], "x": {"a": [null, null, null], "b": [[null], []]}}',
             b'{"style": null, "x": {"a": [null]}}', b'{"style": [null]}']
    table = _read_json(b"\n".join(lines) + b"\n")
    table.validate(full=True)
    assert table.column("style").to_pylist() == [[None, None], None, [None]]
    assert table.column("x").to_pylist() == [{"a": [None] * 3, "b": [[None], []]}, {"a": [None], "b": None}, None]


# ---------------------------------------------------------------------------------------------------
# products

PRODUCT_BASES = [
    {"asin": "B001BKEWF2", "title": "Serendipity 3 $100.00 Gift Card", "brand": "Serendipity 3", "main_cat": "Grocery",
     "category": ["Gift Cards"], "price": "$1,250.00", "imageURL": [], "imageURLHighRes": ["https://i/1.jpg"],
     "rank": "1,786 in Gift Cards (", "date": "May 15, 2009", "description": [], "tech1": "", "also_view": ["B0"]},
    {"main_category": "SUBSCRIPTION BOXES", "title": "Box", "average_rating": 4.1, "rating_number": 75,
     "features": ["f"], "description": [], "price": None, "images": [{"thumb": "https://t", "large": "https://l",
     "variant": "MAIN", "hi_res": None}], "videos": [], "store": "Loved Again", "categories": [], "details": {},
     "parent_asin": "B08W5BSH6V", "bought_together": None},
]
PRODUCT_FIELDS = sorted(set(PRODUCT_BASES[0]) | set(PRODUCT_BASES[1]) | {"image", "feature", "also_buy",
                                                                         "tech2", "fit", "similar_item"})
PRODUCT_KNOWN = {"2018": {"asin", "title", "brand", "main_cat", "category", "price", "image", "imageURL",
                          "imageURLHighRes", "rank", "date", "tech1", "tech2", "fit", "similar_item"},
                 "2023": {"parent_asin", "title", "store", "main_category", "categories", "price", "images"}}


@st.composite
def hostile_product(draw):
    base = dict(PRODUCT_BASES[draw(st.integers(0, 1))])
    for name in draw(st.sets(st.sampled_from(sorted(base)), max_size=4)):
        del base[name]
    for name in draw(st.sets(st.sampled_from(PRODUCT_FIELDS), max_size=3)):
        base[name] = draw(json_values)
    base.update(draw(st.dictionaries(st.sampled_from(PRODUCT_FIELDS) | st.text(max_size=8), json_values, max_size=3)))
    return base


@settings(max_examples=300, deadline=None, database=None)
@given(hostile_product())
def test_hostile_products_clean_or_reject_and_rescue_exactly(obj):
    import pyarrow as pa

    from transforms import reasons
    from transforms.products import clean_product
    from transforms.schemas import SILVER_PRODUCT_SCHEMA

    line = json.dumps(obj).encode()
    row, reason, detail = clean_product(json.loads(line), "s", 1, line)
    present = {k for k, v in obj.items() if v is not None}
    old = {"asin", "brand", "main_cat", "category", "image", "imageURL", "imageURLHighRes", "rank", "date",
           "feature", "also_buy", "also_view", "tech1", "tech2", "fit", "similar_item"}
    new = {"parent_asin", "store", "main_category", "categories", "images", "features", "average_rating",
           "rating_number", "videos", "bought_together"}
    version = "2023" if len(present & new) > len(present & old) else "2018"
    key = obj.get("parent_asin" if version == "2023" else "asin")
    if not (isinstance(key, str) and key.strip()):
        assert (row, reason) == (None, reasons.MISSING_ASIN)
        return
    assert reason is None and row["asin"] == key.strip() and row["schema_version"] == version
    assert pa.Table.from_pylist([row], schema=SILVER_PRODUCT_SCHEMA).num_rows == 1   # every value fits its type
    want = {k: v for k, v in obj.items() if k not in PRODUCT_KNOWN[version] and v not in (None, "", [], {})}
    assert (json.loads(row["_rescued_data"]) if row["_rescued_data"] is not None else {}) == want
