"""Unit tests for transforms.keys (stable hashing, buckets) and transforms.enrich (dedupe, product join).

Clean/silver tables are built directly with pyarrow from the schemas; the expected survivors of a
dedupe are computed with a plain-Python reference of the survivor rule (per content key: most helpful
votes, then the smallest digest of the other fields, then the first (source, source_position)), the
expected join with a dict lookup.
"""
import datetime as dt
import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from transforms.clean import clean_reviews
from transforms.enrich import (PREFERENCE_FIELDS, REVIEW_KEY, KnownReviews, content_hashes, dedupe_products,
                               dedupe_reviews, enrich_with_products, preference)
from transforms.keys import buckets, hash_columns, hash_strings, hash_values, split_by_bucket
from transforms.parse import Chunk, parse_reviews
from transforms.schemas import CLEAN_REVIEW_SCHEMA, PRODUCT_FIELDS, SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_SCHEMA

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------
# builders

def review_table(rows, schema=CLEAN_REVIEW_SCHEMA):
    """Dicts -> a table in ``schema``; time columns derived from unix_review_time, the rest defaulted."""
    full = []
    for r in rows:
        t = r.get("unix_review_time", 1388534400)
        when = dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)
        row = {"reviewer_id": "R1", "asin": "A1", "overall": 5.0, "verified": True, "vote": 0,
               "unix_review_time": t, "review_time": when, "review_date": when.date(), "year": when.year,
               "month": when.month, "review_text": "text", "review_text_from_summary": False,
               "review_length_words": 1, "source": "s.json", "source_position": 1}
        row.update(r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=schema)


def product_row(asin, source="p.json", position=1, **fields):
    row = {f.name: None for f in SILVER_PRODUCT_SCHEMA}
    row.update(asin=asin, source=source, source_position=position, image_count=0)
    row.update(fields)
    return row


def _keys(table):
    return [tuple(r[k] for k in REVIEW_KEY) for r in table.select(list(REVIEW_KEY)).to_pylist()]


def _digest(row):
    """The survivor rule's digest of one row, hashed on its own (so the reference shares no batch with
    the code under test)."""
    one = pa.Table.from_pylist([row], schema=CLEAN_REVIEW_SCHEMA)
    return int(hash_columns(one, list(PREFERENCE_FIELDS))[0])


def _reference_dedupe(tables):
    rows = [r for t in tables for r in t.to_pylist()]
    best = {}
    for r in rows:
        k = tuple(r[c] for c in REVIEW_KEY)
        rank = (-(r["vote"] if r["vote"] is not None else -1), _digest(r), r["source"], r["source_position"])
        if k not in best or rank < best[k][0]:
            best[k] = (rank, (r["source"], r["source_position"]))
    return [v[1] for v in best.values()], len(rows) - len(best)


def _lineage(table):
    return sorted(zip(table["source"].to_pylist(), table["source_position"].to_pylist()))


# ---------------------------------------------------------------------------------------------------
# hash_strings

VALUES = ["B000123", "", None, "\0", "a", "a\0", "ab", "ba", "A" * 300, "\u00e9t\u00e9", "x y", None, "B000123"]


def test_hash_is_deterministic_and_uint64():
    arr = pa.array(VALUES, type=pa.string())
    h1, h2 = hash_strings(arr), hash_strings(pa.array(list(VALUES), type=pa.string()))
    assert h1.dtype == np.uint64 and len(h1) == len(VALUES)
    assert np.array_equal(h1, h2)
    assert h1[0] == h1[-1]          # equal strings, equal hashes
    assert h1[2] == h1[11]          # null -> one fixed value


def test_hash_is_stable_across_processes():
    # Python's own str hash changes per process (PYTHONHASHSEED); this one must not
    code = ("import json, pyarrow as pa; from transforms.keys import hash_strings; "
            f"print(json.dumps([int(x) for x in hash_strings(pa.array({VALUES!r}, type=pa.string()))]))")
    here = [int(x) for x in hash_strings(pa.array(VALUES, type=pa.string()))]
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=60)
        assert json.loads(out.stdout) == here


