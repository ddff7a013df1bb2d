"""Streaming semantics of the graph after the reader, with TestStream on the BundleBasedDirectRunner.

The input is what the Event Hubs reader emits (``EventBatch``: raw bodies, positions and the reader's
watermark before the batch); the runner's watermark is driven by TestStream in step with it. Every
expected value below follows from the documented rules: fixed one-hour windows, early panes every 60 s of
processing time, allowed lateness two hours, gold panes accumulating (the last pane is the window's
value; gold is re-windowed after the silver panes, so its early panes come one early period later),
silver panes discarding, too-late events (latest window end + lateness <= watermark) dead-lettered
by the reader's step, duplicates dropped per window on (partition, sequence number) and content key.
"""
import glob
import json

import apache_beam as beam
import numpy as np
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from beam_pipeline import tables
from beam_pipeline.streaming import EventsToReviews, RowWindows, StreamTarget, WindowedRows
from transforms import reasons as R
from transforms.events import REVIEW_TIME, EventBatch, event_times
from transforms.windows import WindowSpec

H = 3600
T0 = 1_400_000_400 - 1_400_000_400 % H   # start of window A; window B follows
A, B = IntervalWindow(T0, T0 + H), IntervalWindow(T0 + H, T0 + 2 * H)
LATENESS = 2 * H
EARLY = 60


def review(reviewer, t, overall, text="fine"):
    return json.dumps({"reviewerID": reviewer, "asin": "B000TEST", "overall": overall, "unixReviewTime": t,
                       "reviewText": text, "summary": "s"}).encode()


def batch(partition, first_seq, bodies, watermark_s):
    enqueued = np.full(len(bodies), 1_700_000_000_000, dtype=np.int64)
    times = event_times(bodies, enqueued, REVIEW_TIME, 1 << 20)
    batch = EventBatch("reviews", partition, first_seq, tuple(str(first_seq + i) for i in range(len(bodies))),
                       enqueued, times, tuple(bodies), watermark_s)
    carrier = max(watermark_s or 0, int(times.max()))
    return TimestampedValue(batch, Timestamp(seconds=carrier))


R1, R2, R3 = review("r1", T0 + 10, 5.0), review("r2", T0 + 20, 1.0), review("r3", T0 + 30, 4.0)
R6 = review("r6", T0 + H + 5, 3.0)                 # window B
R4 = review("r4", T0 + 40, 2.0)                    # late for A, within the allowed lateness
R5 = review("r5", T0 + 50, 5.0)                    # too late for A
R1_AGAIN = R1                                       # same content, new event: a duplicate


def stream():
    return (TestStream()
            .advance_watermark_to(T0)
            .add_elements([batch("0", 0, [R1, R2, R3, R6], None)])
            .advance_processing_time(EARLY + 1)                      # -> early silver panes of A and B
            .advance_processing_time(EARLY + 1)                      # -> early gold panes (gold is one step on)
            .add_elements([batch("1", 0, [R1_AGAIN], T0 + 30 - 600)])  # duplicate of r1 (other partition)
            .add_elements([batch("0", 1, [R2], T0 + 30 - 600)])        # event 0/1 read again: replay
            .advance_watermark_to(T0 + 2 * H + 10)                     # A and B on time
            .add_elements([batch("0", 4, [R4], T0 + 2 * H + 10)])      # late, A still within lateness
            .advance_watermark_to(T0 + 3 * H + 20)                     # A expires (end + lateness)
            .add_elements([batch("0", 5, [R5], T0 + 3 * H + 20)])      # too late: dead letter
            .advance_watermark_to_infinity())


