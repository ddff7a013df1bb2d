"""Each reviewer's most recent brands (the Open Avenues speed layer, done by event time).

The rule: for each reviewer, the ``n`` most recent DISTINCT brands of the products they reviewed, newest
first. A brand's time is the latest review time of that reviewer with that brand; brands with the same
time are ordered by name (ascending), so the order is total and the result does not depend on the order
events arrive in. Rows with a null or empty brand are skipped. (The seed kept a FIFO of the last 50
brands in arrival order, duplicates included: one brand reviewed 50 times filled the list, and a late
event counted as the newest.)

Why a merge is exact: only a brand's latest time matters, and a brand outside a reviewer's top ``n``
has ``n`` brands at or above it in that total order, which stay above it whatever arrives later. So
``merge_recent(recent_brands(a), b) == recent_brands(a + b)`` for any split of the events, in any order
(tested with hypothesis).

Two forms of one rule:

* ``recent_brands`` / ``merge_recent``: Arrow tables, vectorised over every reviewer (batch, the commit);
* ``recent_list`` / ``merge_recent_list``: one reviewer's small list of (time, brand) pairs in plain
  Python, for per-key state (a streaming DoFn keeps the list in Beam state).

Table: ``reviewer_id`` string, ``brands`` list<string> (newest first), ``brand_times`` list<timestamp>
(each brand's latest review time, same order), ``n_brands`` int32.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.keys import argsort_packed, dense_codes

DEFAULT_N = 50
TIME = pa.timestamp("us", tz="UTC")   # Delta's one timestamp unit (also inside lists)
SCHEMA = pa.schema([("reviewer_id", pa.string()), ("brands", pa.list_(pa.string())),
                    ("brand_times", pa.list_(TIME)), ("n_brands", pa.int32())])
EVENT_SCHEMA = pa.schema([("reviewer_id", pa.string()), ("time", pa.int64()), ("brand", pa.string())])


def events_from_silver(silver):
    """Silver review rows -> events (reviewer_id, time = unix_review_time, brand)."""
    return pa.table({"reviewer_id": silver["reviewer_id"], "time": silver["unix_review_time"],
                     "brand": silver["brand"]}, schema=EVENT_SCHEMA)


def _sorted_codes(column):
    """-> (code of each value: its rank among the distinct values, ascending; the distinct values in
    ascending order), so that ``values.take(code)`` gives the column back."""
    encoded = column.combine_chunks().dictionary_encode() if isinstance(column, pa.ChunkedArray) \
        else column.dictionary_encode()
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[encoded.indices.to_numpy()], encoded.dictionary.take(pa.array(order))


def recent_brands(events, n=DEFAULT_N):
    """Events (reviewer_id, time in unix seconds, brand) -> one row per reviewer (``SCHEMA``), reviewers
    in ascending order."""
    if n < 1:
        raise ValueError("n must be at least 1")
    events = events.select(["reviewer_id", "time", "brand"])
    valid = pc.and_(pc.and_(pc.is_valid(events["reviewer_id"]), pc.is_valid(events["time"])),
                    pc.greater(pc.binary_length(pc.fill_null(events["brand"], "")), 0))
    events = events.filter(valid)
    if not events.num_rows:
        return SCHEMA.empty_table()
    reviewer, reviewers = _sorted_codes(events["reviewer_id"])
    brand, brands = _sorted_codes(events["brand"])
    time = events["time"].to_numpy().astype(np.int64)
    # each (reviewer, brand)'s latest time: sort by the pair, then time, and keep each pair's last row
    pair = reviewer * len(brands) + brand
    by_pair = argsort_packed([(pair, int(pair.max()) + 1), dense_codes(time)])
    last = np.ones(by_pair.size, dtype=bool)
    last[:-1] = pair[by_pair][1:] != pair[by_pair][:-1]
    latest = by_pair[last]
    reviewer, brand, time = reviewer[latest], brand[latest], time[latest]
    t_code, n_times = dense_codes(time)
    # reviewer ascending, newest first, brand name ascending
    order = argsort_packed([(reviewer, len(reviewers)), (n_times - 1 - t_code, n_times), (brand, len(brands))])
    r = reviewer[order]
    first = np.ones(r.size, dtype=bool)
    first[1:] = r[1:] != r[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(r.size), 0))
    keep = np.arange(r.size) - start < n
    order, r = order[keep], r[keep]
    heads = np.flatnonzero(np.concatenate([[True], r[1:] != r[:-1]]))
    offsets = pa.array(np.concatenate([heads, [r.size]]).astype(np.int32), pa.int32())
    brand_values = brands.take(pa.array(brand[order]))
    time_values = pa.array(time[order] * 1_000_000, pa.timestamp("us", tz="UTC"))
    return pa.table({
        "reviewer_id": reviewers.take(pa.array(r[heads])),
        "brands": pa.ListArray.from_arrays(offsets, brand_values),
        "brand_times": pa.ListArray.from_arrays(offsets, time_values),
        "n_brands": pa.array(np.diff(offsets.to_numpy()).astype(np.int32), pa.int32()),
    }, schema=SCHEMA)


def lists_to_events(lists):
    """A recent-brands table -> its events (one per listed brand, at its time)."""
    if lists is None or not lists.num_rows:
        return EVENT_SCHEMA.empty_table()
    lengths = pc.list_value_length(lists["brands"]).to_numpy(zero_copy_only=False)
    times = pc.list_flatten(lists["brand_times"])
    return pa.table({
        "reviewer_id": lists["reviewer_id"].take(pa.array(np.repeat(np.arange(lists.num_rows), lengths))),
        "time": pc.divide(times.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), 1_000_000),
        "brand": pc.list_flatten(lists["brands"]),
    }, schema=EVENT_SCHEMA)


def merge_recent(old_lists, new_events, n=DEFAULT_N):
    """A recent-brands table (``SCHEMA``, e.g. what the table holds) + new events -> the table over both;
    equal to ``recent_brands`` of every event behind both, in any order and any split."""
    return recent_brands(pa.concat_tables([lists_to_events(old_lists), new_events.select(EVENT_SCHEMA.names)
                                           .cast(EVENT_SCHEMA)]), n)


# ---------------------------------------------------------------------------------------------------
# one reviewer, plain Python (per-key state)

def recent_list(events, n=DEFAULT_N):
    """One reviewer's events [(time, brand)] -> [(time, brand)] of the ``n`` most recent distinct brands,
    newest first (ties by brand name); null or empty brands skipped."""
    latest = {}
    for t, b in events:
        if b and t is not None and (b not in latest or t > latest[b]):
            latest[b] = t
    return sorted(((t, b) for b, t in latest.items()), key=lambda tb: (-tb[0], tb[1]))[:n]


def merge_recent_list(old, new_events, n=DEFAULT_N):
    """A reviewer's stored list [(time, brand)] + new events -> the new list (``recent_list`` of both)."""
    return recent_list(list(old) + list(new_events), n)