def test_hash_distinguishes_empty_null_and_nul():
    h = hash_strings(pa.array(["", None, "\0", "\0\0", "a", "a\0", "ab", "ba"], type=pa.string()))
    assert len(set(h.tolist())) == 8


def test_hash_independent_of_chunking_slicing_and_string_type():
    full = hash_strings(pa.array(VALUES, type=pa.string()))
    chunked = pa.chunked_array([pa.array(VALUES[:3], pa.string()), pa.array([], pa.string()),
                                pa.array(VALUES[3:9], pa.string()), pa.array(VALUES[9:], pa.string())])
    assert np.array_equal(hash_strings(chunked), full)
    arr = pa.array(VALUES, type=pa.string())
    for start in range(len(VALUES)):
        for length in (0, 1, 3, len(VALUES) - start):
            assert np.array_equal(hash_strings(arr.slice(start, length)), full[start:start + length])
    assert np.array_equal(hash_strings(pa.array(VALUES, type=pa.large_string())), full)


def test_hash_of_long_strings():
    base = "x" * 1000
    other = base[:900] + "y" + base[901:]
    h = hash_strings(pa.array([base, other, base], type=pa.string()))
    assert h[0] == h[2] and h[0] != h[1]
    # a later call with short strings only agrees with an earlier one
    assert hash_strings(pa.array(["B1"]))[0] == hash_strings(pa.array(["B0", "B1"]))[1]


def test_hash_empty_array():
    assert hash_strings(pa.array([], type=pa.string())).tolist() == []
    assert hash_strings(pa.chunked_array([], type=pa.string())).tolist() == []


def _random_ids(n, seed=7):
    rng = random.Random(seed)
    alphabet = string.ascii_uppercase + string.digits
    return ["B" + "".join(rng.choice(alphabet) for _ in range(9)) for _ in range(n)]


@pytest.mark.parametrize("n_buckets", [1, 2, 7, 64, 1000])
def test_buckets_in_range(n_buckets):
    b = buckets(pa.array(_random_ids(2000) + [None, ""]), n_buckets)
    assert b.dtype == np.int64
    assert b.min() >= 0 and b.max() < n_buckets


def test_buckets_roughly_uniform():
    ids = _random_ids(10_000)
    assert len(set(ids)) == 10_000
    k = 16
    counts = np.bincount(buckets(pa.array(ids), k), minlength=k)
    expected = 10_000 / k                                   # 625, standard deviation about 24
    assert counts.min() > expected - 150 and counts.max() < expected + 150
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50.0                                      # 15 degrees of freedom: p < 1e-5 above 50


def test_buckets_uniform_for_sequential_ids():
    ids = [f"B{i:09d}" for i in range(10_000)]               # near-identical keys must spread too
    counts = np.bincount(buckets(pa.array(ids), 10), minlength=10)
    assert counts.min() > 800 and counts.max() < 1200


# ---------------------------------------------------------------------------------------------------
# split_by_bucket

def test_split_by_bucket_keeps_all_rows_in_order():
    asins = [f"A{i % 11}" for i in range(60)]
    table = review_table([{"asin": a, "source_position": i + 1} for i, a in enumerate(asins)])
    ids = buckets(table["asin"], 5)
    parts = split_by_bucket(table, ids)
    keys = [k for k, _ in parts]
    assert keys == sorted(set(ids.tolist()))
    assert sum(p.num_rows for _, p in parts) == table.num_rows
    seen = []
    for k, part in parts:
        positions = part["source_position"].to_pylist()
        assert positions == sorted(positions)                  # order kept within a bucket
        assert all(ids[p - 1] == k for p in positions)         # every row is in its own bucket
        assert part.schema == table.schema
        seen += positions
    assert sorted(seen) == list(range(1, 61))


def test_split_by_bucket_single_bucket_and_empty():
    table = review_table([{"source_position": i} for i in range(1, 4)])
    parts = split_by_bucket(table, np.array([3, 3, 3]))
    assert [(k, p.num_rows) for k, p in parts] == [(3, 3)]
    assert split_by_bucket(table.slice(0, 0), np.array([], dtype=np.int64)) == []


# ---------------------------------------------------------------------------------------------------
# dedupe_reviews

