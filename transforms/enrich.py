"""Deduplication and the product join, inside one shuffle bucket (all rows of a bucket share asin hashes).

Reviews are deduplicated on a content key (reviewer, product, review time, review text): an event
replayed or a review that arrives twice keeps one row. Products are deduplicated on asin *before* the
join, so a left join never fans a review out into several rows. Which copy survives is deterministic:
the first in (source, source position) order.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import keys
from transforms.schemas import PREDICTION_FIELDS, PRODUCT_FIELDS, SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_SCHEMA

REVIEW_KEY = ("reviewer_id", "asin", "unix_review_time", "review_text")


def _in_source_order(tables):
    tables = [t for t in tables if t.num_rows]
    return sorted(tables, key=lambda t: (t["source"][0].as_py(), t["source_position"][0].as_py()))


def _first_per_key(table, key, rows):
    """Row numbers (from ``rows``) of the first row of each distinct ``key`` in ``table``."""
    return table.select(list(key)).append_column("_i", rows) \
        .group_by(list(key), use_threads=False).aggregate([("_i", "min")])["_i_min"].to_numpy()


def dedupe_reviews(tables):
    """Clean review tables -> (one table without duplicate content keys, number of rows dropped).

    Comparing review texts is the costly part, so rows are first grouped on the short part of the key;
    only rows that share it with another row (rare) are compared on the text as well.
    """
    tables = _in_source_order(tables)
    if not tables:
        return None, 0
    t = pa.concat_tables(tables)
    if t.num_rows < 2:
        return t, 0
    short = REVIEW_KEY[:-1]
    order = _source_order(t)  # "first" means first in (source, source position) order
    rows = pa.array(order)
    groups = t.select(list(short)).append_column("_i", rows).group_by(list(short), use_threads=False) \
        .aggregate([("_i", "min"), ([], "count_all")])
    if groups.num_rows == t.num_rows:
        return t, 0
    single = pc.equal(groups["count_all"], 1)
    keep = [groups["_i_min"].filter(single).to_numpy()]
    shared_keys = groups.filter(pc.invert(single)).select(list(short))
    shared = np.flatnonzero(_member(t.select(list(short)), shared_keys))
    if shared.size:
        candidates = t.select(list(REVIEW_KEY)).take(pa.array(shared))
        keep.append(_first_per_key(candidates, REVIEW_KEY, pa.array(order[shared])))
    mask = np.zeros(t.num_rows, dtype=bool)
    mask[np.argsort(order)[np.concatenate(keep)]] = True
    return t.filter(pa.array(mask)), t.num_rows - int(mask.sum())  # filter: contiguous copies, unlike take


def _source_order(t):
    """Each row's rank in (source, source_position) order, as int64 numpy."""
    codes = pc.dictionary_encode(t["source"]).combine_chunks()
    by_name = np.argsort(np.asarray(codes.dictionary.to_pylist(), dtype=object), kind="stable")
    name_rank = np.empty_like(by_name)
    name_rank[by_name] = np.arange(len(by_name))
    sources = name_rank[codes.indices.to_numpy()]
    order = np.lexsort((t["source_position"].to_numpy(), sources))
    rank = np.empty(t.num_rows, dtype=np.int64)
    rank[order] = np.arange(t.num_rows)
    return rank


def _member(table, keys):
    """Bool numpy mask: rows of ``table`` whose (multi-column) key is among the rows of ``keys``."""
    marked = keys.append_column("_hit", pa.array(np.ones(keys.num_rows, dtype=bool)))
    joined = table.append_column("_i", pa.array(np.arange(table.num_rows, dtype=np.int64))) \
        .join(marked, keys=list(table.column_names), join_type="left outer", use_threads=False)
    hit = np.zeros(table.num_rows, dtype=bool)
    sel = joined.filter(pc.is_valid(joined["_hit"]))["_i"].to_numpy()
    hit[sel] = True
    return hit


def dedupe_products(rows):
    """Clean product rows (dicts) -> (table in SILVER_PRODUCT_SCHEMA, one row per asin; rows dropped)."""
    seen, out = set(), []
    for row in sorted(rows, key=lambda r: (r["source"], r["source_position"])):
        if row["asin"] not in seen:
            seen.add(row["asin"])
            out.append(row)
    return pa.Table.from_pylist(out, schema=SILVER_PRODUCT_SCHEMA), len(rows) - len(out)


def enrich_with_products(reviews, products):
    """Left join on asin (products unique per asin) -> (silver review table, matched, unmatched). The prediction
    columns are null here (``beam_pipeline.scoring`` fills them when a model is given)."""
    idx = pc.index_in(reviews["asin"], value_set=products["asin"])
    matched = len(idx) - idx.null_count
    cols = {name: reviews[name] for name in reviews.column_names}
    for field in PRODUCT_FIELDS:
        cols[field.name] = products[field.name].take(idx) if products.num_rows else pa.nulls(len(idx), field.type)
    for field in PREDICTION_FIELDS:
        cols.setdefault(field.name, pa.nulls(len(idx), field.type))
    table = pa.Table.from_pydict({f.name: cols[f.name] for f in SILVER_REVIEW_SCHEMA}, schema=SILVER_REVIEW_SCHEMA)
    return table, matched, len(idx) - matched


CONTENT_SALT = np.uint64(0xA5A5A5A5A5A5A5A5)  # keeps content hashes apart from position hashes in one state


def content_hashes(table):
    """64-bit hashes of the dedupe content key (``REVIEW_KEY``) of each row: how both modes recognise a
    review that an earlier run (or an earlier pane) already holds."""
    return keys.hash_columns(table, list(REVIEW_KEY)) ^ CONTENT_SALT


def content_hashes_by_bucket(table, n_buckets):
    """{shuffle bucket of asin: sorted unique content hashes}: the reviews a table already holds, keyed the
    way the dedupe step's buckets (batch) or shards (streaming) are."""
    hashes, buckets = content_hashes(table), keys.buckets(table["asin"], n_buckets)
    return {int(b): np.unique(hashes[buckets == b]) for b in np.unique(buckets)}
