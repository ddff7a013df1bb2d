"""Unit tests for the pure rules under the streaming graph: lateness, per-window split, event times, event
preparation, row hashes, per-window gold partials, start positions and the streaming options.

Expectations follow from the documented rules: a window [s, s + size) has closed at watermark W when
s + size + allowed lateness <= W; a record is too late when its latest window has closed; a streaming
partial of one window must merge to exactly the batch value of that window, however the rows are sliced.
"""
import datetime as dt
import json
import random

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.eventhub import idle_watermark_s, parse_start_position
from beam_pipeline.options import OptionsError, validated
from transforms import gold, keys, reasons
from transforms.clean import clean_reviews
from transforms.events import (ENQUEUED_TIME, REVIEW_TIME, UNKNOWN, EventBatch, event_times, prepare_events,
                               row_event_times)
from transforms.parse import parse_reviews, review_time_of
from transforms.windows import WindowSpec, latest_window_closed, window_closed, window_rows

H = 3600


# ---------------------------------------------------------------------------------------------------
# lateness and windows

def test_window_closed_boundaries():
    spec = WindowSpec(H)
    assert window_closed([0], spec, H, 0).tolist() == [True]          # end == watermark: closed
    assert window_closed([0], spec, H - 1, 0).tolist() == [False]
    assert window_closed([0], spec, H + 59, 60).tolist() == [False]   # within the lateness
    assert window_closed([0], spec, H + 60, 60).tolist() == [True]


def test_latest_window_closed_sliding():
    spec = WindowSpec(2 * H, H)  # windows of 2 h every hour: t=90 min is in [0, 2h) and [1h, 3h)
    t = [90 * 60]
    assert latest_window_closed(t, spec, 2 * H, 0).tolist() == [False]  # [1h, 3h) still open
    assert latest_window_closed(t, spec, 3 * H, 0).tolist() == [True]


def _brute_window_rows(seconds, spec, watermark, lateness):
    out = {}
    for i, t in enumerate(seconds):
        windows = spec.window_of(t)
        latest = max(s for s, _ in windows)
        for s, e in windows:
            if watermark is None or s + spec.size_s + lateness > watermark:
                out.setdefault(s, []).append((i, s == latest))
    return sorted(out.items())


@pytest.mark.parametrize("spec", [WindowSpec(H), WindowSpec(3 * H, H), WindowSpec(H, None, 600)])
@pytest.mark.parametrize("watermark", [None, 5 * H, 9 * H])
def test_window_rows_matches_brute_force(spec, watermark):
    rng = random.Random(7)
    seconds = [rng.randrange(0, 12 * H) for _ in range(200)]
    got = [(s, list(zip(rows.tolist(), primary.tolist())))
           for s, rows, primary in window_rows(seconds, spec, watermark, 1800)]
    assert got == _brute_window_rows(seconds, spec, watermark, 1800)


def test_window_rows_empty():
    assert window_rows([], WindowSpec(H)) == []


# ---------------------------------------------------------------------------------------------------
# event times and preparation

