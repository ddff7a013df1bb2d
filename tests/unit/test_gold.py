"""Unit tests for transforms.windows, transforms.labels and transforms.gold.

Gold is checked against a plain-Python reference written here from the documented rules: a review
belongs to the windows [start, start + size) with start = offset + k * step; sentiment is negative for
rating <= 2, positive for >= 4, neutral otherwise; a family counts, sums, takes minima/maxima and
counts distinct asins per (window, keys); all-time rows (null window) cover every review once; means
and shares are sums divided by n_reviews; the top family keeps the N groups with most reviews per
window (ties by key ascending) and ranks them 1..N.
"""
import datetime as dt
import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from tests import _tables
from transforms import gold, labels
from transforms.schemas import SILVER_PRODUCT_SCHEMA
from transforms.windows import TS, WindowSpec, with_windows

DAY = 86400
T0 = 1388534400  # 2014-01-01 00:00:00 UTC
UTC = dt.timezone.utc


# ---------------------------------------------------------------------------------------------------
# builders

def silver_table(rows):
    """Dicts -> a table in SILVER_REVIEW_SCHEMA (tests._tables.silver_table with this module's defaults)."""
    return _tables.silver_table(rows, reviewer_id="R", verified=True, vote=0, review_text="x",
                                review_text_from_summary=False, image_count=0, source="s.json")


# product attributes per asin (the silver join gives every review of an asin the same ones)
PRODUCTS = {"A1": ("Books", "BrandX", 10.0), "A2": ("Books", "BrandX", 20.0), "A3": ("Toys", "BrandY", None),
            "A4": (None, None, None), "A5": ("Toys", "BrandZ", 5.0), "A6": ("Books", "BrandW", 7.5)}
#          reviewer asin  overall verified  time              words
REVIEWS = [("R1", "A1", 5.0, True, T0 + 10, 0),
           ("R1", "A2", 4.0, False, T0 + 500, 5),
           ("R2", "A1", 1.0, True, T0 + DAY - 1, 12),     # last second of day 0
           ("R2", "A3", 3.0, True, T0 + DAY, 60),         # first second of day 1
           ("R3", "A3", 2.0, False, T0 + DAY + 100, 120),
           ("R1", "A4", 2.5, True, T0 + DAY + 200, 300),  # no product: null main_cat / brand / price
           ("R3", "A5", 3.5, True, T0 + 2 * DAY + 5, 700),
           ("R4", "A1", 4.0, False, T0 + 2 * DAY + 6, 49),
           ("R1", "A5", 5.0, True, T0 + 2 * DAY + 7, 50),
           ("R5", "A2", 1.0, True, T0 + 365 * DAY + 3, 99),  # 2015
           ("R2", "A6", 4.0, True, T0 + 20, 250),
           ("R4", "A3", 5.0, True, T0 + DAY + 300, 9)]
PART_1_ASINS = {"A1", "A3", "A6"}  # the split partitions asins, as the shuffle buckets do


def review_rows():
    out = []
    for reviewer, asin, overall, verified, t, words in REVIEWS:
        main_cat, brand, price = PRODUCTS[asin]
        out.append({"reviewer_id": reviewer, "asin": asin, "overall": overall, "verified": verified,
                    "unix_review_time": t, "review_length_words": words, "main_cat": main_cat, "brand": brand,
                    "price": price})
    return out


def silver_parts():
    rows = review_rows()
    whole = silver_table(rows)
    part1 = silver_table([r for r in rows if r["asin"] in PART_1_ASINS])
    part2 = silver_table([r for r in rows if r["asin"] not in PART_1_ASINS])
    return whole, part1, part2


# ---------------------------------------------------------------------------------------------------
# the reference

def ref_sentiment(rating):
    return "negative" if rating <= 2 else "positive" if rating >= 4 else "neutral"


def ref_length_bucket(words):
    for upper, name in ((0, "0"), (9, "1-9"), (49, "10-49"), (99, "50-99"), (249, "100-249"), (499, "250-499")):
        if words <= upper:
            return name
    return "500+"


