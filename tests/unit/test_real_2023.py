"""The real Amazon Reviews 2023 files (../shared/data/amazon2023) through parse, clean and the product rules.

Every expected count is derived here from the raw records with plain ``json`` and the documented rules,
never written down. Skipped when the shared data is absent. Files are read in 1 MiB chunks of whole
lines, as the job reads them.
"""
import gzip
import json
import re

import pyarrow as pa
import pytest

from transforms import schema_versions as sv
from transforms.clean import clean_reviews
from transforms.enrich import dedupe_products, enrich_with_products
from transforms.expectations import REVIEW_TIME_MIN_S
from transforms.parse import Chunk, classify_line, parse_reviews
from transforms.products import clean_brand, clean_product
from transforms.schemas import CLEAN_REVIEW_SCHEMA

CHUNK_BYTES = 1 << 20
NOW = 1_800_000_000  # 2027-01-15: after every review in the files
TAG = re.compile(r"<[A-Za-z/!][^<>]*>")


def chunks(path):
    data = gzip.open(path).read()
    pos, first = 0, 1
    while pos < len(data):
        end = len(data) if pos + CHUNK_BYTES >= len(data) else data.rfind(b"\n", pos, pos + CHUNK_BYTES) + 1
        yield Chunk(data[pos:end], str(path), first)
        first += data.count(b"\n", pos, end)
        pos = end


def raw_records(path):
    return {i: json.loads(ln) for i, ln in enumerate(gzip.open(path).read().split(b"\n"), 1) if ln.strip()}


def run_file(path):
    rows, dead, counts, records = [], [], {}, 0
    for chunk in chunks(path):
        batch, parse_dead, n = parse_reviews(chunk)
        result = clean_reviews(batch, now_s=NOW)
        rows += result.table.to_pylist()
        dead += parse_dead + result.dead
        records += n
        for name, c in result.expectations.items():
            counts[name] = counts.get(name, 0) + c["failed_rows"]
    return rows, dead, counts, records


def _blank(v):
    return not isinstance(v, str) or not v.strip()


def expected_dead(o):
    """The documented clean rules, in order, applied to a raw 2023 record (None: kept)."""
    if _blank(o.get("parent_asin")):
        return "missing_asin"
    if _blank(o.get("user_id")):
        return "missing_reviewer_id"
    if o.get("rating") is None:
        return "missing_overall"
    if not 1 <= o["rating"] <= 5:
        return "overall_out_of_range"
    if o.get("timestamp") is None:
        return "missing_review_time"
    return None


@pytest.fixture(scope="module")
def review_files(shared_data_2023_dir):
    files = sorted((shared_data_2023_dir / "reviews").glob("*.jsonl.gz"))
    assert files, "no review files under amazon2023/reviews"
    return {f: (raw_records(f), run_file(f)) for f in files}


def test_every_2023_review_parses_and_cleans(review_files):
    total = 0
    for path, (raw, (rows, dead, counts, records)) in review_files.items():
        total += len(raw)
        assert records == len(raw), path.name
        want_dead = {p: r for p, o in raw.items() if (r := expected_dead(o)) is not None}
        assert {d["source_position"]: d["reason"] for d in dead} == want_dead, path.name
        assert len(rows) == len(raw) - len(want_dead), path.name
        for r in rows:
            o = raw[r["source_position"]]
            assert r["schema_version"] == "2023" and r["_rescued_data"] is None
            assert (r["asin"], r["variant_asin"], r["reviewer_id"]) == (o["parent_asin"], o["asin"], o["user_id"])
            assert r["unix_review_time"] == o["timestamp"] // 1000        # seconds
            assert r["overall"] == o["rating"] and r["verified"] is o["verified_purchase"]
            assert r["vote"] == o["helpful_vote"]
            urls = [i.get("large_image_url") or i.get("medium_image_url") or i.get("small_image_url")
                    for i in o["images"]]
            assert r["image_count"] == sum(1 for u in urls if u and u.startswith("http"))
    print(f"{total:,} real 2023 reviews")
    assert total == 31350  # SOURCES.md


def test_2023_timestamps_are_seconds(review_files):
    for _, (rows, _, _, _) in review_files.values():
        times = [r["unix_review_time"] for r in rows]
        assert 8e8 < min(times) and max(times) < 2e9  # 1995 .. 2033 in seconds (ms would be 1e12)
        assert all(r["review_date"].year >= 1998 for r in rows)


