"""Readers and independent checks of the job's outputs, shared by the end-to-end tests.

Everything here reads the published files back with pyarrow / json and recomputes what it compares with
plain Python (collections, datetime), so a check never trusts the job's own code for its expectation.
"""
from __future__ import annotations

import collections
import datetime
import glob
import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from transforms.gold import DERIVED, FAMILIES
from transforms.schemas import (REVIEW_PARTITION_COLUMNS, SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_FILE_SCHEMA,
                               SILVER_REVIEW_SCHEMA)

DAY = 86400
UTC = datetime.timezone.utc
CONTENT_KEY = ("reviewer_id", "asin", "unix_review_time", "review_text")


# ------------------------------------------------------------------------------------------ reading
# Batch outputs are Delta tables (read at the versions of the last committed run, as a consumer would);
# streaming outputs are still hive-partitioned Parquet folders: each reader handles both.
def _loc(root):
    from beam_pipeline.tables import Location
    return Location(str(root))


def is_delta(root, rel="silver/reviews") -> bool:
    return Path(root, rel, "_delta_log").is_dir()


def _table(root, rel) -> pa.Table:
    from beam_pipeline import tables
    return tables.read(_loc(root), rel)


def table(root, rel) -> pa.Table:
    """Any of the job's Delta tables, at the versions of the last committed run."""
    return _table(root, rel)


def silver_reviews(root) -> pa.Table:
    if is_delta(root):
        return _table(root, "silver/reviews")
    return ds.dataset(os.path.join(root, "silver", "reviews"), format="parquet", partitioning="hive").to_table()


def silver_review_files(root) -> list[Path]:
    if is_delta(root):
        from beam_pipeline import tables
        t = tables.open_table(_loc(root), "silver/reviews", tables.snapshot_versions(_loc(root))["silver/reviews"])
        return sorted(Path(u) for u in t.file_uris())
    return sorted(Path(root, "silver", "reviews").glob("year=*/month=*/*.parquet"))


def silver_products(root) -> pa.Table:
    if is_delta(root, "silver/products"):
        return _table(root, "silver/products")
    return ds.dataset(os.path.join(root, "silver", "products"), format="parquet").to_table()


def gold(root, family: str) -> pa.Table:
    if is_delta(root, f"gold/{family}"):
        return _table(root, f"gold/{family}")
    return pq.read_table(os.path.join(root, "gold", family, "part-00000.parquet"))


def gold_families(root) -> set[str]:
    """The gold tables the last committed run left (non-empty ones: a family dropped since is emptied)."""
    if is_delta(root):
        from beam_pipeline import tables
        return {rel.split("/", 1)[1] for rel in tables.snapshot_versions(_loc(root))
                if rel.startswith("gold/") and _table(root, rel).num_rows}
    return {p.name for p in Path(root, "gold").iterdir()}