def ref_facts(rows):
    out = []
    for r in rows:
        f = dict(r)
        f["year"] = dt.datetime.fromtimestamp(r["unix_review_time"], tz=UTC).year
        f["sentiment"] = ref_sentiment(r["overall"])
        f["positive"] = int(f["sentiment"] == "positive")
        f["negative"] = int(f["sentiment"] == "negative")
        f["length_bucket"] = ref_length_bucket(r["review_length_words"])
        out.append(f)
    return out


def ref_windows(t, size, period=None, offset=0):
    step = period or size
    first = (t - offset) // step * step + offset
    return [(a, a + size) for a in range(first - size + step, first + 1, step) if a <= t < a + size]


# family name -> (keys, measures); the measures a family publishes after finalize
SPEC = {
    "reviews": ((), ("n_reviews", "sum_overall", "mean_overall")),
    "reviews_by_rating": (("overall",), ("n_reviews",)),
    "reviews_by_rating_verified": (("overall", "verified"), ("n_reviews",)),
    "reviews_by_main_cat": (("main_cat",), ("n_reviews", "sum_overall", "n_products", "mean_overall")),
    "reviews_by_brand": (("brand",), ("n_reviews", "sum_overall", "sum_positive", "sum_negative", "min_price",
                                      "max_price", "mean_overall", "positive_share", "negative_share")),
    "sentiment_by_year": (("year", "sentiment"), ("n_reviews",)),
    "length_by_sentiment": (("length_bucket", "sentiment"), ("n_reviews",)),
    "verified_by_sentiment": (("verified", "sentiment"), ("n_reviews",)),
    "top_reviewers": (("reviewer_id",), ("n_reviews", "sum_overall", "mean_overall", "rank")),
}


def ref_measures(group):
    prices = [r["price"] for r in group if r["price"] is not None]
    n = len(group)
    s = sum(r["overall"] for r in group)
    pos, neg = sum(r["positive"] for r in group), sum(r["negative"] for r in group)
    return {"n_reviews": n, "sum_overall": s, "mean_overall": s / n, "sum_positive": pos, "sum_negative": neg,
            "positive_share": pos / n, "negative_share": neg / n, "min_price": min(prices, default=None),
            "max_price": max(prices, default=None), "n_products": len({r["asin"] for r in group})}


def ref_family(name, rows, size=DAY, period=None, top=None):
    """-> {(window_start, window_end, *keys): {measure: value}} with epoch-second windows (None = all time)."""
    keys, measures = SPEC[name]
    groups = defaultdict(list)
    for f in ref_facts(rows):
        k = tuple(f[c] for c in keys)
        for ws, we in ref_windows(f["unix_review_time"], size, period):
            groups[(ws, we) + k].append(f)
        groups[(None, None) + k].append(f)  # all time: every review once
    out = {g: ref_measures(v) for g, v in groups.items()}
    if top is not None:
        by_window = defaultdict(list)
        for g in out:
            by_window[g[:2]].append(g)
        kept = {}
        for gs in by_window.values():
            gs.sort(key=lambda g: (-out[g]["n_reviews"], g[2:]))
            for rank, g in enumerate(gs[:top], start=1):
                kept[g] = dict(out[g], rank=rank)
        out = kept
    return {g: {m: v[m] for m in measures} for g, v in out.items()}


def _epoch(v):
    return None if v is None else int(v.timestamp())


def as_dict(name, table):
    keys, measures = SPEC[name]
    out = {}
    for r in table.to_pylist():
        g = (_epoch(r["window_start"]), _epoch(r["window_end"])) + tuple(r[k] for k in keys)
        assert g not in out, f"duplicate group {g}"
        out[g] = {m: r[m] for m in measures}
    return out