def test_2023_expectation_counts_match_the_raw_records(review_files):
    for path, (raw, (rows, _, counts, _)) in review_files.items():
        kept = [raw[r["source_position"]] for r in rows]
        text = [o["text"] if o.get("text") is not None else o.get("title") for o in kept]
        assert counts["empty_review_text"] == sum(1 for t in text if t is None or not TAG.sub(" ", t).strip()), path
        assert counts["asin_shape"] == sum(1 for o in kept if not re.fullmatch("[0-9A-Z]{10}", o["parent_asin"]))
        assert counts["review_time_range"] == sum(
            1 for o in kept if not REVIEW_TIME_MIN_S <= o["timestamp"] // 1000 <= NOW + 86400)
    assert sum(c["asin_shape"] for _, (_, _, c, _) in review_files.values()) == 0   # real asins pass


@pytest.fixture(scope="module")
def metadata_2023(shared_data_2023_dir):
    path = shared_data_2023_dir / "metadata" / "Subscription_Boxes.jsonl.gz"
    rows, dead, raw = [], [], {}
    for i, line in enumerate(gzip.open(path).read().split(b"\n"), 1):
        obj, verdict = classify_line(line)
        if verdict is not None:
            assert verdict.reason is None, (i, verdict)  # blank only
            continue
        raw[i] = json.loads(line)
        row, reason, detail = clean_product(obj, str(path), i, line)
        (rows if row is not None else dead).append(row or (i, reason, detail))
    return raw, rows, dead


def test_2023_metadata_cleans(metadata_2023):
    raw, rows, dead = metadata_2023
    assert dead == [] and len(rows) == len(raw) == 641
    for r in rows:
        o = raw[r["source_position"]]
        assert (r["asin"], r["schema_version"]) == (o["parent_asin"], "2023")
        assert r["brand"] == clean_brand(o["store"])          # store -> brand, through the brand rule
        assert r["main_cat"] == o["main_category"]
        assert r["image_count"] == sum(1 for i in o["images"] if (i.get("large") or "").startswith("http")
                                       or (i.get("hi_res") or "").startswith("http")
                                       or (i.get("thumb") or "").startswith("http"))
        want = {k: v for k, v in o.items() if k not in sv.PRODUCT_KNOWN["2023"] and v not in (None, "", [], {})}
        assert (json.loads(r["_rescued_data"]) if r["_rescued_data"] else {}) == want
    got = sv.product_counts(rows)
    assert got["schema_version"] == {"2023": 641}
    assert got["rescued_fields"]["features"] == sum(1 for o in raw.values() if o["features"])
    assert got["rescued_fields"]["average_rating"] == 641
    assert "description" not in got["rescued_fields"]   # always empty in this file


def test_every_subscription_box_review_finds_its_product(review_files, metadata_2023):
    _, products, _ = metadata_2023
    table, duplicates = dedupe_products(products)
    assert duplicates == 0
    (rows, _, _, _), = [v[1] for p, v in review_files.items() if p.name == "Subscription_Boxes.jsonl.gz"]
    assert len(rows) == 16216
    asins = set(table["asin"].to_pylist())
    assert all(r["asin"] in asins for r in rows)
    _, matched, unmatched = enrich_with_products(pa.Table.from_pylist(rows, schema=CLEAN_REVIEW_SCHEMA), table)
    assert (matched, unmatched) == (16216, 0)


def test_real_2014_and_2018_reviews_keep_their_schema(shared_data_dir):
    """Regression on the older files: each record's version follows the rule, nothing is rescued (their
    reviewTime is a known field), and nothing is dead-lettered."""
    seen = {}
    for path in sorted((shared_data_dir / "reviews").glob("*.jsonl.gz")):
        raw = raw_records(path)
        rows, dead, _, records = run_file(path)
        assert dead == [] and records == len(rows) == len(raw), path.name
        for r in rows:
            o = raw[r["source_position"]]
            want = "2014" if "helpful" in o and not {"vote", "verified", "style", "image"} & set(o) else "2018"
            assert r["schema_version"] == want and r["_rescued_data"] is None and r["variant_asin"] is None
            seen[want] = seen.get(want, 0) + 1
    assert seen.get("2014", 0) > 0 and seen.get("2018", 0) > 0