def dead_letters(root) -> list[dict]:
    if is_delta(root, "dead_letters"):
        rows = _table(root, "dead_letters").to_pylist()
        for r in rows:
            r.pop("run_id", None)
        return sorted(rows, key=lambda d: (d["source"] or "", d["source_position"] or 0))
    out = []
    for path in sorted(glob.glob(os.path.join(root, "dead_letters", "*.jsonl"))):
        with open(path, "rb") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def run_summary(root) -> dict:
    """The summary of the last committed run (batch: from the event log)."""
    if is_delta(root, "_pipeline/events"):
        from beam_pipeline import tables
        return tables.last_summary(_loc(root))
    with open(os.path.join(root, "_run_summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def staged_files(root) -> list[str]:
    """Files a reader could mistake for output: staging areas, pending intents, and (Delta) data files
    in a table folder that no version of the table references."""
    left = [str(p) for p in Path(root, "_staging").rglob("*") if p.is_file()]
    left += [str(p) for p in Path(root, "_pipeline", "_staged").rglob("*") if p.is_file()]
    left += [str(p) for p in Path(root, "_pipeline", "_intents").rglob("*") if p.is_file()]
    return left + unreferenced_files(root)


def unreferenced_files(root) -> list[str]:
    """Parquet files inside Delta table folders that no version's log ever added."""
    from beam_pipeline import tables
    out = []
    for rel in tables.all_tables(_loc(root)):
        added = set()
        for log in Path(root, rel, "_delta_log").glob("*.json"):
            for line in log.read_text().splitlines():
                action = json.loads(line)
                if "add" in action:
                    added.add(action["add"]["path"])
        out += [str(p) for p in Path(root, rel).glob("*.parquet") if p.name not in added]
    return out


def read_lines(path) -> list[bytes]:
    """The lines of a (possibly gzipped) JSON-lines file, without their newline."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


# ------------------------------------------------------------------------------------------ helpers
def epoch(ts) -> int | None:
    return None if ts is None else int(ts.timestamp())


def sentiment(rating: float) -> str:
    """The documented rule (transforms/labels.py docstring), restated: <=2 negative, >=4 positive."""
    return "negative" if rating <= 2 else ("positive" if rating >= 4 else "neutral")


def parquet_representable(schema: pa.Schema) -> pa.Schema:
    """Parquet has no seconds unit for timestamps: pyarrow writes (and reads back) timestamp[s] as [ms]."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.unit == "s":
            f = f.with_type(pa.timestamp("ms", tz=f.type.tz))
        fields.append(f)
    return pa.schema(fields)


# ------------------------------------------------------------------------------------------ checks
def check_silver_layout(root, rows: list[dict]):
    """Every row's time columns agree (year, month, review_date, review_time, unix_review_time); no
    empty files. Delta: a handful of files, not one per bucket and month (at most a few per shuffle
    bucket); Parquet (streaming): partition directories agree with every row's review_date."""
    files = silver_review_files(root)
    assert files, "no silver review files"
    seen = 0
    delta = is_delta(root)
    for path in files:
        t = pq.read_table(path)
        assert t.num_rows > 0
        if delta:
            assert {"year", "month"} <= set(t.column_names)
        else:
            year = int(path.parent.parent.name.split("=", 1)[1])
            month = int(path.parent.name.split("=", 1)[1])
            assert not set(REVIEW_PARTITION_COLUMNS) & set(t.column_names)
            for r in t.select(["review_date"]).to_pylist():
                assert (r["review_date"].year, r["review_date"].month) == (year, month), (path, r)
        for r in t.select(["review_date", "review_time", "unix_review_time"]).to_pylist():
            assert r["review_date"] == datetime.datetime.fromtimestamp(r["unix_review_time"], UTC).date()
            assert epoch(r["review_time"]) == r["unix_review_time"]
        seen += t.num_rows
    assert seen == len(rows)
    if delta:
        assert len(files) <= 8 * max(1, -(-len(rows) // 400_000)), f"{len(files)} files for {len(rows)} rows"
    for r in rows:
        assert (r["year"], r["month"]) == (r["review_date"].year, r["review_date"].month)


def check_silver_schema(root):
    if is_delta(root):
        from beam_pipeline.tables import delta_schema
        table = silver_reviews(root)
        assert table.schema.remove_metadata().equals(delta_schema(SILVER_REVIEW_SCHEMA)), table.schema
        assert silver_products(root).schema.remove_metadata().equals(delta_schema(SILVER_PRODUCT_SCHEMA))
        return
    expected = parquet_representable(SILVER_REVIEW_FILE_SCHEMA)
    for path in silver_review_files(root):
        assert pq.read_schema(path).remove_metadata().equals(expected), path
    table = silver_reviews(root)
    assert table.schema.names == SILVER_REVIEW_FILE_SCHEMA.names + list(REVIEW_PARTITION_COLUMNS)
    for name in REVIEW_PARTITION_COLUMNS:
        assert pa.types.is_integer(table.schema.field(name).type)
    products = silver_products(root)
    assert products.schema.remove_metadata().equals(parquet_representable(SILVER_PRODUCT_SCHEMA))


def check_no_duplicate_content_keys(rows: list[dict]):
    keys = collections.Counter(tuple(r[k] for k in CONTENT_KEY) for r in rows)
    dup = [k for k, n in keys.items() if n > 1]
    assert not dup, dup[:3]


def check_dead_letters_point_at_their_lines(letters: list[dict], source_lines: dict[str, list[bytes]],
                                            payload_limit: int = 4096):
    """Each dead letter has stage, reason, a source among the inputs, a 1-based position, and the raw
    line at that position as its payload (cut at ``payload_limit`` bytes, invalid UTF-8 escaped)."""
    for d in letters:
        assert d["record_type"] in ("review", "product")
        assert d["stage"] and d["reason"]
        assert d["source"] in source_lines, d["source"]
        assert isinstance(d["source_position"], int) and d["source_position"] >= 1
        line = source_lines[d["source"]][d["source_position"] - 1].rstrip(b"\r")
        assert line.strip(), d
        assert d["payload_bytes"] == len(line)
        assert d["payload_truncated"] == (len(line) > payload_limit)
        assert d["payload"] == line[:payload_limit].decode("utf-8", "backslashreplace")
        assert d["payload"]


def expected_dead_by_outcome(manifest_part: dict) -> collections.Counter:
    """manifest {defects, defect_outcomes} -> Counter of "stage/reason" for the dead kinds."""
    out = collections.Counter()
    for kind, n in manifest_part["defects"].items():
        outcome = manifest_part["defect_outcomes"][kind]
        if outcome != "silver" and n:
            out[outcome] += n
    return out


def check_against_manifest(root, manifest: dict, source_lines: dict[str, list[bytes]] | None = None):
    """The published outputs of a run over ``manifest``'s whole data set, checked against it."""
    rows = silver_reviews(root).to_pylist()
    products = silver_products(root).to_pylist()
    letters = dead_letters(root)
    summary = run_summary(root)
    mr, mp = manifest["reviews"], manifest["products"]

    assert len(rows) == mr["silver_rows"]
    assert len(products) == mp["silver_rows"]
    assert len({p["asin"] for p in products}) == len(products)

    by_type = {t: [d for d in letters if d["record_type"] == t] for t in ("review", "product")}
    assert collections.Counter(d["reason"] for d in by_type["review"]) == collections.Counter(mr["dead_by_reason"])
    assert collections.Counter(d["reason"] for d in by_type["product"]) == collections.Counter(mp["dead_by_reason"])
    assert collections.Counter(f"{d['stage']}/{d['reason']}" for d in by_type["review"]) == \
        expected_dead_by_outcome(mr)
    assert collections.Counter(f"{d['stage']}/{d['reason']}" for d in by_type["product"]) == \
        expected_dead_by_outcome(mp)
    if source_lines is not None:
        check_dead_letters_point_at_their_lines(letters, source_lines)
    assert len({(d["source"], d["source_position"]) for d in letters}) == len(letters)

    for kind, m, rtype in (("reviews", mr, "review"), ("products", mp, "product")):
        s = summary[kind]
        assert s["records_read"] == m["records_in"]
        assert s["silver_rows"] == m["silver_rows"]
        assert s["duplicates_dropped"] == m["duplicates"]
        assert s["dead_letters"] == len(by_type[rtype]) == m["dead"]
        assert s["records_read"] == s["silver_rows"] + s["dead_letters"] + s["duplicates_dropped"]
        assert s["reconciled"] is True
        assert s["dead_letters_by_reason"] == dict(collections.Counter(
            f"{d['stage']}.{d['reason']}" for d in by_type[rtype]))

    product_asins = {p["asin"] for p in products}
    matched = sum(1 for r in rows if r["asin"] in product_asins)
    assert matched == mr["matched_products"] == summary["reviews"]["products_matched"]
    assert len(rows) - matched == mr["unmatched_products"] == summary["reviews"]["products_unmatched"]
    # joined product columns come from the product row of the same asin
    by_asin = {p["asin"]: p for p in products}
    for r in rows:
        p = by_asin.get(r["asin"])
        for col in ("title", "brand", "main_cat", "price"):
            assert r[col] == (p[col] if p else None)

    check_no_duplicate_content_keys(rows)
    check_silver_layout(root, rows)
    check_silver_schema(root)
    assert not staged_files(root)
    return rows, products, letters, summary


# ------------------------------------------------------------------------------------------ gold
def _windowed(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for r in rows:
        if r["window_start"] is not None:
            assert epoch(r["window_end"]) - epoch(r["window_start"]) == DAY
    return [r for r in rows if r["window_start"] is not None]


def _totals(table: pa.Table) -> list[dict]:
    return [r for r in table.to_pylist() if r["window_start"] is None and r["window_end"] is None]


def check_gold(root, rows: list[dict], products: list[dict], top_n: int):
    """Recompute gold families from the silver rows with plain Python and compare with the gold tables
    (fixed 1-day windows aligned on the epoch, the job's defaults)."""
    day = lambda r: r["unix_review_time"] // DAY * DAY  # noqa: E731
    assert gold_families(root) == {f.name for f in FAMILIES} | set(DERIVED)

    # reviews: totals and per window
    g = gold(root, "reviews")
    n, s = collections.Counter(), collections.Counter()
    for r in rows:
        n[day(r)] += 1
        s[day(r)] += r["overall"]
    assert {epoch(x["window_start"]): (x["n_reviews"], x["sum_overall"]) for x in _windowed(g)} == \
        {w: (n[w], s[w]) for w in n}
    (total,) = _totals(g)
    assert total["n_reviews"] == len(rows)
    assert total["sum_overall"] == sum(r["overall"] for r in rows)
    assert abs(total["mean_overall"] - total["sum_overall"] / len(rows)) < 1e-12

    # reviews_by_rating
    g = gold(root, "reviews_by_rating")
    assert {(epoch(x["window_start"]), x["overall"]): x["n_reviews"] for x in _windowed(g)} == \
        dict(collections.Counter((day(r), r["overall"]) for r in rows))
    assert {x["overall"]: x["n_reviews"] for x in _totals(g)} == dict(collections.Counter(r["overall"] for r in rows))

    # reviews_by_main_cat, with distinct products, per window and in all
    g = gold(root, "reviews_by_main_cat")

    def by_cat(key):
        acc = {}
        for r in rows:
            k = key(r)
            cnt, tot, asins = acc.get(k, (0, 0.0, set()))
            asins.add(r["asin"])
            acc[k] = (cnt + 1, tot + r["overall"], asins)
        return {k: (c, t, len(a)) for k, (c, t, a) in acc.items()}

    assert {x["main_cat"]: (x["n_reviews"], x["sum_overall"], x["n_products"]) for x in _totals(g)} == \
        by_cat(lambda r: r["main_cat"])
    assert {(epoch(x["window_start"]), x["main_cat"]): (x["n_reviews"], x["sum_overall"], x["n_products"])
            for x in _windowed(g)} == by_cat(lambda r: (day(r), r["main_cat"]))

    # top_reviewers: all-time top N by review count, ties by reviewer id
    g = gold(root, "top_reviewers")
    cnt, tot = collections.Counter(), collections.Counter()
    for r in rows:
        cnt[r["reviewer_id"]] += 1
        tot[r["reviewer_id"]] += r["overall"]
    ranked = sorted(cnt, key=lambda k: (-cnt[k], k))[:top_n]
    assert [(x["rank"], x["reviewer_id"], x["n_reviews"], x["sum_overall"])
            for x in sorted(_totals(g), key=lambda x: x["rank"])] == \
        [(i + 1, k, cnt[k], tot[k]) for i, k in enumerate(ranked)]
    per_window = collections.defaultdict(list)
    for x in _windowed(g):
        per_window[epoch(x["window_start"])].append(x)
    assert set(per_window) == {day(r) for r in rows}
    assert max(len(v) for v in per_window.values()) <= top_n

    # sentiment_by_year
    g = gold(root, "sentiment_by_year")
    assert {(x["year"], x["sentiment"]): x["n_reviews"] for x in _totals(g)} == \
        dict(collections.Counter((r["review_date"].year, sentiment(r["overall"])) for r in rows))
    assert {(epoch(x["window_start"]), x["year"], x["sentiment"]): x["n_reviews"] for x in _windowed(g)} == \
        dict(collections.Counter((day(r), r["review_date"].year, sentiment(r["overall"])) for r in rows))

    # products_by_main_cat (metadata, all-time only)
    g = gold(root, "products_by_main_cat")
    assert not _windowed(g)
    acc = {}
    for p in products:
        c, i = acc.get(p["main_cat"], (0, 0))
        acc[p["main_cat"]] = (c + 1, i + p["image_count"])
    assert {x["main_cat"]: (x["n_products"], x["sum_image_count"]) for x in _totals(g)} == acc