def assert_same(actual, expected):
    assert set(actual) == set(expected)
    for g, want in expected.items():
        got = actual[g]
        for m, v in want.items():
            if isinstance(v, float):
                assert got[m] == pytest.approx(v), (g, m)
            else:
                assert got[m] == v, (g, m)


def sorted_rows(table):
    def key(r):
        return [(v is None, str(v)) for v in r.values()]
    return sorted(table.to_pylist(), key=key)


# ---------------------------------------------------------------------------------------------------
# windows

def test_window_spec_defaults_and_properties():
    spec = WindowSpec()
    assert (spec.size_s, spec.period_s, spec.offset_s) == (DAY, None, 0)
    assert (spec.step, spec.copies) == (DAY, 1)
    sliding = WindowSpec(3 * 3600, 3600)
    assert (sliding.step, sliding.copies) == (3600, 3)
    assert WindowSpec(600, 600).copies == 1


def test_fixed_window_of():
    spec = WindowSpec(DAY)
    assert spec.window_of(T0) == [(T0, T0 + DAY)]
    assert spec.window_of(T0 + DAY - 1) == [(T0, T0 + DAY)]
    assert spec.window_of(T0 + DAY) == [(T0 + DAY, T0 + 2 * DAY)]
    assert spec.window_of(0) == [(0, DAY)]
    assert spec.window_of(-1) == [(-DAY, 0)]


def test_fixed_window_with_offset():
    spec = WindowSpec(DAY, offset_s=3600)
    assert spec.window_of(0) == [(3600 - DAY, 3600)]
    assert spec.window_of(3600) == [(3600, 3600 + DAY)]


def test_sliding_window_of():
    spec = WindowSpec(3 * 3600, 3600)
    assert spec.window_of(5000) == [(-3600, 7200), (0, 10800), (3600, 14400)]
    assert spec.window_of(3600) == [(-3600, 7200), (0, 10800), (3600, 14400)]
    assert spec.window_of(3599) == [(-7200, 3600), (-3600, 7200), (0, 10800)]


@pytest.mark.parametrize("size, period, offset", [(DAY, None, 0), (DAY, None, 3600), (3600, 900, 0),
                                                  (3600, 900, 120), (7, 1, 0), (10, 5, -3), (12, 12, 5)])