def body(**fields):
    base = {"reviewerID": "R", "asin": "A", "overall": 5.0, "unixReviewTime": 1_400_000_000, "reviewText": "ok"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_review_time_of_follows_the_parser_coercion():
    assert review_time_of(body()) == 1_400_000_000
    assert review_time_of(body(unixReviewTime="1400000000")) == 1_400_000_000
    assert review_time_of(body(unixReviewTime=1.4e9)) == 1_400_000_000
    assert review_time_of(body(unixReviewTime=None)) is None
    assert review_time_of(body(unixReviewTime=...)) is None
    assert review_time_of(body(unixReviewTime="soon")) is None
    assert review_time_of(b"not json") is None
    assert review_time_of(b"[1, 2]") is None


def test_event_times_on_both_clocks():
    bodies = [body(), b"garbage", b"x" * 100]
    enqueued = np.array([1_700_000_000_999, 1_700_000_001_000, 5], dtype=np.int64)
    assert event_times(bodies, enqueued, ENQUEUED_TIME, 50).tolist() == [1_700_000_000, 1_700_000_001, 0]
    assert event_times(bodies, enqueued, REVIEW_TIME, 1 << 20).tolist() == [1_400_000_000, UNKNOWN, UNKNOWN]
    assert event_times([body()], enqueued[:1], REVIEW_TIME, 10).tolist() == [UNKNOWN]  # too large to judge


def make_batch(bodies, watermark_s, first_seq=10, partition="2"):
    enqueued = np.arange(len(bodies), dtype=np.int64) + 1_700_000_000_000
    return EventBatch("reviews", partition, first_seq, tuple(str(i) for i in range(len(bodies))), enqueued,
                      event_times(bodies, enqueued, REVIEW_TIME, 1 << 20), tuple(bodies), watermark_s)


def test_prepare_events_routes_empty_and_too_late_and_keeps_positions():
    t = 1_400_000_000
    pretty = b'{"reviewerID": "R9",\n "asin": "A9", "overall": 4,\r\n "unixReviewTime": %d}' % t
    bodies = [body(reviewerID="R1"), b"", b"  \n", body(reviewerID="R2", unixReviewTime=t - 10 * H), pretty,
              b"oops"]
    spec = WindowSpec(H)
    chunk, dead, records = prepare_events(make_batch(bodies, watermark_s=t - 2 * H), spec, allowed_lateness_s=0)
    assert records == 6
    assert [(d["stage"], d["reason"], d["source"], d["source_position"]) for d in dead] == [
        (reasons.PARSE, reasons.EMPTY_EVENT, "eventhub:reviews/2", 11),
        (reasons.PARSE, reasons.EMPTY_EVENT, "eventhub:reviews/2", 12),
        (reasons.WINDOW, reasons.TOO_LATE, "eventhub:reviews/2", 13)]
    assert dead[2]["payload"] == bodies[3].decode()
    assert chunk.source == "eventhub:reviews/2" and chunk.first_line == 10 and chunk.meta.watermark_s == t - 2 * H
    lines = chunk.data.split(b"\n")[:-1]
    assert len(lines) == 6 and lines[1] == lines[2] == lines[3] == b""
    assert b"\n" not in lines[4] and b"\r" not in lines[4]
    parsed, parse_dead, parsed_records = parse_reviews(chunk)
    table, clean_dead = clean_reviews(parsed)
    assert parsed_records + len(dead) == records                      # every event counted once
    assert sorted(zip(table["reviewer_id"].to_pylist(), table["source_position"].to_pylist())) == [
        ("R1", 10), ("R9", 14)]
    assert [(d["reason"], d["source_position"]) for d in parse_dead + clean_dead] == [(reasons.MALFORMED_JSON, 15)]


def test_prepare_events_without_a_watermark_routes_nothing_late():
    chunk, dead, records = prepare_events(make_batch([body(unixReviewTime=0)], None), WindowSpec(H), 0)
    assert dead == [] and records == 1 and chunk.meta.watermark_s is None


def test_row_event_times_on_the_enqueued_clock_match_rows_to_events():
    bodies = [body(reviewerID="R1"), b"bad", body(reviewerID="R3")]
    chunk, _, _ = prepare_events(make_batch(bodies, None, first_seq=100), WindowSpec(H), 0)
    table, _ = clean_reviews(parse_reviews(chunk)[0])
    assert row_event_times(table, chunk.meta, ENQUEUED_TIME).tolist() == [1_700_000_000, 1_700_000_000]
    assert row_event_times(table, chunk.meta, REVIEW_TIME).tolist() == [1_400_000_000, 1_400_000_000]


# ---------------------------------------------------------------------------------------------------
# hashes

def test_hash_columns_equal_rows_equal_hashes_and_every_column_counts():
    t = pa.table({"s": ["a", "a", "b", None, "", "a"], "n": pa.array([1, 1, 1, 1, 1, None], pa.int64())})
    h = keys.hash_columns(t, ["s", "n"])
    assert h[0] == h[1]
    assert len({int(x) for x in h[1:]}) == 5
    assert keys.hash_columns(t, ["s"])[0] != keys.hash_columns(t, ["n"])[0]
    assert keys.hash_columns(t.slice(1), ["s", "n"])[0] == h[1]  # slices hash like the whole


# ---------------------------------------------------------------------------------------------------
# per-window gold partials

def silver(n, seed):
    rng = random.Random(seed)
    rows = [{"unix_review_time": rng.randrange(0, 5 * H), "overall": float(rng.randint(1, 5)), "verified": rng.random() < .5,
             "main_cat": rng.choice(["Books", "Toys", None]), "brand": rng.choice(["X", "Y"]),
             "price": rng.choice([1.5, 2.0, None]), "asin": f"A{rng.randrange(6)}", "reviewer_id": f"R{rng.randrange(4)}",
             "year": 1970, "month": 1, "review_length_words": rng.randrange(0, 600),
             "reviewer_name": rng.choice(["Ann", None]), "summary": rng.choice(["Good", "bad value", None])}
            for _ in range(n)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("unix_review_time", pa.int64()), ("overall", pa.float64()), ("verified", pa.bool_()),
        ("main_cat", pa.string()), ("brand", pa.string()), ("price", pa.float64()), ("asin", pa.string()),
        ("reviewer_id", pa.string()), ("year", pa.int32()), ("month", pa.int32()),
        ("review_length_words", pa.int64()), ("reviewer_name", pa.string()), ("summary", pa.string())]))


