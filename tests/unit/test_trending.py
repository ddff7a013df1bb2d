"""Trending rules (transforms.trending): exact values on hand-built daily series, both rules, ties, empty
days, tiny counts, and a brute-force reference over random series."""
import datetime as dt
import math
import random

import pyarrow as pa
import pytest

from transforms import trending

D0 = dt.date(2020, 1, 1)
SCHEMA = pa.schema([("day", pa.date32()), ("asin", pa.string()), ("n_reviews", pa.int64())])


def day(i):
    return D0 + dt.timedelta(days=i)


def daily(series):
    """{key: [count of day 0, day 1, ...]} -> sparse daily rows (zero days left out, as the state holds them)."""
    rows = [{"day": day(i), "asin": k, "n_reviews": c} for k, counts in series.items() for i, c in enumerate(counts)
            if c]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def rows(table):
    return [(r["day"], r["asin"], r["count"], round(r["baseline"], 6), round(r["score"], 6), r["rank"])
            for r in table.to_pylist()]


def test_zscore_worked_example_from_the_docs():
    t = trending.trending(daily({"P": [2, 0, 3, 1, 2, 4, 9], "Q": [40, 38, 41, 39, 40, 42, 48]}), "asin",
                          days=7, top=20, min_count=3)
    last = [r for r in rows(t) if r[0] == day(6)]
    assert last == [(day(6), "P", 9, 2.0, round(7 / math.sqrt(2), 6), 1),
                    (day(6), "Q", 48, 40.0, round(8 / math.sqrt(40), 6), 2)]
    assert set(t["rule"].to_pylist()) == {"zscore"}


def test_zscore_empty_days_count_zero_and_days_before_the_data_too():
    # P has reviews on day 0 and day 9 only: the 6 trailing days of day 9 are all empty -> mu 0, floor 1
    t = trending.trending(daily({"P": [3, 0, 0, 0, 0, 0, 0, 0, 0, 5]}), "asin", days=7, min_count=3)
    assert rows(t) == [(day(0), "P", 3, 0.0, 3.0, 1), (day(9), "P", 5, 0.0, 5.0, 1)]


def test_zscore_minimum_count_and_positive_score_only():
    # 1 -> 2 is a rise but below the minimum count; a steady series has score 0 and is not ranked
    t = trending.trending(daily({"tiny": [0, 0, 0, 0, 0, 0, 2], "flat": [5] * 7}), "asin", days=7, min_count=3)
    assert [r for r in rows(t) if r[0] == day(6)] == []
    t1 = trending.trending(daily({"tiny": [0, 0, 0, 0, 0, 0, 2]}), "asin", days=7, min_count=1)
    assert rows(t1) == [(day(6), "tiny", 2, 0.0, 2.0, 1)]


def test_ties_are_broken_by_count_then_key_and_the_cut_is_exact():
    # three keys with the same score on day 1 (empty baseline: score = count): B and C have 4, A has 4 too
    t = trending.trending(daily({"C": [0, 4], "A": [0, 4], "B": [0, 4], "D": [0, 3]}), "asin", days=2, top=2,
                          min_count=1)
    assert rows(t) == [(day(1), "A", 4, 0.0, 4.0, 1), (day(1), "B", 4, 0.0, 4.0, 2)]


def test_days_two_uses_the_previous_day_only():
    t = trending.trending(daily({"P": [1, 2, 8]}), "asin", days=2, min_count=1)
    # m = 1: mu = previous day, variance 0 -> floor max(mu, 1)
    assert rows(t) == [(day(0), "P", 1, 0.0, 1.0, 1), (day(1), "P", 2, 1.0, 1.0, 1),
                       (day(2), "P", 8, 2.0, round(6 / math.sqrt(2), 6), 1)]


def test_open_avenues_fixed_rule():
    series = {
        "big": [100, 105],       # +5 %: among the top 10 by count, growth too small
        "grow": [10, 12],        # +20 %
        "new": [0, 6],           # absent the day before: growth 6 / max(0, 3) = +200 % (the seed skipped it)
        "tiny": [1, 2],          # 1 -> 2: below the minimum count on the end day (2 < 3)
        "small": [1, 3],         # the seed's +200 %; against max(1, 3): +66.7 %
    }
    t = trending.trending(daily(series), "asin", days=7, rule="open_avenues", min_count=3)
    assert [r for r in rows(t) if r[0] == day(1)] == [(day(1), "new", 6, 0.0, 200.0, 1),
                                                      (day(1), "small", 3, 1.0, round(200 / 3, 6), 2),
                                                      (day(1), "grow", 12, 10.0, 20.0, 3)]
    assert set(t["rule"].to_pylist()) == {"open_avenues"}