def test_window_of_matches_brute_force(size, period, offset):
    spec = WindowSpec(size, period, offset)
    step = period or size
    rng = random.Random(size * 31 + (period or 0) + offset)
    for s in [rng.randint(-10 * size, 10 * size) for _ in range(50)] + [0, offset, offset - 1, size]:
        grid = [offset + k * step for k in range((s - size - offset) // step - 1, (s - offset) // step + 2)]
        expected = [(a, a + size) for a in grid if a <= s < a + size]
        assert spec.window_of(s) == expected, s
        assert len(expected) == size // step


@pytest.mark.parametrize("kwargs", [dict(size_s=0), dict(size_s=-DAY), dict(size_s=DAY, period_s=0),
                                    dict(size_s=DAY, period_s=-3600), dict(size_s=10, period_s=3),
                                    dict(size_s=10, period_s=20)])
def test_invalid_window_specs(kwargs):
    with pytest.raises(ValueError):
        WindowSpec(**kwargs)


@pytest.mark.parametrize("spec", [WindowSpec(DAY), WindowSpec(DAY, 6 * 3600), WindowSpec(3600, 1200, 60)])
def test_with_windows_replicates_rows(spec):
    times = [T0, T0 + 1, T0 + DAY - 1, T0 + 12345, -7]
    table = pa.table({"unix_review_time": pa.array(times, pa.int64()), "x": list(range(len(times)))})
    out = with_windows(table, spec)
    assert out.num_rows == len(times) * spec.size_s // (spec.period_s or spec.size_s)
    assert out.schema.field("window_start").type == TS and out.schema.field("window_end").type == TS
    assert out.column_names == ["unix_review_time", "x", "window_start", "window_end"]
    got = defaultdict(list)
    for r in out.to_pylist():
        got[r["x"]].append((_epoch(r["window_start"]), _epoch(r["window_end"])))
        assert _epoch(r["window_start"]) <= r["unix_review_time"] < _epoch(r["window_end"])
    for x, t in enumerate(times):
        assert sorted(got[x]) == spec.window_of(t)


def test_with_windows_other_time_column():
    table = pa.table({"ts": pa.array([5, 15], pa.int64())})
    out = with_windows(table, WindowSpec(10), time_column="ts")
    assert [(_epoch(a), _epoch(b)) for a, b in zip(out["window_start"].to_pylist(),
                                                   out["window_end"].to_pylist())] == [(0, 10), (10, 20)]


# ---------------------------------------------------------------------------------------------------
# labels

RATINGS = [1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 1.99, 2.01, 3.99, 4.01, None]
NAMES = ["negative", "negative", "neutral", "neutral", "neutral", "positive", "positive",
         "negative", "neutral", "neutral", "positive", None]


def test_sentiment_boundaries():
    assert labels.sentiment(pa.array(RATINGS, pa.float64())).to_pylist() == NAMES
    assert [ref_sentiment(r) for r in RATINGS[:-1]] == NAMES[:-1]


def test_sentiment_id():
    ids = labels.sentiment_id(pa.array(RATINGS, pa.float64()))
    assert ids.type == pa.int8()
    assert ids.to_pylist() == [None if n is None else labels.CLASSES.index(n) for n in NAMES]
    assert labels.CLASSES == ("negative", "neutral", "positive")


def test_polarity_null_for_neutral():
    expected = [None if n in (None, "neutral") else int(n == "positive") for n in NAMES]
    assert labels.polarity(pa.array(RATINGS, pa.float64())).to_pylist() == expected
    assert expected[:7] == [0, 0, None, None, None, 1, 1]


def test_labels_on_chunked_and_numpy_input():
    col = pa.chunked_array([pa.array([1.0, 3.0]), pa.array([5.0])])
    assert labels.sentiment(col).to_pylist() == ["negative", "neutral", "positive"]
    assert labels.sentiment_id(np.array([2.0, 4.0])).to_pylist() == [0, 2]


def test_sentiment_of_scalar():
    assert [labels.sentiment_of(r) for r in RATINGS[:-1]] == NAMES[:-1]


# ---------------------------------------------------------------------------------------------------
# gold

def test_length_bucket():
    words = [0, 1, 9, 10, 49, 50, 99, 100, 249, 250, 499, 500, 10_000, None]
    expected = [ref_length_bucket(w or 0) for w in words]
    assert expected == ["0", "1-9", "1-9", "10-49", "10-49", "50-99", "50-99", "100-249", "100-249",
                        "250-499", "250-499", "500+", "500+", "0"]
    assert gold.length_bucket(pa.array(words, pa.int32())).to_pylist() == expected


def test_family_definitions_match_the_reference():
    for name, (keys, _) in SPEC.items():
        assert gold.FAMILY_BY_NAME[name].keys == keys
    assert gold.FAMILY_BY_NAME["top_reviewers"].top == 10


def test_review_facts():
    whole, _, _ = silver_parts()
    facts = gold.review_facts(whole).to_pylist()
    for f, ref in zip(facts, ref_facts(review_rows())):
        for c in ("sentiment", "positive", "negative", "length_bucket", "year", "main_cat", "price"):
            assert f[c] == ref[c], c


@pytest.mark.parametrize("name", list(SPEC))
def test_merge_of_parts_equals_whole(name):
    spec = WindowSpec(DAY)
    whole, part1, part2 = silver_parts()
    p_whole = gold.partials(gold.review_facts(whole), spec)[name]
    p1 = gold.partials(gold.review_facts(part1), spec)[name]
    p2 = gold.partials(gold.review_facts(part2), spec)[name]
    merged = gold.merge([p1, None, p2])
    assert merged.schema == p_whole.schema
    assert sorted_rows(merged) == sorted_rows(p_whole)
    assert sorted_rows(gold.merge([p2, p1])) == sorted_rows(p_whole)
    family = gold.FAMILY_BY_NAME[name]
    assert sorted_rows(gold.finalize(family, merged)) == sorted_rows(gold.finalize(family, p_whole))


def test_merge_trivial_inputs():
    whole, _, _ = silver_parts()
    p = gold.partials(gold.review_facts(whole), WindowSpec(DAY))["reviews"]
    assert gold.merge([]) is None
    assert gold.merge([None, p.slice(0, 0)]) is None
    assert gold.merge([p]) is p


@pytest.mark.parametrize("name", list(SPEC))
def test_finalize_matches_reference(name):
    whole, part1, part2 = silver_parts()
    spec = WindowSpec(DAY)
    merged = gold.merge([gold.partials(gold.review_facts(t), spec)[name] for t in (part1, part2)])
    family = gold.FAMILY_BY_NAME[name]
    out = gold.finalize(family, merged)
    assert_same(as_dict(name, out), ref_family(name, review_rows(), top=family.top))


def test_reviews_family_hand_values():
    whole, part1, part2 = silver_parts()
    merged = gold.merge([gold.partials(gold.review_facts(t), WindowSpec(DAY))["reviews"] for t in (part1, part2)])
    got = as_dict("reviews", gold.finalize(gold.FAMILY_BY_NAME["reviews"], merged))
    assert got[(None, None)]["n_reviews"] == 12
    assert got[(None, None)]["sum_overall"] == 40.0
    assert got[(None, None)]["mean_overall"] == pytest.approx(40 / 12)
    assert got[(T0, T0 + DAY)] == {"n_reviews": 4, "sum_overall": 14.0, "mean_overall": 3.5}
    assert got[(T0 + DAY, T0 + 2 * DAY)]["n_reviews"] == 4
    assert got[(T0 + DAY, T0 + 2 * DAY)]["sum_overall"] == 12.5
    assert got[(T0 + 2 * DAY, T0 + 3 * DAY)] == {"n_reviews": 3, "sum_overall": 12.5,
                                                 "mean_overall": pytest.approx(12.5 / 3)}
    assert got[(T0 + 365 * DAY, T0 + 366 * DAY)]["n_reviews"] == 1
    # the all-time row equals the sum of the (fixed) window rows
    windows = [v for g, v in got.items() if g != (None, None)]
    assert sum(v["n_reviews"] for v in windows) == got[(None, None)]["n_reviews"]
    assert sum(v["sum_overall"] for v in windows) == got[(None, None)]["sum_overall"]


@pytest.mark.parametrize("name", ["reviews_by_rating", "reviews_by_brand", "sentiment_by_year",
                                  "length_by_sentiment", "verified_by_sentiment"])
def test_all_time_rows_equal_sum_of_window_rows(name):
    whole, _, _ = silver_parts()
    family = gold.FAMILY_BY_NAME[name]
    got = as_dict(name, gold.finalize(family, gold.partials(gold.review_facts(whole), WindowSpec(DAY))[name]))
    totals = defaultdict(int)
    for g, v in got.items():
        if g[0] is not None:
            totals[g[2:]] += v["n_reviews"]
    assert {g[2:]: v["n_reviews"] for g, v in got.items() if g[0] is None} == dict(totals)


def test_brand_hand_values():
    whole, _, _ = silver_parts()
    family = gold.FAMILY_BY_NAME["reviews_by_brand"]
    got = as_dict("reviews_by_brand", gold.finalize(family, gold.partials(gold.review_facts(whole),
                                                                          WindowSpec(DAY))["reviews_by_brand"]))
    x = got[(None, None, "BrandX")]          # ratings 5, 4, 1, 4, 1 at prices 10, 20, 10, 10, 20
    assert (x["n_reviews"], x["sum_positive"], x["sum_negative"]) == (5, 3, 2)
    assert (x["positive_share"], x["negative_share"]) == (pytest.approx(0.6), pytest.approx(0.4))
    assert (x["min_price"], x["max_price"]) == (10.0, 20.0)
    y = got[(None, None, "BrandY")]          # ratings 3, 2, 5, no price
    assert (y["n_reviews"], y["sum_positive"], y["sum_negative"], y["min_price"], y["max_price"]) == (
        3, 1, 1, None, None)
    z = got[(None, None, "BrandZ")]          # ratings 3.5 (neutral) and 5
    assert (z["positive_share"], z["negative_share"]) == (0.5, 0.0)
    unmatched = got[(None, None, None)]      # the review without a product
    assert (unmatched["n_reviews"], unmatched["sum_positive"], unmatched["sum_negative"]) == (1, 0, 0)


def test_distinct_products_per_main_cat_hand_values():
    whole, part1, part2 = silver_parts()
    merged = gold.merge([gold.partials(gold.review_facts(t), WindowSpec(DAY))["reviews_by_main_cat"]
                         for t in (part1, part2)])
    got = as_dict("reviews_by_main_cat", gold.finalize(gold.FAMILY_BY_NAME["reviews_by_main_cat"], merged))
    assert got[(None, None, "Books")]["n_products"] == 3      # A1, A2, A6
    assert got[(None, None, "Books")]["n_reviews"] == 6
    assert got[(None, None, "Toys")]["n_products"] == 2       # A3, A5
    assert got[(None, None, None)]["n_products"] == 1         # A4
    assert got[(T0, T0 + DAY, "Books")] == {"n_reviews": 4, "sum_overall": 14.0, "n_products": 3,
                                            "mean_overall": 3.5}
    assert got[(T0 + DAY, T0 + 2 * DAY, "Toys")]["n_products"] == 1   # A3 three times
    assert got[(T0 + DAY, T0 + 2 * DAY, "Toys")]["n_reviews"] == 3


@pytest.mark.parametrize("top", [1, 2, 3, 10])
def test_top_reviewers(top):
    whole, part1, part2 = silver_parts()
    family = gold.Family(**{**gold.FAMILY_BY_NAME["top_reviewers"].__dict__, "top": top})
    merged = gold.merge([gold.partials(gold.review_facts(t), WindowSpec(DAY))["top_reviewers"]
                         for t in (part1, part2)])
    out = gold.finalize(family, merged)
    got = as_dict("top_reviewers", out)
    assert_same(got, ref_family("top_reviewers", review_rows(), top=top))
    ranks = {g[2]: v["rank"] for g, v in got.items() if g[0] is None}
    # all time: R1 has 4 reviews, R2 3, R3 and R4 2 each (tie: R3 first), R5 1
    assert ranks == dict(list({"R1": 1, "R2": 2, "R3": 3, "R4": 4, "R5": 5}.items())[:top])
    if top >= 2:
        day0 = {g[2]: v["rank"] for g, v in got.items() if g[0] == T0}
        assert day0 == {"R1": 1, "R2": 2}  # 2 reviews each: the tie goes to the smaller id
    assert out.schema.field("rank").type == pa.int32()


def test_length_buckets_hand_values():
    whole, _, _ = silver_parts()
    got = as_dict("length_by_sentiment", gold.finalize(
        gold.FAMILY_BY_NAME["length_by_sentiment"],
        gold.partials(gold.review_facts(whole), WindowSpec(DAY))["length_by_sentiment"]))
    all_time = {g[2:]: v["n_reviews"] for g, v in got.items() if g[0] is None}
    assert all_time == {("0", "positive"): 1, ("1-9", "positive"): 2, ("10-49", "negative"): 1,
                        ("50-99", "neutral"): 1, ("100-249", "negative"): 1, ("250-499", "neutral"): 1,
                        ("500+", "neutral"): 1, ("10-49", "positive"): 1, ("50-99", "positive"): 1,
                        ("50-99", "negative"): 1, ("250-499", "positive"): 1}
    assert sum(all_time.values()) == 12


def test_sliding_window_rows_match_reference():
    whole, _, _ = silver_parts()
    spec = WindowSpec(2 * DAY, DAY)
    p = gold.partials(gold.review_facts(whole), spec)["reviews"]
    got = {g: v for g, v in as_dict("reviews", gold.finalize(gold.FAMILY_BY_NAME["reviews"], p)).items()
           if g[0] is not None}
    want = {g: v for g, v in ref_family("reviews", review_rows(), 2 * DAY, DAY).items() if g[0] is not None}
    assert_same(got, want)
    assert got[(T0, T0 + 2 * DAY)]["n_reviews"] == 8        # days 0 and 1


def test_sliding_window_distinct_family_all_time_counts_each_review_once():
    whole, _, _ = silver_parts()
    p = gold.partials(gold.review_facts(whole), WindowSpec(2 * DAY, DAY))["reviews_by_main_cat"]
    got = as_dict("reviews_by_main_cat", gold.finalize(gold.FAMILY_BY_NAME["reviews_by_main_cat"], p))
    assert sum(v["n_reviews"] for g, v in got.items() if g[0] is None) == 12


def test_sliding_window_all_time_counts_each_review_once():
    whole, _, _ = silver_parts()
    p = gold.partials(gold.review_facts(whole), WindowSpec(2 * DAY, DAY))["reviews"]
    got = as_dict("reviews", gold.finalize(gold.FAMILY_BY_NAME["reviews"], p))
    assert got[(None, None)]["n_reviews"] == 12
    assert got[(None, None)]["sum_overall"] == 40.0


def test_finalize_sorted_by_window_then_keys():
    whole, _, _ = silver_parts()
    family = gold.FAMILY_BY_NAME["reviews_by_rating"]
    out = gold.finalize(family, gold.partials(gold.review_facts(whole), WindowSpec(DAY))["reviews_by_rating"])
    keys = [(_epoch(r["window_start"]), r["overall"]) for r in out.to_pylist()]
    windowed = [k for k in keys if k[0] is not None]
    assert windowed == sorted(windowed)
    assert all(k[0] is None for k in keys[len(windowed):])   # all-time rows last


def test_products_family():
    def prod(asin, main_cat, images):
        row = {f.name: None for f in SILVER_PRODUCT_SCHEMA}
        row.update(asin=asin, main_cat=main_cat, image_count=images, source="p.json", source_position=1)
        return row
    rows = [prod("P1", "Books", 2), prod("P2", "Books", 0), prod("P3", "Toys", 5), prod("P4", None, 1)]
    parts = [pa.Table.from_pylist(rows[:2], schema=SILVER_PRODUCT_SCHEMA),
             pa.Table.from_pylist(rows[2:], schema=SILVER_PRODUCT_SCHEMA)]
    partial = [gold.partials(gold.product_facts(t), WindowSpec(DAY), source="products",
                             families=gold.product_families(insights=False)) for t in parts]
    assert set(partial[0]) == {"products_by_main_cat"}
    family = gold.FAMILY_BY_NAME["products_by_main_cat"]
    out = gold.finalize(family, gold.merge([p["products_by_main_cat"] for p in partial]))
    got = {r["main_cat"]: (r["window_start"], r["n_products"], r["sum_image_count"], r["mean_image_count"])
           for r in out.to_pylist()}
    assert got == {"Books": (None, 2, 2, 1.0), "Toys": (None, 1, 5, 5.0), None: (None, 1, 1, 1.0)}


def test_partials_cover_every_review_family():
    whole, _, _ = silver_parts()
    p = gold.partials(gold.review_facts(whole), WindowSpec(DAY))
    assert set(p) == {f.name for f in gold.FAMILIES if f.source == "reviews"}
    core = gold.partials(gold.review_facts(whole), WindowSpec(DAY), families=gold.review_families(False, False))
    assert set(core) == {f.name for f in gold.FAMILIES if f.source == "reviews" and not f.insight} == set(SPEC)


# ---------------------------------------------------------------------------------------------------
# retraction (a preferred copy replacing a held one) and the MERGE source of a streaming commit

REVIEW_FAMILY_NAMES = [f.name for f in gold.FAMILIES if f.source == "reviews"]


def _rows_with_summaries():
    words = ["great value", "broke fast", "great", "ok value", "fast"]
    return [dict(r, summary=words[i % len(words)], reviewer_name=f"N{r['reviewer_id']}")
            for i, r in enumerate(review_rows())]


def _drop_extrema(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("min_", "max_"))} for r in rows]


