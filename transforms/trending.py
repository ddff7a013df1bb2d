"""Trending products, brands and main categories, by event time, from daily review counts.

Input: a daily count series, one row per (day, key) that had reviews (the ``daily_*`` gold families'
merged state: additive over buckets, panes and runs, so batch and streaming feed this module identical
input). Output: for every day of the data, the top ``top`` keys by the rule's score:

    day, <key>, count, baseline, score, rank, rule

Both rules look at a sliding window of ``days`` days ending on ``day`` (the end day and the
``days - 1`` trailing days). The series is dense: a day without reviews of a key is a count of 0.
Rows with a null key are not ranked.

``zscore`` (the default): how unusual the end day's count ``x`` is against the trailing days::

    m        = days - 1                       trailing days (missing days count 0)
    baseline = mean of the m trailing counts                      (mu)
    s2       = sample variance of the m trailing counts           (0 when m == 1)
    score    = (x - mu) / sqrt(max(s2, mu, 1))

The variance is floored by the Poisson variance ``mu`` (counts of independent reviews vary at least that
much, so a flat series with s2 = 0 cannot make a tiny rise infinite) and by 1 (an empty baseline gives
score = x, not a division by zero). A key is ranked only when ``x >= min_count`` and its score is
positive. Example (days 7, min count 3): trailing counts 2, 0, 3, 1, 2, 4 and x = 9 give mu = 2,
s2 = 2, score = (9 - 2) / sqrt(2) = 4.95; trailing counts 40, 38, 41, 39, 40, 42 and x = 48 give
mu = 40, s2 = 2, floor = max(2, 40, 1) = 40, score = 8 / 6.32 = 1.26: a small product doubling its
counts beats a big one rising by a fifth, while a rise of 1 to 2 never ranks (count below 3).

``open_avenues``: the Open Avenues lambda project's batch-layer rule (research/seeds_and_peers.md §6):
the 10 keys with the highest count on the end day, kept where the day-over-day growth
``(x - p) / p`` (``p``: the previous day's count) is at least 10 %; score = growth in percent,
baseline = p. Its flaws, fixed here (``exact_seed=True`` keeps them, for comparison):

* growth from tiny counts (1 -> 2 is +100 %): the denominator is ``max(p, min_count)`` and the end
  day needs ``x >= min_count``;
* a key absent the day before (p = 0) could never trend in the seed (it skipped it to avoid a
  division by zero); with the floor it can;
* empty days: the seed looked up a dict of the previous day; here the series is dense (a missing day
  is a count of 0), so the previous day is always the calendar day before;
* ties: the seed's top 10 depended on dict order; here candidates are ordered by count (descending),
  then key (ascending), and exactly 10 are kept (keys tied at the cut beyond the tenth are not).

Ranks: per day by score (descending), then count (descending), then key (ascending); exactly ``top``
rows at most per day (ties at the cut are decided by that order, not all kept).

Everything is numpy over whole arrays: one sort of the series by (key, day), cumulative sums, and
binary searches for each row's window; no per-row Python.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.keys import argsort_packed, dense_codes

RULES = ("zscore", "open_avenues")
OPEN_AVENUES_CANDIDATES = 10
OPEN_AVENUES_MIN_GROWTH = 0.10
COUNT = "n_reviews"


def output_schema(key, key_type=pa.string()):
    return pa.schema([("day", pa.date32()), (key, key_type), ("count", pa.int64()), ("baseline", pa.float64()),
                      ("score", pa.float64()), ("rank", pa.int32()), ("rule", pa.string())])


def _key_ranks(column):
    """Key values -> (rank of each row's value among the distinct values, ascending; the distinct values)."""
    encoded = column.combine_chunks().dictionary_encode() if isinstance(column, pa.ChunkedArray) \
        else column.dictionary_encode()
    distinct = encoded.dictionary
    order = pc.array_sort_indices(distinct).to_numpy()
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct))
    return rank[encoded.indices.to_numpy()]


def _series(daily, key):
    """-> (day int64, key rank int64, count int64, key values) of the rows with a key and a count, sorted
    by (key, day). ``daily`` holds one row per (day, key), as a merged gold partial does."""
    table = daily.select(["day", key, COUNT])
    table = table.filter(pc.and_(pc.is_valid(table[key]), pc.greater(table[COUNT], 0)))
    day = table["day"].cast(pa.int32()).to_numpy().astype(np.int64) if table.num_rows else np.zeros(0, np.int64)
    code = _key_ranks(table[key]) if table.num_rows else np.zeros(0, np.int64)
    count = table[COUNT].to_numpy().astype(np.int64) if table.num_rows else np.zeros(0, np.int64)
    order = argsort_packed([(code, int(code.max()) + 1 if code.size else 1), dense_codes(day)]) if day.size \
        else np.zeros(0, np.int64)
    return day[order], code[order], count[order], table[key].take(pa.array(order))