def _table_a():
    return review_table([
        {"reviewer_id": "R1", "asin": "A1", "unix_review_time": 100, "review_text": "t", "source_position": 1},
        {"reviewer_id": "R1", "asin": "A1", "unix_review_time": 100, "review_text": "t", "source_position": 2,
         "overall": 1.0},                                                    # same content key: dropped
        {"reviewer_id": "R1", "asin": "A1", "unix_review_time": 100, "review_text": "other", "source_position": 3},
        {"reviewer_id": "R2", "asin": "A1", "unix_review_time": 100, "review_text": "t", "source_position": 4},
        {"reviewer_id": "R1", "asin": "A2", "unix_review_time": 100, "review_text": "t", "source_position": 5},
    ], )


def _table_b():
    return review_table([
        {"reviewer_id": "R1", "asin": "A1", "unix_review_time": 100, "review_text": "t", "source_position": 10},
        {"reviewer_id": "R1", "asin": "A1", "unix_review_time": 200, "review_text": "t", "source_position": 11},
        {"reviewer_id": "R3", "asin": "A3", "unix_review_time": 100, "review_text": "x", "source_position": 12},
    ])


def test_dedupe_drops_exact_duplicates_across_tables():
    a, b = _table_a(), _table_b()
    out, dropped = dedupe_reviews([a, b])
    expected, n_dropped = _reference_dedupe([a, b])
    assert (dropped, n_dropped) == (2, 2)
    assert _lineage(out) == sorted(expected)
    # one copy of each content key: positions 3, 4, 5, 11, 12 are alone; 1, 2 and 10 share a key
    kept = {p for _, p in _lineage(out)}
    assert {3, 4, 5, 11, 12} <= kept and len(kept & {1, 2, 10}) == 1
    assert len(set(_keys(out))) == out.num_rows
    assert out.schema == CLEAN_REVIEW_SCHEMA
    # 1 and 10 are equal but for lineage: if that content survives, the first in source order does
    assert 10 not in kept


def test_dedupe_prefers_more_votes_whatever_the_order():
    rows = [{"review_text": "t", "vote": v, "source_position": p, "summary": s}
            for p, v, s in [(1, None, "a"), (2, 3, "b"), (3, 7, "c"), (4, 0, "d")]]
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        out, dropped = dedupe_reviews([review_table([rows[i]]) for i in perm])
        assert dropped == 3 and out["source_position"].to_pylist() == [3]
        assert out["summary"].to_pylist() == ["c"]


def test_dedupe_equal_votes_smallest_digest_of_the_other_fields():
    rows = [{"review_text": "t", "summary": f"s{i}", "overall": float(1 + i % 5), "verified": i % 2 == 0,
             "source": f"f{9 - i}.json", "source_position": 1} for i in range(6)]
    digests = {r["summary"]: _digest(review_table([r]).to_pylist()[0]) for r in rows}
    out, dropped = dedupe_reviews([review_table(rows)])
    assert dropped == 5
    assert out["summary"].to_pylist() == [min(digests, key=digests.get)]   # not the first source (f4.json)


def test_dedupe_keeps_same_reviewer_asin_time_with_different_text():
    t = review_table([{"review_text": "first", "source_position": 1}, {"review_text": "second", "source_position": 2},
                      {"review_text": None, "source_position": 3}])
    out, dropped = dedupe_reviews([t])
    assert dropped == 0 and out.num_rows == 3


def test_dedupe_null_texts_are_the_same_content():
    t = review_table([{"review_text": None, "source_position": 1}, {"review_text": None, "source_position": 2}])
    out, dropped = dedupe_reviews([t])
    assert dropped == 1 and _lineage(out) == [("s.json", 1)]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_dedupe_survivor_does_not_depend_on_table_order(order):
    tables = [_table_a(), _table_b()]
    out, dropped = dedupe_reviews([tables[i] for i in order])
    want, _ = _reference_dedupe(tables)
    assert dropped == 2
    assert _lineage(out) == sorted(want)


def test_dedupe_across_sources_keeps_the_first_source():
    late = review_table([{"source": "z.json", "source_position": 1, "review_text": "t", "unix_review_time": 100}])
    early = review_table([{"source": "a.json", "source_position": 99, "review_text": "t",
                           "unix_review_time": 100}])
    for tables in ([late, early], [early, late]):
        out, dropped = dedupe_reviews(tables)
        assert dropped == 1 and _lineage(out) == [("a.json", 99)]