@pytest.mark.parametrize("name", REVIEW_FAMILY_NAMES)
def test_negated_partial_retracts_rows(name):
    """whole - part2 = part1, group by group, for every review family (empty groups disappear). Min and
    max are not retractable; a replaced copy has the same product, so they cannot move: not compared."""
    spec = WindowSpec(DAY)
    rows = _rows_with_summaries()
    part1 = [r for r in rows if r["asin"] in PART_1_ASINS]
    part2 = [r for r in rows if r["asin"] not in PART_1_ASINS]
    p_whole, p1, p2 = (gold.partials(gold.review_facts(silver_table(t)), spec, "reviews", gold.FAMILIES)[name]
                       for t in (rows, part1, part2))
    family = gold.FAMILY_BY_NAME[name]
    left = gold.without_empty_groups(family, gold.merge([p_whole, gold.negated(p2)]))
    assert _drop_extrema(sorted_rows(gold.finalize(family, left))) == \
        _drop_extrema(sorted_rows(gold.finalize(family, p1)))


def _apply(before, changes, key):
    """A plain-Python MERGE of ``changes`` into ``before`` on ``key`` (null equals null)."""
    rows = {tuple(r[k] for k in key): r for r in before.to_pylist()}
    for r in changes.to_pylist():
        op = r.pop(gold.OP)
        k = tuple(r[c] for c in key)
        if op == "delete":
            rows.pop(k)
        else:
            rows[k] = r
    return list(rows.values())