def _window_sums(day, code, count, days):
    """For each row (end day d of its key): (sum, sum of squares, previous day's count) of the key's
    counts over days d-(days-1) .. d-1; absent days are 0."""
    span = int(day.max() - day.min()) + days + 2 if day.size else 1
    pos = code * span + (day - (day.min() if day.size else 0))          # sorted: rows are by (key, day)
    c = np.concatenate([[0], np.cumsum(count)])
    c2 = np.concatenate([[0], np.cumsum(count * count)])
    lo = np.searchsorted(pos, pos - (days - 1), side="left")
    hi = np.searchsorted(pos, pos - 1, side="right")
    total, squares = c[hi] - c[lo], c2[hi] - c2[lo]
    prev_idx = np.searchsorted(pos, pos - 1, side="left")
    hit = (prev_idx < pos.size) & (pos[np.minimum(prev_idx, pos.size - 1)] == pos - 1) if pos.size \
        else np.zeros(0, bool)
    prev = np.where(hit, count[np.minimum(prev_idx, max(pos.size - 1, 0))], 0)
    return total, squares, prev


def _ranked(day, code, count, score, top):
    """Row indices ordered per day by (score desc, count desc, key asc), and each one's rank in its day;
    -> (indices kept, their ranks) with rank <= top."""
    s_code, n_s = dense_codes(-score)
    c_code, n_c = dense_codes(-count)
    d_code, n_d = dense_codes(day)
    order = argsort_packed([(d_code, n_d), (s_code, n_s), (c_code, n_c), (code, int(code.max()) + 1 if code.size else 1)]) \
        if day.size else np.zeros(0, np.int64)
    d = day[order]
    first = np.ones(d.size, dtype=bool)
    first[1:] = d[1:] != d[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(d.size), 0)) if d.size else d
    rank = np.arange(d.size) - start + 1
    keep = rank <= top
    return order[keep], rank[keep]


def zscore(count, total, squares, days):
    """The default rule's score from the end-day count and the trailing window's sum and sum of squares
    (numpy arrays): -> (baseline mean, score)."""
    m = days - 1
    mu = total / m
    var = (squares - total * total / m) / (m - 1) if m > 1 else np.zeros_like(mu)
    floor = np.maximum(np.maximum(var, mu), 1.0)
    return mu, (count - mu) / np.sqrt(floor)


def trending(daily, key, days=7, top=20, rule="zscore", min_count=3, exact_seed=False):
    """Daily counts (``day`` date32, ``key``, ``n_reviews``) -> the trending table (see the module doc).
    ``exact_seed`` (open_avenues only): the seed's rule with its flaws, for comparison."""
    if rule not in RULES:
        raise ValueError(f"unknown trending rule {rule!r} (one of {', '.join(RULES)})")
    if days < 2:
        raise ValueError("trending needs a window of at least 2 days")
    schema = output_schema(key, daily.schema.field(key).type)
    day, code, count, keys = _series(daily, key)
    if not day.size:
        return schema.empty_table()
    total, squares, prev = _window_sums(day, code, count, days)
    if rule == "zscore":
        baseline, score = zscore(count, total, squares, days)
        eligible = (count >= min_count) & (score > 0)
    else:
        baseline = prev.astype(np.float64)
        if exact_seed:
            eligible = prev > 0
            growth = (count - prev) / np.where(prev > 0, prev, 1)
        else:
            eligible = count >= min_count
            growth = (count - prev) / np.maximum(prev, min_count)
        score = growth * 100.0
        # the 10 candidates of each day: highest count first, ties by key (the seed: top 10 by count among
        # every product of the end day; the growth test comes after the cut)
        pool = np.flatnonzero(count >= (1 if exact_seed else min_count))
        cand, _ = _ranked(day[pool], code[pool], count[pool], count[pool].astype(np.float64),
                          OPEN_AVENUES_CANDIDATES)
        candidate = np.zeros(day.size, dtype=bool)
        candidate[pool[cand]] = True
        eligible = eligible & candidate & (growth >= OPEN_AVENUES_MIN_GROWTH - 1e-12)
    rows = np.flatnonzero(eligible)
    kept, rank = _ranked(day[rows], code[rows], count[rows], score[rows], top)
    idx = rows[kept]
    return pa.table({
        "day": pa.array(day[idx].astype(np.int32), pa.int32()).cast(pa.date32()),
        key: keys.take(pa.array(idx)),
        "count": pa.array(count[idx], pa.int64()),
        "baseline": pa.array(baseline[idx], pa.float64()),
        "score": pa.array(score[idx], pa.float64()),
        "rank": pa.array(rank, pa.int32()),
        "rule": pa.array([rule] * idx.size, pa.string()),
    }, schema=schema)