@pytest.mark.parametrize("spec", [WindowSpec(H), WindowSpec(2 * H, H)])
@pytest.mark.parametrize("family", [f for f in gold.FAMILIES if f.source == "reviews" and f.windowed],
                         ids=lambda f: f.name)   # all-time families have no window panes
def test_window_partials_over_any_slicing_equal_the_batch_windows(spec, family):
    facts = gold.review_facts(silver(300, 5))
    batch = gold.finalize(family, gold.partials(facts, spec)[family.name])
    batch = batch.filter(batch["window_start"].is_valid())
    parts = []
    for start in range(0, facts.num_rows, 37):  # small slices whose asins overlap (distinct counts!)
        piece = facts.slice(start, 37)
        for w, rows, _ in window_rows(piece["unix_review_time"].to_numpy(), spec):
            parts.append(gold.window_partials(piece.take(pa.array(rows)), w, w + spec.size_s)[family.name])
    random.Random(1).shuffle(parts)
    stream = gold.finalize(family, gold.merge(parts), totals=False).select(batch.column_names)
    order = [(c, "ascending") for c in batch.column_names if not c.startswith(("n_", "sum_", "min_", "max_",
                                                                                 "mean_", "positive_", "negative_"))]
    assert stream.sort_by(order).to_pylist() == batch.sort_by(order).to_pylist()


# ---------------------------------------------------------------------------------------------------
# start positions and options

def test_parse_start_position():
    assert parse_start_position(None) == ("checkpoint", None)
    assert parse_start_position("earliest") == ("earliest", None)
    assert parse_start_position("sequence:42") == ("sequence", 42)
    kind, when = parse_start_position("enqueued:2024-01-31T10:00:00Z")
    assert kind == "enqueued" and when == dt.datetime(2024, 1, 31, 10, tzinfo=dt.timezone.utc)
    for bad in ("sequence:x", "enqueued:", "yesterday"):
        with pytest.raises(ValueError):
            parse_start_position(bad)


def _problems(argv, monkeypatch, env=True):
    if env:
        monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", "Endpoint=sb://127.0.0.1:5674;SharedAccessKeyName=local;"
                                                         "SharedAccessKey=local;UseDevelopmentEmulator=true;EntityPath=reviews")
    else:
        monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)
    try:
        validated(PipelineOptions(["--source=eventhub", "--output=/tmp/x"] + argv))
    except OptionsError as err:
        return str(err)
    return ""


def test_streaming_options_valid(monkeypatch):
    assert _problems(["--stop_after_idle_s=3", "--allowed_lateness=1h", "--early_firing=30s",
                      "--runner=FlinkRunner"], monkeypatch) == ""


@pytest.mark.parametrize("argv,env,needle", [
    ([], False, "EVENTHUB_CONNECTION_STRING"),
    (["--reviews=a.jsonl"], True, "--reviews is for files"),
    (["--start_position=yesterday"], True, "--start_position"),
    (["--allowed_lateness=soon"], True, "--allowed_lateness"),
    (["--early_firing=0", "--runner=FlinkRunner"], True, "--early_firing must be positive"),
    (["--early_firing=30s"], True, "--early_firing needs a runner that fires processing-time triggers"),
    (["--max_records=0"], True, "--max_records"),
    (["--stop_after_idle_s=-1"], True, "--stop_after_idle_s"),
])
def test_streaming_options_problems(monkeypatch, argv, env, needle):
    assert needle in _problems(argv, monkeypatch, env)


def test_connection_string_without_entity_path_needs_a_hub(monkeypatch):
    monkeypatch.setenv("EH", "Endpoint=sb://h;SharedAccessKeyName=k;SharedAccessKey=v")
    msg = ""
    try:
        validated(PipelineOptions(["--source=eventhub", "--output=/tmp/x", "--event_hub_connection_env=EH"]))
    except OptionsError as err:
        msg = str(err)
    assert "EntityPath" in msg


def test_idle_partition_watermark_follows_the_wall_clock_by_the_rule():
    """Review-time clock: last review time + whole idle seconds - out-of-orderness (nothing before a review
    time was seen); enqueued-time clock: now - out-of-orderness."""
    from transforms.events import ENQUEUED_TIME, REVIEW_TIME
    assert idle_watermark_s(REVIEW_TIME, 1_000, 2.9, 5_000_000.5, 100) == 902
    assert idle_watermark_s(REVIEW_TIME, None, 2.9, 5_000_000.5, 100) is None
    assert idle_watermark_s(ENQUEUED_TIME, 1_000, 2.9, 5_000_000.5, 5) == 4_999_995
    assert idle_watermark_s(ENQUEUED_TIME, None, 0.0, 5_000_000.5, 5) == 4_999_995
