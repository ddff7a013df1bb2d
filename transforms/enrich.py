"""Deduplication and the product join, inside one shuffle bucket (all rows of a bucket share asin hashes).

Reviews are deduplicated on a content key (reviewer, product, review time, review text): an event
replayed or a review that arrives twice keeps one row. Products are deduplicated on asin *before* the
join, so a left join never fans a review out into several rows.

Which copy of a review survives is a rule on the rows themselves (``preference_order``), never the order
they arrived in, so batch, streaming and reruns keep the same copy: the copy with the most helpful votes
(a later crawl of the same review), then the smallest 64-bit hash of every other field the copies may
differ in (``PREFERENCE_FIELDS``: summary, rating, verified, reviewer name, style, images, ...). Copies
equal in all of those differ only in where they came from; the first in (source, source position) order
is kept. A copy that arrives after the table already holds another copy replaces it when the rule
prefers it (``KnownReviews``; the commit removes the held row and retracts its gold contribution).
"""
import typing

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import keys
from transforms.schemas import (CLEAN_REVIEW_SCHEMA, LINEAGE_SCHEMA, PREDICTION_FIELDS, PRODUCT_FIELDS,
                                SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_SCHEMA)

REVIEW_KEY = ("reviewer_id", "asin", "unix_review_time", "review_text")
# what copies sharing the content key may differ in (derived columns such as review_date follow the key)
PREFERENCE_FIELDS = tuple(n for n in CLEAN_REVIEW_SCHEMA.names
                          if n not in REVIEW_KEY + tuple(LINEAGE_SCHEMA.names)
                          + ("review_time", "review_date", "year", "month", "review_length_words"))
UNBEATABLE_VOTE = np.iinfo(np.int64).max   # known copies another run cannot replace (--known_reviews)


def _in_source_order(tables):
    tables = [t for t in tables if t.num_rows]
    return sorted(tables, key=lambda t: (t["source"][0].as_py(), t["source_position"][0].as_py()))


def preference(table):
    """-> (votes, digests): the two numbers the survivor rule compares (int64 helpful votes, null -> -1;
    uint64 hash of ``PREFERENCE_FIELDS``). More votes win, then the smaller digest."""
    votes = np.asarray(table["vote"].fill_null(-1).to_numpy(), dtype=np.int64)
    return votes, keys.hash_columns(table, list(PREFERENCE_FIELDS))


def beats(votes, digests, held_votes, held_digests):
    """Bool numpy: does each copy (votes, digests) win over the held copy of its key?"""
    return (votes > held_votes) | ((votes == held_votes) & (digests < held_digests))


def preference_order(table, votes_digests=None):
    """Each row's rank by the survivor rule (most votes, smallest digest, then (source, source position)),
    as int64 numpy: among rows sharing a content key, the lowest rank survives. ``votes_digests``: the
    table's ``preference`` when the caller has it already (hashing is the costly part)."""
    votes, digests = votes_digests if votes_digests is not None else preference(table)
    order = np.lexsort((_source_order(table), digests, -votes))
    rank = np.empty(table.num_rows, dtype=np.int64)
    rank[order] = np.arange(table.num_rows)
    return rank


def _first_per_key(table, key, rows):
    """Row numbers (from ``rows``) of the first row of each distinct ``key`` in ``table``."""
    return table.select(list(key)).append_column("_i", rows) \
        .group_by(list(key), use_threads=False).aggregate([("_i", "min")])["_i_min"].to_numpy()


def dedupe_reviews(tables):
    """Clean review tables -> (one table without duplicate content keys, number of rows dropped); of the
    copies of a review, the one ``preference_order`` ranks first survives.

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
    keyed = t.select(list(short))
    groups = keyed.append_column("_i", pa.array(np.arange(t.num_rows, dtype=np.int64))) \
        .group_by(list(short), use_threads=False).aggregate([("_i", "min"), ([], "count_all")])
    if groups.num_rows == t.num_rows:
        return t, 0
    single = pc.equal(groups["count_all"], 1)
    keep = [groups["_i_min"].filter(single).to_numpy()]
    shared = np.flatnonzero(_member(keyed, groups.filter(pc.invert(single)).select(list(short))))
    if shared.size:  # the rule ranks only the rows that share the short key with another row
        candidates = t.take(pa.array(shared))
        rank = preference_order(candidates)
        firsts = _first_per_key(candidates, REVIEW_KEY, pa.array(rank))
        keep.append(shared[np.argsort(rank)[firsts]])
    mask = np.zeros(t.num_rows, dtype=bool)
    mask[np.concatenate(keep)] = True
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


class KnownReviews(typing.NamedTuple):
    """The copies a table already holds, one per content key: sorted content hashes and each held copy's
    ``preference``. ``compare`` tells which new copies are of a held review and which of those win."""
    hashes: np.ndarray
    votes: np.ndarray
    digests: np.ndarray

    @classmethod
    def of(cls, table, unbeatable=False):
        """Rows with ``REVIEW_KEY`` and ``PREFERENCE_FIELDS`` -> the best held copy per content key.
        ``unbeatable``: rows this job cannot replace (another folder's): no copy wins over them."""
        hashes = content_hashes(table)
        if unbeatable:
            votes, digests = np.full(len(hashes), UNBEATABLE_VOTE, np.int64), np.zeros(len(hashes), np.uint64)
        else:
            votes, digests = preference(table)
        return cls.best(hashes, votes, digests)

    @classmethod
    def best(cls, hashes, votes, digests):
        """Copies as three arrays -> the preferred copy of each content hash, sorted by hash."""
        order = np.lexsort((digests, -votes, hashes))   # per hash, the preferred copy first
        hashes, votes, digests = hashes[order], votes[order], digests[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        return cls(hashes[first], votes[first], digests[first])

    @classmethod
    def concat(cls, parts):
        parts = [p for p in parts if p is not None and len(p.hashes)]
        if len(parts) < 2:
            return parts[0] if parts else None
        return cls.best(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._fields))

    def __len__(self):
        return len(self.hashes)

    def compare(self, content, votes, digests):
        """-> (held, wins): bool numpy per new copy: its review is held; it wins over the held copy."""
        if not len(self.hashes):
            none = np.zeros(len(content), dtype=bool)
            return none, none
        i = np.searchsorted(self.hashes, content)
        i[i == len(self.hashes)] = 0
        held = self.hashes[i] == content
        return held, held & beats(votes, digests, self.votes[i], self.digests[i])


KNOWN_COLUMNS = REVIEW_KEY + PREFERENCE_FIELDS   # what a KnownReviews is built from


def known_by_bucket(table, n_buckets, unbeatable=False):
    """{shuffle bucket of asin: KnownReviews}: the reviews a table already holds, keyed the way the dedupe
    step's buckets (batch) or shards (streaming) are."""
    buckets = keys.buckets(table["asin"], n_buckets)
    return {int(b): KnownReviews.of(table.filter(pa.array(buckets == b)), unbeatable) for b in np.unique(buckets)}