def test_dedupe_many_random_rows_against_reference():
    rng = random.Random(3)
    tables = []
    for chunk in range(4):
        rows = [{"reviewer_id": f"R{rng.randint(0, 5)}", "asin": f"A{rng.randint(0, 3)}",
                 "unix_review_time": rng.choice([100, 200]), "review_text": rng.choice(["a", "b", None]),
                 "source": f"f{chunk % 2}.json", "source_position": chunk * 1000 + i + 1} for i in range(50)]
        tables.append(review_table(rows))
    rng.shuffle(tables)
    out, dropped = dedupe_reviews(tables)
    expected, n_dropped = _reference_dedupe(tables)
    assert dropped == n_dropped > 0
    assert _lineage(out) == sorted(expected)


def test_dedupe_trivial_inputs():
    assert dedupe_reviews([]) == (None, 0)
    empty = review_table([]).slice(0, 0)
    assert dedupe_reviews([empty, empty]) == (None, 0)
    one = review_table([{}])
    out, dropped = dedupe_reviews([one, empty])
    assert dropped == 0 and out.num_rows == 1


def test_dedupe_no_duplicates_returns_everything():
    t = review_table([{"reviewer_id": f"R{i}", "source_position": i} for i in range(1, 21)])
    out, dropped = dedupe_reviews([t])
    assert dropped == 0 and _lineage(out) == _lineage(t)


def test_dedupe_keeps_first_position_within_a_parsed_table():
    # the same review twice in one file; the first copy has a string rating (coerced by the parser)
    first = {"asin": "A1", "reviewerID": "R1", "overall": "5.0", "unixReviewTime": 100, "reviewText": "same"}
    second = dict(first, overall=5)
    batch, _, _ = parse_reviews(Chunk((json.dumps(first) + "\n" + json.dumps(second) + "\n").encode(), "f.json", 1))
    table, _ = clean_reviews(batch)
    assert sorted(table["source_position"].to_pylist()) == [1, 2]
    out, dropped = dedupe_reviews([table])
    assert dropped == 1
    assert out["source_position"].to_pylist() == [1]


# ---------------------------------------------------------------------------------------------------
# dedupe_products

def test_dedupe_products_keeps_first_per_asin():
    rows = [
        product_row("P1", "b.json", 1, title="b1"),
        product_row("P1", "a.json", 5, title="a5"),
        product_row("P1", "a.json", 2, title="a2"),
        product_row("P2", "a.json", 3, title="p2"),
        product_row("P3", "b.json", 0, title="p3"),
        product_row("P2", "b.json", 9, title="p2 late"),
    ]
    table, dropped = dedupe_products(rows)
    assert table.schema == SILVER_PRODUCT_SCHEMA
    assert dropped == 3
    got = {r["asin"]: (r["title"], r["source"], r["source_position"]) for r in table.to_pylist()}
    assert got == {"P1": ("a2", "a.json", 2), "P2": ("p2", "a.json", 3), "P3": ("p3", "b.json", 0)}
    assert table.num_rows == len(set(table["asin"].to_pylist()))


def test_dedupe_products_input_order_does_not_matter():
    rows = [product_row(f"P{i % 4}", f"s{i % 3}.json", i, title=str(i)) for i in range(30)]
    t1, d1 = dedupe_products(rows)
    t2, d2 = dedupe_products(list(reversed(rows)))
    assert d1 == d2 == 26
    assert sorted(t1.to_pylist(), key=lambda r: r["asin"]) == sorted(t2.to_pylist(), key=lambda r: r["asin"])


def test_dedupe_products_empty():
    table, dropped = dedupe_products([])
    assert table.num_rows == 0 and dropped == 0 and table.schema == SILVER_PRODUCT_SCHEMA


# ---------------------------------------------------------------------------------------------------
# enrich_with_products

def _products(*rows):
    return pa.Table.from_pylist(list(rows), schema=SILVER_PRODUCT_SCHEMA)


