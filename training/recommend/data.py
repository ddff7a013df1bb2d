"""Interactions for the recommenders, read through the pipeline's own parsing and cleaning.

Sources (either):

* raw review files (``--reviews``, 2014 / 2018 / 2023 schemas): each file is cut into ``transforms.parse.Chunk``
  pieces of whole lines and goes through ``transforms.parse.parse_reviews`` then
  ``transforms.clean.clean_reviews``, the two pure functions the Beam job applies, so the rows are the
  silver rows (2023 records: ``asin`` is the ``parent_asin``, timestamps floored to seconds, rows a drop
  expectation rejects are left out exactly as the job leaves them out). Product metadata (``--products``)
  goes through ``transforms.parse.classify_line`` and ``transforms.products.clean_product``.
* a silver Delta table (``--silver``, what the job writes under ``<output>/silver/reviews``), read with
  ``beam_pipeline.tables.arrow_of``; when a sibling ``silver/products`` table exists its
  categories are used too.

Interaction rules (``interactions``):

1. A review's category is the stem of its source file (``Books.jsonl.gz`` -> ``Books``; the real data has one
   file per category).
2. Copies: the same review (same reviewer, review time, summary and text) posted on several product variants
   is ONE interaction; the copy kept is the one with the smallest ``asin`` (byte order).
3. A reviewer who reviewed the same product more than once has one interaction with it, at the time of
   the FIRST review (the engagement began then).
"""
from __future__ import annotations

import glob
import gzip
import os
import re
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import keys

CHUNK_BYTES = 4 << 20
_EXTENSIONS = re.compile(r"(\.jsonl?|\.json|\.gz|\.bz2)+$")
REVIEW_COLUMNS = ["reviewer_id", "asin", "unix_review_time", "summary", "review_text", "source"]
INTERACTION_SCHEMA = pa.schema([("reviewer_id", pa.string()), ("asin", pa.string()),
                                ("ts", pa.int64()), ("category", pa.string())])
PRODUCT_SCHEMA = pa.schema([("asin", pa.string()), ("brand", pa.string()), ("main_cat", pa.string()),
                            ("categories", pa.list_(pa.string()))])


class DataError(ValueError):
    """Bad input paths or data: the CLI prints it in one line and exits 2."""