def test_open_avenues_exact_seed_keeps_its_flaws():
    series = {"grow": [10, 12], "new": [0, 6], "tiny": [1, 2], "big": [100, 105]}
    t = trending.trending(daily(series), "asin", days=7, rule="open_avenues", exact_seed=True)
    # tiny 1 -> 2 is +100 % and wins; "new" cannot trend (no count the day before)
    assert [r for r in rows(t) if r[0] == day(1)] == [(day(1), "tiny", 2, 1.0, 100.0, 1),
                                                      (day(1), "grow", 12, 10.0, 20.0, 2)]


def test_open_avenues_candidates_are_the_top_ten_by_count_ties_by_key():
    # 12 keys growing 50 %; only the 10 highest counts are candidates, ties at the cut decided by key
    series = {f"k{i:02d}": [10, 15] for i in range(8)}
    series.update({"z1": [2, 3], "a9": [4, 6], "b9": [4, 6], "c9": [4, 6]})
    t = trending.trending(daily(series), "asin", rule="open_avenues", min_count=1, top=20)
    got = {r[1] for r in rows(t) if r[0] == day(1)}
    assert got == {f"k{i:02d}" for i in range(8)} | {"a9", "b9"}


def test_open_avenues_missing_day_is_a_zero_not_the_last_day_seen():
    # day 1 has no reviews of P: day 2's previous day is day 1 (count 0), not day 0
    t = trending.trending(daily({"P": [10, 0, 11]}), "asin", rule="open_avenues", min_count=3)
    assert [r for r in rows(t) if r[0] == day(2)] == [(day(2), "P", 11, 0.0, round(11 / 3 * 100, 6), 1)]


def test_null_keys_and_empty_input():
    t = pa.Table.from_pylist([{"day": D0, "asin": None, "n_reviews": 9}], schema=SCHEMA)
    assert trending.trending(t, "asin", min_count=1).num_rows == 0
    assert trending.trending(SCHEMA.empty_table(), "asin").schema == trending.output_schema("asin")


def test_bad_arguments():
    with pytest.raises(ValueError):
        trending.trending(SCHEMA.empty_table(), "asin", rule="hot")
    with pytest.raises(ValueError):
        trending.trending(SCHEMA.empty_table(), "asin", days=1)


def _reference(series, days, top, min_count, rule):
    """Plain Python over dense series: the documented rules, restated."""
    n_days = max(len(v) for v in series.values())
    out = []
    for d in range(n_days):
        scored = []
        at = {k: (v[d] if d < len(v) else 0) for k, v in series.items()}
        for k, v in series.items():
            x = at[k]
            if x == 0:
                continue
            trail = [v[j] if 0 <= j < len(v) else 0 for j in range(d - days + 1, d)]
            if rule == "zscore":
                m = days - 1
                mu = sum(trail) / m
                var = sum((t - mu) ** 2 for t in trail) / (m - 1) if m > 1 else 0.0
                score = (x - mu) / math.sqrt(max(var, mu, 1.0))
                if x >= min_count and score > 0:
                    scored.append((k, x, mu, score))
            else:
                p = v[d - 1] if d >= 1 and d - 1 < len(v) else 0
                cands = sorted((kk for kk in at if at[kk] >= min_count), key=lambda kk: (-at[kk], kk))[:10]
                growth = (x - p) / max(p, min_count)
                if k in cands and growth >= 0.1 - 1e-12:
                    scored.append((k, x, float(p), growth * 100))
        scored.sort(key=lambda s: (-s[3], -s[1], s[0]))
        out += [(day(d), k, x, round(b, 6), round(s, 6), i + 1) for i, (k, x, b, s) in enumerate(scored[:top])]
    return out


@pytest.mark.parametrize("rule", trending.RULES)
@pytest.mark.parametrize("seed", range(5))
def test_matches_a_brute_force_reference(rule, seed):
    rng = random.Random(seed)
    series = {f"p{i}": [rng.choice([0, 0, 1, 2, 3, 5, 8, 13]) for _ in range(rng.randint(1, 20))]
              for i in range(15)}
    days, top, min_count = rng.randint(2, 8), rng.randint(1, 6), rng.randint(1, 4)
    got = rows(trending.trending(daily(series), "asin", days=days, top=top, rule=rule, min_count=min_count))
    assert sorted(got) == sorted(_reference(series, days, top, min_count, rule))