def test_enrich_left_join():
    reviews = review_table([{"asin": a, "source_position": i + 1}
                            for i, a in enumerate(["A1", "A2", "A1", "A9", "A3", "A2"])])
    products = _products(product_row("A1", title="T1", brand="B1", main_cat="C1", price=1.5),
                         product_row("A2", title="T2", brand=None, main_cat="C2", price=None),
                         product_row("A4", title="T4", brand="B4", main_cat="C4", price=9.0))
    out, matched, unmatched = enrich_with_products(reviews, products)
    assert (matched, unmatched) == (4, 2)
    assert out.num_rows == reviews.num_rows                    # no fan-out, nothing lost
    assert out.schema == SILVER_REVIEW_SCHEMA
    by_asin = {r["asin"]: r for r in products.to_pylist()}
    for r in out.to_pylist():
        p = by_asin.get(r["asin"], {})
        for f in PRODUCT_FIELDS.names:
            assert r[f] == p.get(f), (r["asin"], f)
    # the review columns are unchanged, in the same order
    assert out.select(CLEAN_REVIEW_SCHEMA.names).equals(reviews)


def test_enrich_without_products():
    reviews = review_table([{"asin": "A1"}, {"asin": "A2"}])
    out, matched, unmatched = enrich_with_products(reviews, SILVER_PRODUCT_SCHEMA.empty_table())
    assert (matched, unmatched, out.num_rows) == (0, 2, 2)
    for f in PRODUCT_FIELDS.names:
        assert out[f].to_pylist() == [None, None]
    assert out.schema == SILVER_REVIEW_SCHEMA


def test_enrich_after_product_dedupe_does_not_fan_out():
    rows = [product_row("A1", "p.json", 2, title="second"), product_row("A1", "p.json", 1, title="first"),
            product_row("A2", "p.json", 3, title="two")]
    products, dropped = dedupe_products(rows)
    assert dropped == 1
    reviews = pa.concat_tables([review_table([{"asin": "A1"}, {"asin": "A2"}]),
                                review_table([{"asin": "A1"}, {"asin": "A5"}])])   # chunked columns
    out, matched, unmatched = enrich_with_products(reviews, products)
    assert out.num_rows == 4 and (matched, unmatched) == (3, 1)
    assert out["title"].to_pylist() == ["first", "two", "first", None]


def test_dedupe_with_rows_out_of_source_order_keeps_exactly_the_reference_rows():
    """Regression: row numbers and (source, position) ranks differ when tables arrive out of order and
    rows within a table are not sorted; rows sharing the short key but not the text must all stay."""
    rng = random.Random(3)
    rows = []
    for i in range(300):
        # 20 short keys (reviewer, asin, time), each with 3 texts: 60 content keys over 300 rows
        rows.append({"reviewer_id": f"R{i % 20}", "asin": "A1", "unix_review_time": 1388534400 + 86400 * (i % 20),
                     "review_text": f"text {i % 3}", "source": rng.choice(["c.json", "a.json", "b.json"]),
                     "source_position": rng.randrange(1, 10_000)})
    seen = set()
    rows = [r for r in rows if (r["source"], r["source_position"]) not in seen
            and not seen.add((r["source"], r["source_position"]))]
    rng.shuffle(rows)
    tables = [review_table(rows[k::3]) for k in range(3)]
    want, want_dropped = _reference_dedupe(tables)
    got, dropped = dedupe_reviews(tables[::-1])
    assert dropped == want_dropped
    assert dropped > 0
    assert _lineage(got) == sorted(want)


# ---------------------------------------------------------------------------------------------------
# the survivor rule: independent of arrival order, and the same against copies held by earlier runs

from hypothesis import given, settings, strategies as st  # noqa: E402