def log(msg: str) -> None:
    """A progress line on stderr (long steps say what they do and how long they took)."""
    print(f"[recommend {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def expand(patterns: str | list[str] | None) -> list[str]:
    """Comma-separated paths or globs -> sorted existing files; a pattern that matches nothing is an error."""
    if not patterns:
        return []
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files: list[str] = []
    for p in patterns:
        p = p.strip()
        hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else ([p] if os.path.isfile(p) else [])
        if os.path.isdir(p):
            hits = sorted(glob.glob(os.path.join(p, "*.json*")))
        if not hits:
            raise DataError(f"no file matches {p!r}")
        files += hits
    return files


def category_of(source: str) -> str:
    """``.../reviews/Books.jsonl.gz`` -> ``Books`` (rule 1)."""
    return _EXTENSIONS.sub("", os.path.basename(source or ""))


def _read_bytes(path: str) -> bytes:
    with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
        return f.read()


def _chunks(data: bytes, source: str, size: int = CHUNK_BYTES):
    """Whole-line chunks of ``data`` with their first line number (1-based), as the job cuts them."""
    from transforms.parse import Chunk
    pos, first = 0, 1
    while pos < len(data):
        end = len(data) if pos + size >= len(data) else data.rfind(b"\n", pos, pos + size) + 1
        if end <= pos:  # one line longer than the chunk: take it whole
            nl = data.find(b"\n", pos + size)
            end = len(data) if nl < 0 else nl + 1
        yield Chunk(data[pos:end], source, first)
        first += data.count(b"\n", pos, end)
        pos = end


def read_review_files(files: list[str], now_s: int | None = None) -> pa.Table:
    """Raw review files -> clean rows (``REVIEW_COLUMNS``) via ``parse_reviews`` + ``clean_reviews``."""
    from transforms.clean import clean_reviews
    from transforms.parse import parse_reviews
    tables, dead = [], 0
    for path in files:
        for chunk in _chunks(_read_bytes(path), path):
            batch, parse_dead, _ = parse_reviews(chunk)
            result = clean_reviews(batch, now_s=now_s)
            dead += len(parse_dead) + len(result.dead)
            tables.append(result.table.select(REVIEW_COLUMNS))
    if not tables:
        raise DataError("no review rows in " + ", ".join(files))
    out = pa.concat_tables(tables)
    log(f"read {out.num_rows:,} clean review rows from {len(files)} files ({dead:,} dead letters left out)")
    return out


def read_product_files(files: list[str]) -> pa.Table:
    """Product metadata files -> ``PRODUCT_SCHEMA`` rows via ``classify_line`` + ``clean_product``."""
    from transforms.parse import classify_line
    from transforms.products import clean_product
    rows = []
    for path in files:
        for i, line in enumerate(_read_bytes(path).split(b"\n"), 1):
            obj, verdict = classify_line(line)
            if verdict is not None:
                continue
            row, _, _ = clean_product(obj, path, i, line)
            if row is not None:
                rows.append({k: row[k] for k in PRODUCT_SCHEMA.names})
    return dedupe_products(pa.Table.from_pylist(rows, schema=PRODUCT_SCHEMA))


def dedupe_products(products: pa.Table) -> pa.Table:
    """One row per asin: the first row seen (metadata files repeat some asins)."""
    if products.num_rows == 0:
        return products
    asin = products["asin"].to_numpy(zero_copy_only=False)
    _, first = np.unique(asin, return_index=True)
    return products.take(pa.array(np.sort(first)))


def read_silver(path: str) -> tuple[pa.Table, pa.Table]:
    """A silver review Delta table (and its sibling ``products`` table if any) -> (reviews, products)."""
    import deltalake
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        raise DataError(f"{path!r} is not a Delta table (no _delta_log folder)")
    from beam_pipeline.tables import arrow_of
    t = arrow_of(deltalake.DeltaTable(path))
    missing = [c for c in REVIEW_COLUMNS if c not in t.column_names]
    if missing:
        raise DataError(f"{path!r} lacks the silver columns {missing}")
    reviews = t.select(REVIEW_COLUMNS)
    prod_cols = {"asin": t["asin"],
                 "brand": t["brand"] if "brand" in t.column_names else pa.nulls(t.num_rows, pa.string()),
                 "main_cat": t["main_cat"] if "main_cat" in t.column_names else pa.nulls(t.num_rows, pa.string()),
                 "categories": pa.nulls(t.num_rows, pa.list_(pa.string()))}
    products = pa.table(prod_cols, schema=PRODUCT_SCHEMA)
    sibling = os.path.join(os.path.dirname(os.path.normpath(path)), "products")
    if os.path.isdir(os.path.join(sibling, "_delta_log")):
        p = arrow_of(deltalake.DeltaTable(sibling))
        products = pa.concat_tables([p.select(PRODUCT_SCHEMA.names).cast(PRODUCT_SCHEMA), products])
    products = products.filter(pc.or_(pc.is_valid(products["brand"]),
                                      pc.or_(pc.is_valid(products["main_cat"]), pc.is_valid(products["categories"]))))
    log(f"read {reviews.num_rows:,} silver review rows from {path}")
    return reviews, dedupe_products(products)


def load(reviews: str | None = None, products: str | None = None, silver: str | None = None,
         now_s: int | None = None) -> tuple[pa.Table, pa.Table]:
    """The CLI's sources -> (interactions, products). Exactly one of ``reviews`` / ``silver``."""
    if bool(reviews) == bool(silver):
        raise DataError("give exactly one of --reviews or --silver")
    t0 = time.perf_counter()
    if silver:
        if not os.path.exists(silver):
            raise DataError(f"--silver {silver!r} does not exist")
        rows, prods = read_silver(silver)
    else:
        rows = read_review_files(expand(reviews), now_s)
        prods = PRODUCT_SCHEMA.empty_table()
    if products:
        prods = dedupe_products(pa.concat_tables([read_product_files(expand(products)), prods]))
    inter = interactions(rows)
    log(f"{inter.num_rows:,} interactions ({rows.num_rows - inter.num_rows:,} copies/repeats collapsed), "
        f"{len(pc.unique(inter['reviewer_id'])):,} reviewers, {len(pc.unique(inter['asin'])):,} products, "
        f"{prods.num_rows:,} products with metadata, in {time.perf_counter() - t0:.1f}s")
    return inter, prods


def interactions(rows: pa.Table) -> pa.Table:
    """Clean review rows -> ``INTERACTION_SCHEMA`` rows under rules 1-3 of the module docstring.

    Output sorted by (reviewer_id, ts, asin)."""
    n = rows.num_rows
    if n == 0:
        return INTERACTION_SCHEMA.empty_table()
    rid = np.asarray(rows["reviewer_id"].to_numpy(zero_copy_only=False), dtype=object)
    asin = np.asarray(rows["asin"].to_numpy(zero_copy_only=False), dtype=object)
    ts = np.asarray(rows["unix_review_time"].to_numpy(zero_copy_only=False), dtype=np.int64)
    src = rows["source"].to_pylist()
    cats = {s: category_of(s) for s in set(src)}
    cat = np.array([cats[s] for s in src], dtype=object)
    # rule 2: a review = (reviewer, time, summary, text), identified by the project's 64-bit row hash
    # (transforms.keys.hash_columns; a collision among 10^5 rows has odds ~1e-10); keep its smallest asin
    filled = pa.table({c: pc.fill_null(rows[c], "") if c in ("summary", "review_text") else rows[c]
                       for c in ("reviewer_id", "unix_review_time", "summary", "review_text")})
    _, review_id = np.unique(keys.hash_columns(filled, filled.column_names), return_inverse=True)
    order = np.lexsort((asin.astype(str), review_id))
    first = np.ones(n, dtype=bool)
    first[1:] = review_id[order][1:] != review_id[order][:-1]
    keep = order[first]
    rid, asin, ts, cat = rid[keep], asin[keep], ts[keep], cat[keep]
    # rule 3: one interaction per (reviewer, asin), at its first time
    order = np.lexsort((ts, asin.astype(str), rid.astype(str)))
    pair_first = np.ones(len(order), dtype=bool)
    pair_first[1:] = (rid[order][1:] != rid[order][:-1]) | (asin[order][1:] != asin[order][:-1])
    keep = order[pair_first]
    rid, asin, ts, cat = rid[keep], asin[keep], ts[keep], cat[keep]
    order = np.lexsort((asin.astype(str), ts, rid.astype(str)))
    return pa.table({"reviewer_id": pa.array(rid[order], pa.string()), "asin": pa.array(asin[order], pa.string()),
                     "ts": pa.array(ts[order], pa.int64()), "category": pa.array(cat[order], pa.string())},
                    schema=INTERACTION_SCHEMA)