@pytest.mark.parametrize("name", REVIEW_FAMILY_NAMES)
@pytest.mark.parametrize("seed", range(3))
def test_changes_merged_into_the_old_table_give_the_new_one(name, seed):
    """Old gold + the MERGE source (touched windows upserted, vanished rows deleted) = new gold, also when
    the run retracts rows (a group empties, a top list loses a member) and only some windows change."""
    rng = random.Random(seed)
    spec = WindowSpec(DAY)
    rows = _rows_with_summaries()
    rng.shuffle(rows)
    old_rows, new_rows = rows[:8], rows[8:]
    retracted = rng.sample(old_rows, 2)
    family = gold.FAMILY_BY_NAME[name]

    def partial(rs):
        return gold.partials(gold.review_facts(silver_table(rs)), spec, "reviews", gold.FAMILIES)[name]
    old = partial(old_rows)
    run = [partial(new_rows), gold.negated(partial(retracted))]
    new = gold.without_empty_groups(family, gold.merge([old, *run]))
    before, after = gold.finalize(family, old), gold.finalize(family, new)
    changes = gold.changes(family, before, after, gold.window_starts(pa.concat_tables(run)))
    key = gold.row_key(family)
    assert len({tuple(r[k] for k in key) for r in after.to_pylist()}) == after.num_rows   # the key is a key
    assert _drop_extrema(sorted_rows(pa.Table.from_pylist(_apply(before, changes, key), schema=after.schema))) == \
        _drop_extrema(sorted_rows(after))
    # only the touched windows (and the all-time rows) are in the source
    touched = set(gold.window_starts(pa.concat_tables(run)).tolist())
    assert {_epoch(r["window_start"]) for r in changes.to_pylist()} <= touched | {None}
