"""The insight gold families (transforms.gold.INSIGHT_FAMILIES) and gold/distinct_counts, each checked
against a plain-Python computation over the same rows, with partials computed over two splits of the
rows (as buckets or runs give them) and merged."""
import collections
import datetime as dt
import random
import re

import pyarrow as pa
import pytest

from tests import _tables
from transforms import gold
from transforms.schemas import SILVER_PRODUCT_SCHEMA
from transforms.text import STOP_WORDS
from transforms.windows import WindowSpec

DAY = 86400
T0 = _tables.T0
UTC = dt.timezone.utc
SUMMARIES = ["Great product", "great PRODUCT ", "Not what I expected!", "Love it", "love it", "Five Stars", None, "",
             "The best, the BEST.", "Broke after 2 days... don't buy", "works as described"]
NAMES = ["Amazon Customer", "Amazon Customer", "Bob", None, "Kim", "Kim", "Amazon Customer"]
BRANDS = ["Acme", "Bolt", None, "Core", ""]


def rows(n=300, seed=1):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        asin = f"P{rng.randint(0, 14)}"
        out.append({"reviewer_id": f"R{rng.randint(0, 40)}", "asin": asin, "overall": float(rng.randint(1, 5)),
                    "unix_review_time": T0 + rng.randint(0, 70) * DAY + rng.randint(0, DAY - 1),
                    "summary": rng.choice(SUMMARIES), "reviewer_name": rng.choice(NAMES),
                    "brand": BRANDS[int(asin[1:]) % len(BRANDS)] or None,
                    "main_cat": ["Books", "Toys", None][int(asin[1:]) % 3]})
    return out


def merged(name, data, spec=WindowSpec(DAY)):
    """Partials of two splits of the rows (split on asin, as the shuffle does), merged."""
    parts = [[r for r in data if int(r["asin"][1:]) % 2 == k] for k in (0, 1)]
    return gold.merge([gold.partials(gold.review_facts(_tables.silver_table(p)), spec)[name] for p in parts])


def final(name, data, **kw):
    return gold.finalize(gold.family(name, **kw), merged(name, data))


def day_of(t):
    return dt.datetime.fromtimestamp(t, UTC).date()


@pytest.mark.parametrize("name,key", [("daily_products", "asin"), ("daily_brands", "brand"),
                                      ("daily_main_cats", "main_cat")])
def test_daily_families_are_the_daily_count_series(name, key):
    data = rows()
    out = final(name, data)
    assert out["window_start"].null_count == out.num_rows        # all time only
    got = {(r["day"], r[key]): r["n_reviews"] for r in out.to_pylist()}
    assert got == dict(collections.Counter((day_of(r["unix_review_time"]), r[key]) for r in data))