_copy = st.fixed_dictionaries({
    "reviewer_id": st.sampled_from(["R1", "R2"]), "review_text": st.sampled_from(["t", "u", None]),
    "vote": st.one_of(st.none(), st.integers(0, 3)), "summary": st.one_of(st.none(), st.sampled_from(["a", "b"])),
    "overall": st.sampled_from([1.0, 5.0]), "verified": st.booleans(),
    "style": st.one_of(st.none(), st.dictionaries(st.sampled_from(["Size:", "Color:"]), st.sampled_from(["S", "L"]),
                                                  max_size=2)),
    "image_urls": st.one_of(st.none(), st.lists(st.sampled_from(["u1", "u2"]), max_size=2)),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(_copy, min_size=1, max_size=12), st.randoms(use_true_random=False), st.integers(1, 4))
def test_dedupe_survivor_is_independent_of_arrival_order_and_chunking(copies, rng, n_tables):
    rows = [dict(c, source=f"f{i % 3}.json", source_position=i + 1) for i, c in enumerate(copies)]
    want, want_dropped = _reference_dedupe([review_table(rows)])
    shuffled = list(rows)
    rng.shuffle(shuffled)
    tables = [review_table(shuffled[k::n_tables]) for k in range(n_tables) if shuffled[k::n_tables]]
    got, dropped = dedupe_reviews(tables)
    assert dropped == want_dropped
    assert _lineage(got) == sorted(want)


@settings(max_examples=60, deadline=None)
@given(st.lists(_copy, min_size=1, max_size=10), st.integers(0, 10))
def test_known_reviews_across_runs_keep_what_one_run_over_everything_keeps(copies, cut):
    """An earlier run held the best copy of its rows; a later run's copies that ``compare`` says win replace
    it. The table afterwards holds exactly what one run over all copies would."""
    rows = [dict(c, source="f.json", source_position=i + 1) for i, c in enumerate(copies)]
    first, second = rows[:cut], rows[cut:]
    held, _ = dedupe_reviews([review_table(first)]) if first else (None, 0)
    new, _ = dedupe_reviews([review_table(second)]) if second else (None, 0)
    table = held.to_pylist() if held is not None else []
    if new is not None:
        known = KnownReviews.of(held) if held is not None else KnownReviews.of(review_table([]).slice(0, 0))
        is_held, wins = known.compare(content_hashes(new), *preference(new))
        keep_new = [r for r, h, w in zip(new.to_pylist(), is_held, wins) if not h or w]
        replaced = {tuple(r[c] for c in REVIEW_KEY) for r, w in zip(new.to_pylist(), wins) if w}
        table = [r for r in table if tuple(r[c] for c in REVIEW_KEY) not in replaced] + keep_new
    want, _ = _reference_dedupe([review_table(rows)])
    by_lineage = {(r["source"], r["source_position"]): r for r in rows}

    def content(r):   # what a reader sees: the key and the preferred fields (lineage may differ on ties)
        r = review_table([r]).to_pylist()[0]
        return tuple(r[c] for c in REVIEW_KEY), r["vote"], _digest(r)
    assert sorted(map(content, table), key=repr) == sorted((content(by_lineage[w]) for w in want), key=repr)


def test_known_reviews_unbeatable_copies_are_never_replaced():
    held = review_table([{"review_text": "t", "vote": 0, "source_position": 1}])
    new = review_table([{"review_text": "t", "vote": 99, "source_position": 2},
                        {"review_text": "other", "vote": 99, "source_position": 3}])
    for unbeatable, wins_first in ((False, True), (True, False)):
        is_held, wins = KnownReviews.of(held, unbeatable).compare(content_hashes(new), *preference(new))
        assert is_held.tolist() == [True, False]
        assert wins.tolist() == [wins_first, False]


def test_hash_values_slices_nulls_and_order():
    lists = pa.array([[1, 2], None, [3], [], [2, 1]])
    h = hash_values(lists)
    assert len(set(h.tolist())) == 5                                    # null, [], order all differ
    assert hash_values(lists.slice(2)).tolist() == h[2:].tolist()       # slices hash like the whole
    maps = pa.array([[("a", 1)], None, [("b", 2), ("c", 3)], [("c", 3), ("b", 2)]],
                    type=pa.map_(pa.string(), pa.int64()))
    hm = hash_values(maps)
    assert len(set(hm.tolist())) == 4 and hash_values(maps.slice(1)).tolist() == hm[1:].tolist()
    floats = hash_values(pa.array([0.5, None, 0.5, 1.5]))
    assert floats[0] == floats[2] and len(set(floats.tolist())) == 3
    strings = pa.array(["x", None, "x"])
    assert hash_values(strings).tolist() == hash_strings(strings).tolist()
