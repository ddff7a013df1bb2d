"""Recent brands per reviewer (transforms.recent_brands): exact values on hand-built events (out of
order, ties, one brand many times, the N cut, null and empty brands) and hypothesis properties: the
merge is independent of order and split, and the Arrow and plain-Python forms agree."""
import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import recent_brands as rb

UTC = dt.timezone.utc


def events(rows):
    return pa.Table.from_pylist([{"reviewer_id": r, "time": t, "brand": b} for r, t, b in rows],
                                schema=rb.EVENT_SCHEMA)


def as_lists(table):
    """-> {reviewer: [(unix seconds, brand)]} (the table's lists, newest first)."""
    out = {}
    for r in table.to_pylist():
        times = [int(t.timestamp()) for t in r["brand_times"]]
        assert r["n_brands"] == len(r["brands"]) == len(times)
        out[r["reviewer_id"]] = list(zip(times, r["brands"]))
    return out


def test_hand_values_out_of_order_duplicates_ties_and_nulls():
    ev = events([
        ("u", 30, "Acme"), ("u", 10, "Zed"), ("u", 50, "Acme"),   # Acme twice: its latest time counts
        ("u", 40, "Bolt"), ("u", 40, "Able"),                       # a tie at 40: by name
        ("u", 60, None), ("u", 70, ""),                              # skipped
        ("v", 5, "Zed"), (None, 1, "Acme"),
    ])
    t = rb.recent_brands(ev, n=50)
    assert t.schema == rb.SCHEMA
    assert t["reviewer_id"].to_pylist() == ["u", "v"]
    assert as_lists(t) == {"u": [(50, "Acme"), (40, "Able"), (40, "Bolt"), (10, "Zed")], "v": [(5, "Zed")]}


def test_the_n_cut_keeps_the_newest_distinct_brands():
    ev = events([("u", t, f"b{t % 4}") for t in range(20)])   # 4 brands, each seen 5 times
    assert as_lists(rb.recent_brands(ev, n=2)) == {"u": [(19, "b3"), (18, "b2")]}
    assert as_lists(rb.recent_brands(ev, n=10)) == {"u": [(19, "b3"), (18, "b2"), (17, "b1"), (16, "b0")]}


def test_one_brand_reviewed_many_times_fills_one_slot_not_fifty():
    ev = events([("u", t, "Acme") for t in range(60)] + [("u", 1, "Bolt")])
    assert as_lists(rb.recent_brands(ev, n=50)) == {"u": [(59, "Acme"), (1, "Bolt")]}


def test_a_late_event_does_not_become_the_newest():
    first = rb.recent_brands(events([("u", 100, "New"), ("u", 90, "Mid")]), n=2)
    merged = rb.merge_recent(first, events([("u", 10, "Old")]), n=2)   # arrives last, happened first
    assert as_lists(merged) == {"u": [(100, "New"), (90, "Mid")]}
    merged = rb.merge_recent(first, events([("u", 95, "Late")]), n=2)
    assert as_lists(merged) == {"u": [(100, "New"), (95, "Late")]}


def test_empty_inputs():
    assert rb.recent_brands(rb.EVENT_SCHEMA.empty_table()).num_rows == 0
    assert rb.merge_recent(None, rb.EVENT_SCHEMA.empty_table()).num_rows == 0
    with pytest.raises(ValueError):
        rb.recent_brands(rb.EVENT_SCHEMA.empty_table(), n=0)


def test_events_round_trip_through_the_table():
    t = rb.recent_brands(events([("u", 5, "A"), ("u", 7, "B"), ("v", 1, "C")]))
    back = rb.lists_to_events(t)
    assert sorted(back.to_pylist(), key=lambda r: (r["reviewer_id"], r["time"])) == [
        {"reviewer_id": "u", "time": 5, "brand": "A"}, {"reviewer_id": "u", "time": 7, "brand": "B"},
        {"reviewer_id": "v", "time": 1, "brand": "C"}]


def test_plain_python_form_hand_values():
    assert rb.recent_list([(3, "A"), (9, "B"), (9, "A"), (1, None), (2, ""), (9, "C")], n=2) == [(9, "A"), (9, "B")]
    assert rb.merge_recent_list([(9, "A"), (9, "B")], [(10, "C"), (1, "D")], n=2) == [(10, "C"), (9, "A")]


# ---------------------------------------------------------------------------------------------------
# properties

event = st.tuples(st.sampled_from(["u", "v", "w"]), st.integers(0, 30),
                  st.sampled_from(["A", "B", "C", "D", "E", "F", "", None]))
event_lists = st.lists(event, max_size=60)


@settings(max_examples=150, deadline=None)
@given(event_lists, st.integers(1, 5), st.randoms(use_true_random=False), st.integers(1, 4))
def test_merge_in_any_order_and_split_equals_the_rule_over_everything(evs, n, rnd, k):
    whole = as_lists(rb.recent_brands(events(evs), n))
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.randint(0, len(shuffled)) for _ in range(k - 1))
    parts = [shuffled[a:b] for a, b in zip([0] + cuts, cuts + [len(shuffled)])]
    state = None
    for part in parts:                       # fold the parts in, one merge each
        state = rb.merge_recent(state, events(part), n)
    assert as_lists(state) == whole
    # merging two partial tables (each the rule over its own part) gives the same too
    if len(parts) >= 2:
        left = rb.recent_brands(events([e for p in parts[::2] for e in p]), n)
        right = rb.recent_brands(events([e for p in parts[1::2] for e in p]), n)
        assert as_lists(rb.merge_recent(left, rb.lists_to_events(right), n)) == whole


@settings(max_examples=150, deadline=None)
@given(event_lists, st.integers(1, 5), st.randoms(use_true_random=False))
def test_plain_python_form_agrees_with_the_arrow_form(evs, n, rnd):
    whole = as_lists(rb.recent_brands(events(evs), n))
    for reviewer in {r for r, _, _ in evs}:
        mine = [(t, b) for r, t, b in evs if r == reviewer]
        rnd.shuffle(mine)
        state = []
        for i in range(0, len(mine), 3):     # arrival in small batches, as per-key state sees it
            state = rb.merge_recent_list(state, mine[i:i + 3], n)
        assert state == whole.get(reviewer, [])