def gold_rows(element):
    name, table = element
    row = table.to_pylist()[0]
    return row["n_reviews"], row["sum_overall"], row["pane_timing"], row["pane_is_last"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    target = StreamTarget(tables.Location(str(out)), "test")
    p = TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    events = p | "Events" >> stream()
    products = p | "NoProducts" >> beam.Create([])
    result = (events, products) | EventsToReviews(target, WindowSpec(H), REVIEW_TIME, LATENESS, EARLY,
                                                  n_buckets=2, top_reviewers=10, max_record_bytes=1 << 20,
                                                  payload_bytes=4096)
    gold = (result["gold"]
            | "OnlyReviews" >> beam.Filter(lambda kv: kv[0] == "reviews")
            | "Rows" >> beam.Map(gold_rows))
    assert_that(gold, equal_to_per_window({
        A: [(3, 10.0, "EARLY", False), (3, 10.0, "ON_TIME", False), (4, 12.0, "LATE", False)],
        B: [(1, 3.0, "EARLY", False), (1, 3.0, "ON_TIME", False)],
    }), label="GoldPanes")
    dead = result["dead_letters"] | beam.Map(lambda d: (d["stage"], d["reason"], d["source"], d["source_position"],
                                                        d["payload"]))
    assert_that(dead, equal_to([(R.WINDOW, R.TOO_LATE, "eventhub:reviews/0", 5, R5.decode())]), label="Dead")
    p.run().wait_until_finish()  # the assert_that checks above fail the run if they do not hold
    return out


def test_gold_panes_and_too_late_dead_letter(run):
    """The per-window pane values and the dead letter are asserted inside the pipeline (the run fixture
    fails when they do not hold); the changelog files (written for the commit) must exist as well."""
    assert glob.glob(f"{run}/gold_changelog/reviews/test-*.parquet")


def test_silver_rows_written_once(run):
    files = sorted(glob.glob(f"{run}/silver/reviews/test-*.parquet"))
    rows = ds.dataset(files, format="parquet").to_table().to_pylist()
    got = sorted((r["reviewer_id"], r["source"], r["source_position"]) for r in rows)
    assert got == [("r1", "eventhub:reviews/0", 0), ("r2", "eventhub:reviews/0", 1), ("r3", "eventhub:reviews/0", 2),
                   ("r4", "eventhub:reviews/0", 4), ("r6", "eventhub:reviews/0", 3)]
    # collected for the commit: one file per asin shard (one shard here), not one per window and pane
    assert len(files) == 1


def test_changelog_rows_carry_window_and_pane(run):
    files = sorted(glob.glob(f"{run}/gold_changelog/reviews/test-*.parquet"))
    rows = ds.dataset(files, format="parquet").to_table().to_pylist()
    panes = sorted((r["window_start"].timestamp(), r["pane_index"], r["pane_timing"], r["n_reviews"]) for r in rows)
    assert panes == [(T0, 0, "EARLY", 3), (T0, 1, "ON_TIME", 3), (T0, 2, "LATE", 4),
                     (T0 + H, 0, "EARLY", 1), (T0 + H, 1, "ON_TIME", 1)]


def test_row_windows_assigns_the_named_window_and_keeps_others():
    from apache_beam.transforms.window import WindowFn
    fn = RowWindows()
    rows = WindowedRows(T0, T0 + H, None)
    assert fn.assign(WindowFn.AssignContext(Timestamp(seconds=T0 + 5), element=(1, rows))) == [A]
    assert fn.assign(WindowFn.AssignContext(Timestamp(seconds=T0 + 5), element=("reviews", None), window=B)) == [B]
    with pytest.raises(ValueError):
        fn.assign(WindowFn.AssignContext(MAX_TIMESTAMP, element="x"))


def test_known_reviews_count_as_duplicates(tmp_path):
    """--known_reviews: a review already in the batch tables is a duplicate when it arrives on the hub."""
    from transforms import keys
    from transforms.clean import clean_reviews
    from transforms.events import prepare_events
    from transforms.parse import parse_reviews
    from beam_pipeline.streaming import content_hashes
    import pyarrow as pa

    chunk, _, _ = prepare_events(batch("0", 0, [R1], None).value, WindowSpec(H), 0)
    r1_row, _ = clean_reviews(parse_reviews(chunk)[0])
    shard = int(keys.buckets(pa.array(["B000TEST"]), 2)[0])  # the dedupe state's key: --stream_shards=2 below
    target = StreamTarget(tables.Location(str(tmp_path)), "known")
    p = TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    events = p | "Events" >> (TestStream().advance_watermark_to(T0)
                              .add_elements([batch("0", 0, [R1, R2, R3], None)])
                              .advance_watermark_to_infinity())
    products = p | "NoProducts" >> beam.Create([])
    known = p | "Known" >> beam.Create([(shard, content_hashes(r1_row))])
    result = (events, products, known) | EventsToReviews(target, WindowSpec(H), REVIEW_TIME, 0, None, 8, 10,
                                                         1 << 20, 4096, shards=2)
    gold = result["gold"] | beam.Filter(lambda kv: kv[0] == "reviews") | beam.Map(gold_rows)
    assert_that(gold, equal_to_per_window({A: [(2, 5.0, "ON_TIME", True)]}))  # no lateness: the last pane
    p.run().wait_until_finish()
    files = glob.glob(f"{tmp_path}/silver/reviews/known-*.parquet")
    assert sorted(ds.dataset(files).to_table()["reviewer_id"].to_pylist()) == ["r2", "r3"]


def test_unbounded_run_commits_each_firing_from_inside_the_pipeline(tmp_path, monkeypatch):
    """--commit_interval: an unbounded run commits every firing of the processing-time trigger from inside
    the pipeline (``CommitStream`` -> ``StageCommitFn``), each as its own run in the event log. Driven by
    TestStream: two batches, each followed by processing time past the early firing and the interval. Each stage's trigger
    fires on its own clock, so one firing's commit may hold a row's silver file and a later one its gold
    (each commit is atomic; together they converge): the silver versions the firings committed only
    grow, and afterwards the tables hold every review once and gold is their value."""
    from apache_beam.options.pipeline_options import PipelineOptions as Options
    from beam_pipeline.options import ReviewsOptions
    from beam_pipeline.streaming import CommitStream
    monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)   # no hub: the commit records no lag
    loc = tables.Location(str(tmp_path))
    target = StreamTarget(loc, "unb", commit_interval_s=30)
    settings = Options(["--source=eventhub", f"--output={tmp_path}", "--window_size=1h",
                        "--top_reviewers=10"]).view_as(ReviewsOptions)
    p = TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    events = p | "Events" >> (TestStream()
                              .advance_watermark_to(T0)
                              .add_elements([batch("0", 0, [R1, R2], None)])
                              .advance_processing_time(EARLY + 1)         # early panes, then the commit
                              .advance_processing_time(31)
                              .add_elements([batch("0", 2, [R3, R6, R1], T0)])   # r1 again: a duplicate
                              .advance_processing_time(EARLY + 1)
                              .advance_processing_time(31)
                              .advance_watermark_to_infinity())
    products = p | "NoProducts" >> beam.Create([])
    out = (events, products) | EventsToReviews(target, WindowSpec(H), REVIEW_TIME, LATENESS, EARLY, 2, 10,
                                               1 << 20, 4096)
    (out, p | "NoProductDead" >> beam.Create([])) | CommitStream(target, settings)
    p.run().wait_until_finish()
    committed = [e for e in tables.events(loc) if e["event"] == "committed"]
    assert len(committed) >= 2 and all(e["run_id"].startswith("unbc") for e in committed)
    assert len({e["run_id"] for e in committed}) == len(committed)          # each firing its own run
    silver = tables.read(loc, tables.SILVER_REVIEWS).to_pylist()
    assert sorted(r["reviewer_id"] for r in silver) == ["r1", "r2", "r3", "r6"]
    g = {(r["window_start"].timestamp() if r["window_start"] else None): (r["n_reviews"], r["sum_overall"])
         for r in tables.read(loc, "gold/reviews").to_pylist()}
    assert g == {T0: (3, 10.0), T0 + H: (1, 3.0), None: (4, 13.0)}
    seen, sizes = [], []
    for e in committed:
        v = json.loads(e["table_versions"]).get(tables.SILVER_REVIEWS)
        if v is not None:
            ids = sorted(r["reviewer_id"] for r in tables.read(loc, tables.SILVER_REVIEWS, v).to_pylist())
            assert set(seen) <= set(ids) and len(ids) == len(set(ids))
            seen = ids
            sizes.append(len(ids))
    assert seen == ["r1", "r2", "r3", "r6"]
    assert any(0 < n < 4 for n in sizes), sizes      # the first batch was committed before the second came