def test_reviews_by_month_per_window_and_in_all():
    data = rows()
    out = final("reviews_by_month", data).to_pylist()
    alltime = {(r["year"], r["month"]): (r["n_reviews"], r["sum_overall"]) for r in out if r["window_start"] is None}
    ref = collections.defaultdict(lambda: [0, 0.0])
    for r in data:
        d = day_of(r["unix_review_time"])
        ref[(d.year, d.month)][0] += 1
        ref[(d.year, d.month)][1] += r["overall"]
    assert alltime == {k: tuple(v) for k, v in ref.items()}
    windows = collections.Counter()
    for r in data:
        d = day_of(r["unix_review_time"])
        windows[(r["unix_review_time"] // DAY * DAY, d.year, d.month)] += 1
    assert {(int(r["window_start"].timestamp()), r["year"], r["month"]): r["n_reviews"]
            for r in out if r["window_start"] is not None} == dict(windows)


def ref_words(text):
    """The documented normalisation for these ASCII summaries: lower case, everything but letters and
    apostrophes inside words a space (digits too), split, stop words dropped."""
    text = re.sub(r"[^a-z'\s]+|[0-9]+", " ", (text or "").lower())
    text = re.sub(r"(?:^|\s)'+|'+(?:\s|$)", " ", text)
    return [w for w in text.split() if w not in STOP_WORDS]


def sentiment(rating):
    return "negative" if rating <= 2 else ("positive" if rating >= 4 else "neutral")


def test_top_words_per_sentiment_with_stop_words_removed():
    data = rows(500)
    out = final("top_words", data).to_pylist()
    counts = collections.Counter()
    for r in data:
        for w in ref_words(r["summary"]):
            counts[(sentiment(r["overall"]), w)] += 1
    totals = collections.Counter()
    for (s, _), n in counts.items():
        totals[s] += n
    expected = []
    for s in sorted(totals):
        ranked = sorted(((w, n) for (ss, w), n in counts.items() if ss == s), key=lambda x: (-x[1], x[0]))
        expected += [(s, w, n, n / totals[s], i + 1) for i, (w, n) in enumerate(ranked[:gold.TOP_WORDS])]
    got = [(r["sentiment"], r["word"], r["n_occurrences"], r["share"], r["rank"]) for r in out]
    assert got == expected
    assert "don't" in {w for _, w, *_ in got} and "the" not in {w for _, w, *_ in got}


def test_top_words_cut_per_sentiment():
    data = rows(500)
    fam = gold.family("top_words")
    import dataclasses
    out = gold.finalize(dataclasses.replace(fam, top=2), merged("top_words", data))
    per = collections.Counter(r["sentiment"] for r in out.to_pylist())
    assert set(per.values()) == {2}


def test_top_summaries_case_normalised():
    data = rows(500)
    out = final("top_summaries", data).to_pylist()
    norm = [(r["summary"] or "").strip().lower() or None for r in data]
    counts = collections.Counter(s for s in norm if s is not None)
    ranked = sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:100]
    assert [(r["summary_norm"], r["n_reviews"], r["share"], r["rank"]) for r in out] == \
        [(s, n, n / len(data), i + 1) for i, (s, n) in enumerate(ranked)]
    assert "great product" in counts and "Great product" not in {r["summary_norm"] for r in out}


def test_top_reviewer_names_with_share_of_all_reviews():
    data = rows(500)
    out = final("top_reviewer_names", data).to_pylist()
    counts = collections.Counter(r["reviewer_name"] for r in data if r["reviewer_name"] is not None)
    ranked = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    assert [(r["reviewer_name"], r["n_reviews"], r["share"], r["rank"]) for r in out] == \
        [(k, n, n / len(data), i + 1) for i, (k, n) in enumerate(ranked)]
    assert out[0]["reviewer_name"] == "Amazon Customer"


@pytest.mark.parametrize("name,key", [("rating_by_product", "asin"), ("rating_by_brand", "brand")])
@pytest.mark.parametrize("min_reviews", [1, 20, 40])
def test_top_and_bottom_by_rating_with_a_minimum_count(name, key, min_reviews):
    data = rows(500)
    out = final(name, data, min_reviews=min_reviews).to_pylist()
    acc = collections.defaultdict(list)
    for r in data:
        if r[key] is not None:
            acc[r[key]].append(r["overall"])
    stats = {k: (len(v), sum(v) / len(v)) for k, v in acc.items() if len(v) >= min_reviews}
    top = sorted(stats, key=lambda k: (-stats[k][1], -stats[k][0], k))[:10]
    bottom = sorted(stats, key=lambda k: (stats[k][1], -stats[k][0], k))[:10]
    expected = [("top", i + 1, k, stats[k][0]) for i, k in enumerate(top)] + \
        [("bottom", i + 1, k, stats[k][0]) for i, k in enumerate(bottom)]
    assert [(r["end"], r["rank"], r[key], r["n_reviews"]) for r in out] == expected
    for r in out:
        assert r["mean_overall"] == pytest.approx(stats[r[key]][1])


def test_products_by_secondary_category():
    def prod(asin, cats):
        row = {f.name: None for f in SILVER_PRODUCT_SCHEMA}
        row.update(asin=asin, categories=cats, image_count=0, source="p.json", source_position=1)
        return row
    products = [prod("A", ["Home", "Kitchen", "Pans"]), prod("B", ["Home", "Kitchen"]), prod("C", ["Home"]),
                prod("D", None), prod("E", []), prod("F", ["Toys", "Games"])]
    parts = [pa.Table.from_pylist(products[:3], schema=SILVER_PRODUCT_SCHEMA),
             pa.Table.from_pylist(products[3:], schema=SILVER_PRODUCT_SCHEMA)]
    fam = gold.FAMILY_BY_NAME["products_by_secondary_cat"]
    out = gold.finalize(fam, gold.merge([gold.partials(gold.product_facts(t), WindowSpec(DAY), "products")[fam.name]
                                         for t in parts]))
    ref = collections.Counter(p["categories"][1] if p["categories"] and len(p["categories"]) > 1 else None
                              for p in products)
    assert {r["secondary_cat"]: r["n_products"] for r in out.to_pylist()} == dict(ref)


@pytest.mark.parametrize("spec", [WindowSpec(DAY), WindowSpec(7 * DAY, DAY)], ids=["fixed", "sliding"])
def test_distinct_counts_per_window_and_in_all(spec):
    data = rows(400)
    reviewers = merged("top_reviewers", data, spec)
    products = merged("reviews_by_main_cat", data, spec)
    out = gold.distinct_counts(reviewers, products).to_pylist()
    ref = collections.defaultdict(lambda: (set(), set()))
    for r in data:
        t = r["unix_review_time"]
        for start, _ in spec.window_of(t):
            ref[start][0].add(r["reviewer_id"])
            ref[start][1].add(r["asin"])
    got = {int(r["window_start"].timestamp()): (r["n_reviewers"], r["n_products"])
           for r in out if r["window_start"] is not None}
    assert got == {w: (len(a), len(b)) for w, (a, b) in ref.items()}
    (alltime,) = [r for r in out if r["window_start"] is None]
    assert (alltime["n_reviewers"], alltime["n_products"]) == \
        (len({r["reviewer_id"] for r in data}), len({r["asin"] for r in data}))
    for r in out:
        if r["window_start"] is not None:
            assert int((r["window_end"] - r["window_start"]).total_seconds()) == spec.size_s


def test_insight_families_are_left_out_when_insights_are_off():
    fams = gold.review_families(scored=False, insights=False)
    assert not any(f.insight for f in fams)
    assert {f.name for f in gold.review_families(False)} - {f.name for f in fams} == \
        {f.name for f in gold.INSIGHT_FAMILIES}
    assert [f.name for f in gold.product_families(False)] == ["products_by_main_cat"]
