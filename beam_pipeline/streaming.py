"""The streaming half of the graph: what comes after the shared parse and clean composites when the
source is a hub.

    ReadEventHub                          EventBatch per partition poll (beam_pipeline.eventhub)
      -> PrepareEvents                    empty and too-late events -> dead letters; the rest -> Chunk
      -> ParseReviews -> CleanReviews     the SAME composites as batch (beam_pipeline.composites)
      -> AssignEventTime                  rows -> one sub-batch per (window, asin shard), timestamped
      -> WindowReviews                    RowWindows + trigger (early / on time / late), discarding
      -> Deduplicate                      per shard and window (state): (partition, sequence number), the
                                          content key, and the content keys the silver table already holds
      -> GroupPanes -> EnrichPanes        the product join, sentiment scoring (--sentiment_model); per pane:
                                          silver rows, changelog partials, additive gold partials
      -> WindowGold (accumulating) -> ComputeGold -> FinalizeGold    gold rows per window pane (changelog)
    silver rows, changelog rows, gold partials, dead letters, positions
      -> re-windowed for the commit (once at the end of a bounded run; every --commit_interval in an
         unbounded one) -> table files written (Parquet, target size) -> one manifest -> the commit
         (beam_pipeline.commit.commit_stream): silver and dead letters appended, gold current values
         (merged with _state/gold, exactly as batch), the pane changelog appended, and the partitions'
         positions in the event log, all in one run commit (beam_pipeline.tables.commit_run).
"""
import functools
import logging
import time
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.coders import coders as beam_coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger as tr
from apache_beam.transforms import userstate
from apache_beam.transforms.window import GlobalWindows, IntervalWindow, NonMergingWindowFn, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline import coders, scoring, tables
from beam_pipeline.eventhub import ReadEventHub
from beam_pipeline.options import parse_duration, window_spec
from beam_pipeline.composites import (DEAD, CleanReviews, MergeGoldFn, ParseReviews, WriteDeadLettersFn, count_dead,
                                      dead_letter_shard)
from transforms import gold, keys, reasons, recent_brands
from transforms.dead_letters import dead_letter, recorded_key
from transforms.enrich import (UNBEATABLE_VOTE, KnownReviews, content_hashes, dedupe_reviews, enrich_with_products,
                               preference, preference_order)
from transforms.events import UNKNOWN, prepare_events, row_event_times
from transforms.expectations import configure, parse_overrides
from transforms.schemas import SILVER_PRODUCT_SCHEMA
from transforms.windows import window_rows

LOG = logging.getLogger("reviews")
GOLD, STATE, POSITIONS = "gold", "state", "positions"
PRIMARY = "_primary"  # the row's copy in its latest window: written to silver, counted once
REPLACES = "_replaces"  # a copy the survivor rule prefers to a copy seen before (DedupeInWindowFn)
MATCHED = "_matched"  # the row found its product (counted at the commit, after the survivor rule)
# what the dedupe compares, per row: computed once per read batch (AssignEventTimeFn), not per window
ROW_HASHES = ("_position_hash", "_content_hash", "_votes", "_digest")


class WindowedRows(typing.NamedTuple):
    """Rows of one event-time window [start_s, end_s) (and one asin shard)."""
    start_s: int
    end_s: int
    table: pa.Table


class RowWindows(NonMergingWindowFn):
    """Assigns the window a ``(key, WindowedRows)`` element names, or the window of a ``(family, gold
    partial)`` element's window columns; any other element keeps its window.
    Windows are computed once, vectorised, by ``transforms.windows`` (both modes use that arithmetic),
    so a sliding window's rows arrive as one element per window instead of being copied per element."""

    def assign(self, context):
        value = context.element[1] if isinstance(context.element, tuple) and len(context.element) == 2 else None
        if isinstance(value, WindowedRows):
            return [IntervalWindow(Timestamp(seconds=value.start_s), Timestamp(seconds=value.end_s))]
        if isinstance(value, pa.Table) and "window_start" in value.column_names and value.num_rows:
            start, end = (int(value[c][0].value) for c in ("window_start", "window_end"))  # a gold partial
            return [IntervalWindow(Timestamp(seconds=start), Timestamp(seconds=end))]
        if context.window is None:
            raise ValueError("RowWindows: element carries no window")
        return [context.window]

    def get_window_coder(self):
        return beam_coders.IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


@functools.cache
def make_trigger(early_firing_s, allowed_lateness_s):
    """On time when the watermark passes the window end; optional early panes every ``early_firing_s``
    of processing time; a late pane for each late arrival while the window is within its lateness.
    One object per setting: Beam compares windowings (Flatten's inputs) with ``==``, and
    AfterProcessingTime has no ``__eq__`` of its own, so only the same object compares equal."""
    early = tr.AfterProcessingTime(early_firing_s) if early_firing_s else None
    late = tr.AfterCount(1) if allowed_lateness_s else None
    return tr.AfterWatermark(early=early, late=late)


def window_into(windowfn, early_firing_s, allowed_lateness_s, accumulate):
    return beam.WindowInto(windowfn, trigger=make_trigger(early_firing_s, allowed_lateness_s),
                           accumulation_mode=(tr.AccumulationMode.ACCUMULATING if accumulate
                                              else tr.AccumulationMode.DISCARDING),
                           allowed_lateness=Duration(seconds=allowed_lateness_s))


def pane_columns(pane, n):
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(pane.timing, "UNKNOWN")
    return {"pane_index": pa.array(np.full(n, pane.index, dtype=np.int64)),
            "pane_timing": pa.array([timing] * n, pa.string()),
            "pane_is_last": pa.array(np.full(n, bool(pane.is_last)))}


# ---------------------------------------------------------------------------------------------------
# events -> chunks

class PrepareEventsFn(beam.DoFn):
    """EventBatch -> Chunk (main) + dead letters (empty, too late) + the partition's position."""

    def __init__(self, spec, allowed_lateness_s, payload_bytes):
        self.spec, self.allowed_lateness_s, self.payload_bytes = spec, allowed_lateness_s, payload_bytes
        self.records = Metrics.counter("reviews", "records_read")
        self.events = Metrics.counter("eventhub", "events_read")

    def process(self, batch, timestamp=beam.DoFn.TimestampParam):
        chunk, dead, n = prepare_events(batch, self.spec, self.allowed_lateness_s, self.payload_bytes)
        self.events.inc(n)
        self.records.inc(len(dead))  # the parser counts the lines it sees; these it never sees
        count_dead(dead)
        for d in dead:
            yield pvalue.TaggedOutput(DEAD, d)
        known = batch.event_s[batch.event_s != UNKNOWN]
        yield pvalue.TaggedOutput(POSITIONS, (batch.partition, (batch.last_seq,
                                                                int(known.max()) if known.size else None)))
        if len(dead) < n:
            yield chunk


class AssignEventTimeFn(beam.DoFn):
    """StampedTable -> (shard, WindowedRows) per window and asin shard (``--stream_shards`` hash shards
    of asin: the keys of the dedupe state and of the silver files), timestamped inside the window.

    Windows that had closed when the reader read the rows are left out; rows left with no open window at
    all go to dead letters as ``too_late`` (the reader already routed the events whose time it could read
    from the raw body; this catches the rest, with the parsed row as payload)."""

    def __init__(self, spec, clock, allowed_lateness_s, n_shards, payload_bytes):
        self.spec, self.clock, self.allowed_lateness_s = spec, clock, allowed_lateness_s
        self.n_shards, self.payload_bytes = n_shards, payload_bytes

    def process(self, stamped):
        table, meta = stamped
        seconds = row_event_times(table, meta, self.clock)
        placed = np.zeros(table.num_rows, dtype=bool)
        hashed = with_row_hashes(table)
        for start, rows, primary in window_rows(seconds, self.spec, meta.watermark_s, self.allowed_lateness_s):
            placed[rows] = True
            part = hashed.take(pa.array(rows)).append_column(PRIMARY, pa.array(primary))
            for bucket, sub in keys.split_by_bucket(part, keys.buckets(part["asin"], self.n_shards)):
                t = int(seconds[rows].max())
                yield TimestampedValue((bucket, WindowedRows(start, start + self.spec.size_s, sub)),
                                       Timestamp(seconds=min(max(t, start), start + self.spec.size_s - 1)))
        if not placed.all():
            late = table.filter(pa.array(~placed))
            dead = [dead_letter("review", reasons.WINDOW, reasons.TOO_LATE, row["source"], row["source_position"],
                                repr(row), f"window closed at watermark {meta.watermark_s} s",
                                self.payload_bytes) for row in late.to_pylist()]
            count_dead(dead)
            for d in dead:
                yield pvalue.TaggedOutput(DEAD, d)


_SEEN = np.dtype([("position", "<u8"), ("content", "<u8"), ("vote", "<i8"), ("digest", "<u8")])


def with_row_hashes(table):
    """``table`` plus the ``ROW_HASHES`` columns: hash of (source, source position), content hash, and the
    survivor rule's votes and digest. Hashing a whole read batch at once costs far less than hashing each
    window's slice of it (a replay spreads a batch over hundreds of windows)."""
    votes, digests = preference(table)
    values = (keys.hash_columns(table, ["source", "source_position"]), content_hashes(table), votes, digests)
    for name, v in zip(ROW_HASHES, values):
        table = table.append_column(name, pa.array(v))
    return table


def row_hashes(table):
    """A table from ``with_row_hashes`` -> (the table without ``ROW_HASHES``, their values as numpy)."""
    return table.drop_columns(list(ROW_HASHES)), [table[name].to_numpy() for name in ROW_HASHES]


class DedupeInWindowFn(beam.DoFn):
    """(shard, WindowedRows) -> the rows not seen before in this window and shard, and the copies that
    win over the copy seen before (column ``REPLACES`` true).

    A row is dropped when its (partition, sequence number) was seen (an event read twice), or when a copy
    of the same review (the batch content key: reviewer, product, review time, text) was seen, or is
    among the known reviews (side input: the copies the silver table holds), and that copy is preferred
    by the survivor rule (``transforms.enrich``: most votes, then a hash of the other fields), whatever
    the order they came in. A copy the rule prefers goes on, marked: ``WriteSilverFn`` keeps only the
    preferred copy of the commit and the commit replaces a held one. Copies share the review time, hence
    the window, so per-window state finds them all; the state is dropped when the window expires. Each
    kept row is stored as four 64-bit numbers (``_SEEN``)."""

    SEEN = userstate.BagStateSpec("seen", beam_coders.BytesCoder())

    def __init__(self):
        self.duplicates = Metrics.counter("reviews", "duplicates_dropped")
        self.earlier_runs = Metrics.counter("reviews", "duplicates_of_earlier_runs")

    def process(self, element, known_by_bucket, seen=beam.DoFn.StateParam(SEEN)):
        bucket, rows = element
        t, (position, content, votes, digests) = row_hashes(rows.table)
        stored = b"".join(seen.read())
        prior = np.frombuffer(stored, dtype=_SEEN) if stored else np.zeros(0, _SEEN)
        keep = np.zeros(t.num_rows, dtype=bool)
        keep[np.unique(position, return_index=True)[1]] = True   # an event read twice in this batch
        keep &= ~np.isin(position, prior["position"])
        rank = preference_order(t, (votes, digests))
        ordered = np.lexsort((rank, content))   # per review, this batch's preferred copy first
        ordered = ordered[keep[ordered]]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = content[ordered][1:] != content[ordered][:-1]
        keep[:] = False
        keep[ordered[first]] = True
        earlier_runs = as_known(known_by_bucket.get(bucket))
        held_before = KnownReviews.concat([KnownReviews.best(prior["content"], prior["vote"], prior["digest"]),
                                           earlier_runs])
        replaces = np.zeros(t.num_rows, dtype=bool)
        if held_before is not None:
            held, wins = held_before.compare(content, votes, digests)
            keep &= ~held | wins
            replaces = held & wins
        primary = np.asarray(t[PRIMARY].to_numpy(zero_copy_only=False), dtype=bool)
        self.duplicates.inc(int(np.count_nonzero(primary & ~keep)))
        if earlier_runs is not None:   # of which copies of what earlier runs committed (and the rule keeps)
            held, wins = earlier_runs.compare(content, votes, digests)
            self.earlier_runs.inc(int(np.count_nonzero(primary & ~keep & held & ~wins)))
        if keep.any():
            kept = np.zeros(int(keep.sum()), _SEEN)
            kept["position"], kept["content"], kept["vote"], kept["digest"] = (
                position[keep], content[keep], votes[keep], digests[keep])
            seen.add(kept.tobytes())
            out = t.append_column(REPLACES, pa.array(replaces)).filter(pa.array(keep))
            yield bucket, WindowedRows(rows.start_s, rows.end_s, out)


def as_known(value):
    """A known-reviews side input value: ``KnownReviews``, or plain content hashes (held, never replaced)."""
    if value is None or isinstance(value, KnownReviews):
        return value
    hashes = np.unique(np.asarray(value, dtype=np.uint64))
    return KnownReviews(hashes, np.full(len(hashes), UNBEATABLE_VOTE, np.int64), np.zeros(len(hashes), np.uint64))


class StreamTarget(typing.NamedTuple):
    """Where a streaming run writes: the tables' root (``beam_pipeline.tables.Location``), the run id its
    files are named after, the rows per silver file, and how often an unbounded run commits (seconds;
    None: once, at the end of a bounded run, by the driver)."""
    loc: typing.Any
    run_id: str
    target_rows: typing.Optional[int] = None
    commit_interval_s: typing.Optional[float] = None


class EnrichPaneFn(beam.DoFn):
    """(shard, [WindowedRows]) of one window pane -> the pane's new silver rows (main: (shard, ArrowPayload)
    of the primary copies, with the ``REPLACES`` marks) and the gold partials of every copy in this window
    (GOLD: the pane changelog; a copy that replaces one the panes already counted is not counted again).
    Rows are joined with the products of their asin bucket (the side input is keyed like the batch
    shuffle) and, with a ``scorer`` (``beam_pipeline.scoring``), scored by the sentiment model. The
    additive partials of gold's current values are computed from the commit's silver rows
    (``WriteSilverFn``), after the survivor rule has picked among copies."""

    def __init__(self, spec, n_buckets, scorer=None, insights=True):
        self.spec, self.n_buckets, self.scorer = spec, n_buckets, scorer
        self.families = gold.review_families(scorer is not None, insights)

    def _enrich(self, table, products_by_bucket):
        parts = []
        for bucket, rows in keys.split_by_bucket(table, keys.buckets(table["asin"], self.n_buckets)):
            products = products_by_bucket.get(bucket)
            enriched, _, _ = enrich_with_products(rows.drop_columns([PRIMARY, REPLACES]),
                                                  products if products is not None
                                                  else SILVER_PRODUCT_SCHEMA.empty_table())
            if products is not None and products.num_rows:
                hit = pc.fill_null(pc.is_in(rows["asin"], value_set=products["asin"]), False)
            else:
                hit = pa.array(np.zeros(rows.num_rows, dtype=bool))
            parts.append(enriched.append_column(PRIMARY, rows[PRIMARY]).append_column(REPLACES, rows[REPLACES])
                         .append_column(MATCHED, hit))
        return pa.concat_tables(parts)

    def setup(self):
        if self.scorer is not None:
            self.scorer.load()  # once per process (cached by path)

    def process(self, element, products_by_bucket):
        shard, parts = element
        parts = list(parts)
        if not parts:  # a pane with nothing new (e.g. on time after an early pane)
            return
        start_s, end_s = parts[0].start_s, parts[0].end_s
        enriched = self._enrich(pa.concat_tables([p.table for p in parts]), products_by_bucket)
        primary, replaces, matched = enriched[PRIMARY], enriched[REPLACES], enriched[MATCHED]
        enriched = enriched.drop_columns([PRIMARY, REPLACES, MATCHED])
        if self.scorer is not None:  # every copy: a sliding window's gold counts the copies of other windows
            enriched = self.scorer.score(enriched)
        facts = gold.review_facts(enriched, self.scorer is not None).filter(pc.invert(replaces))
        if facts.num_rows:
            for name, partial in gold.window_partials(facts, start_s, end_s, families=self.families).items():
                yield pvalue.TaggedOutput(GOLD, (name, partial))
        silver = enriched.append_column(REPLACES, replaces).append_column(MATCHED, matched).filter(primary)
        if silver.num_rows:
            yield shard, coders.ArrowPayload.of(silver)


class WriteSilverFn(beam.DoFn):
    """(shard, [silver payloads]) of a commit -> the preferred copy of each review (the survivor rule of
    ``transforms.enrich``, as batch applies it; the others are counted as duplicates) written as Parquet
    files of up to the target rows in the silver reviews table's folder. Yields their add descriptions,
    ``{"replaces": [content hashes]}`` of the copies that win over a copy seen before (the commit removes
    it from silver when an earlier commit holds it), and (STATE) the additive gold partials of the
    written rows: the same partials a batch run computes over the same rows, merged at the commit with
    what the tables hold, so gold is identical in both modes."""

    def __init__(self, target, spec, families, scored):
        self.target, self.spec, self.families, self.scored = target, spec, families, scored
        self.silver = Metrics.counter("reviews", "silver_rows")
        self.duplicates = Metrics.counter("reviews", "duplicates_dropped")
        self.scored_rows = Metrics.counter("reviews", "scored_rows")
        self.matched = Metrics.counter("reviews", "products_matched")
        self.unmatched = Metrics.counter("reviews", "products_unmatched")

    def process(self, element):
        shard, payloads = element
        silver, dropped = dedupe_reviews([p.table() for p in payloads])
        self.duplicates.inc(dropped)
        if silver is None or not silver.num_rows:
            return
        self.silver.inc(silver.num_rows)
        matched = int(pc.sum(silver[MATCHED]).as_py() or 0)
        self.matched.inc(matched)
        self.unmatched.inc(silver.num_rows - matched)
        if self.scored:
            self.scored_rows.inc(silver.num_rows)
        replaces = silver[REPLACES]
        silver = silver.drop_columns([REPLACES, MATCHED])
        flagged = np.asarray(replaces.to_numpy(zero_copy_only=False), dtype=bool)
        if flagged.any():
            yield {"replaces": [int(h) for h in content_hashes(silver.filter(pa.array(flagged)))]}
        facts = gold.review_facts(silver, self.scored)
        for name, partial in gold.partials(facts, self.spec, "reviews", self.families).items():
            yield pvalue.TaggedOutput(STATE, (name, partial))
        yield from tables.write_files(self.target.loc, tables.SILVER_REVIEWS, silver, self.target.run_id,
                                      self.target.target_rows, tag=f"s{shard:03d}-")


class FinalizeGoldPaneFn(beam.DoFn):
    """(family, merged partial) of one window pane -> (family, gold rows with pane columns): a changelog
    row per pane (early / on time / late), next to the gold table that holds each window's latest value."""

    def __init__(self, top_reviewers, run_id=None):
        self.top_reviewers, self.run_id = top_reviewers, run_id

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        name, partial = element
        table = gold.finalize(gold.family(name, self.top_reviewers), partial, totals=False)
        for col, values in pane_columns(pane, table.num_rows).items():
            table = table.append_column(col, values)
        table = table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.string()))
        yield name, table


class WriteChangelogFn(beam.DoFn):
    """(family, [pane gold rows]) of a commit -> files of the ``gold_changelog/<family>`` table."""

    def __init__(self, target):
        self.target = target

    def process(self, element):
        name, parts = element
        rows = pa.concat_tables(list(parts), promote_options="permissive")
        yield from tables.write_files(self.target.loc, f"{tables.GOLD_CHANGELOG}/{name}", rows, self.target.run_id)


class RecentBrandEventsFn(beam.DoFn):
    """(shard, silver payload of a pane) -> (reviewer_id, [(review time, brand)]) per reviewer with a brand."""

    def process(self, element):
        _, payload = element
        events = recent_brands.events_from_silver(payload.table())
        by_reviewer = {}
        for reviewer, t, brand in zip(events["reviewer_id"].to_pylist(), events["time"].to_pylist(),
                                      events["brand"].to_pylist()):
            if reviewer is not None and t is not None and brand:
                by_reviewer.setdefault(reviewer, []).append((t, brand))
        yield from by_reviewer.items()


class RecentBrandsFn(beam.DoFn):
    """The speed layer: Beam state per reviewer keeps the last N distinct brands by event time
    (``transforms.recent_brands.merge_recent_list``: a brand's place follows its latest review time, not
    the arrival order, so out-of-order events land where they belong). Emits the reviewer's list whenever
    it changes; the commit merges the last one into ``insights/recent_brands``."""

    RECENT = userstate.ReadModifyWriteStateSpec("recent", beam_coders.PickleCoder())

    def __init__(self, n):
        self.n = n

    def process(self, element, recent=beam.DoFn.StateParam(RECENT)):
        reviewer, events = element
        old = recent.read() or []
        new = recent_brands.merge_recent_list(old, events, self.n)
        if new != old:
            recent.write(new)
            yield reviewer, new


class StageRecentBrandsFn(beam.DoFn):
    """(None, [(reviewer_id, [(time, brand)])]) -> the lists as one recent-brands table staged for the commit.
    A reviewer's later emissions contain the earlier ones (and merging is exact), so all are merged."""

    def __init__(self, target, n):
        self.target, self.n = target, n

    def process(self, element):
        from beam_pipeline import commit
        _, lists = element
        rows = [(reviewer, t, brand) for reviewer, items in lists for t, brand in items]
        events = pa.table({"reviewer_id": [r for r, _, _ in rows], "time": [t for _, t, _ in rows],
                           "brand": [b for _, _, b in rows]}, schema=recent_brands.EVENT_SCHEMA)
        yield commit.stage_recent_brands(self.target.loc, self.target.run_id, recent_brands.recent_brands(events, self.n))


class StageCommitFn(beam.DoFn):
    """Everything one commit holds (add descriptions, merged gold partials, last positions) -> the
    manifest under ``_pipeline/_staged/``. A bounded run stages once and the driver commits after the
    pipeline has finished (``beam_pipeline.commit.commit_stream``, with the run's counters); an unbounded
    run (``commit_interval_s``) commits each firing here, as its own run in the event log."""

    def __init__(self, target, settings):
        self.target, self.settings = target, settings

    def process(self, element):
        from beam_pipeline import commit
        _, items = element
        items = list(items)
        if self.target.commit_interval_s is None:
            yield commit.stage_manifest(self.target.loc, self.target.run_id, items)
            return
        firing = f"{self.target.run_id}c{time.time_ns() // 1000}"
        commit.stage_manifest(self.target.loc, firing, items)
        from beam_pipeline.eventhub import partition_ends
        from beam_pipeline.options import hub_settings
        hub = hub_settings(self.settings)
        yield commit.commit_stream(commit.StreamPlan.for_firing(self.target, firing), self.settings.top_reviewers,
                                   None, insights=commit.Insights.of(self.settings),
                                   hub_ends=lambda: partition_ends(hub), spec=window_spec(self.settings))


def _commit_window(pcoll, label, interval_s):
    """Re-window ``pcoll`` for the commit: one firing at the end of a bounded run, or one every
    ``interval_s`` of processing time in an unbounded run, plus a last one when a drained run's watermark
    reaches the end (``Repeatedly(AfterProcessingTime)`` alone never finishes on the DirectRunner)."""
    trigger = tr.AfterWatermark(early=None if interval_s is None else tr.AfterProcessingTime(interval_s))
    return pcoll | label >> beam.WindowInto(GlobalWindows(), trigger=trigger,
                                            accumulation_mode=tr.AccumulationMode.DISCARDING)


class WindowedReviews(beam.PTransform):
    """Clean tables with their events' metadata (StampedTable) -> windowed, deduplicated rows; gold panes;
    and the run's outputs staged for its commit. The part of the streaming graph after the shared
    cleaning; tests drive it with TestStream.

    Takes ``(stamped tables, products by bucket[, known review hashes by bucket[, carried gold partials]]])``;
    returns a dict of PCollections: ``silver`` (add descriptions of the silver files), ``gold`` ((family,
    rows) per window pane: the changelog), ``changelog`` (its add descriptions), ``state`` ((family, merged
    additive partial) of the run's new rows), ``dead_letters`` (late rows).

    Carried gold partials are the partials of windows still open when the previous run committed (from
    ``_state/gold``): they join this run's panes, so a pane's value covers the rows of every run."""

    def __init__(self, target, spec, clock, allowed_lateness_s, early_firing_s, n_buckets, top_reviewers,
                 payload_bytes, shards=1, sentiment_model=None, insights=True, recent_n=recent_brands.DEFAULT_N):
        super().__init__()
        self.insights, self.recent_n = insights, recent_n
        self.target, self.spec, self.clock = target, spec, clock
        self.lateness, self.early, self.n_buckets = allowed_lateness_s, early_firing_s, n_buckets
        self.top_reviewers, self.payload_bytes, self.shards = top_reviewers, payload_bytes, shards
        self.sentiment_model = sentiment_model

    def expand(self, inputs):
        stamped, product_tables, *extra = inputs
        interval = self.target.commit_interval_s
        known = extra[0] if extra else stamped.pipeline | "NoKnownReviews" >> beam.Create([])
        carried = extra[1] if len(extra) > 1 else stamped.pipeline | "NoCarriedGold" >> beam.Create([])
        assigned = stamped | "AssignEventTime" >> beam.ParDo(AssignEventTimeFn(
            self.spec, self.clock, self.lateness, self.shards, self.payload_bytes)) \
            .with_output_types(tuple[int, typing.Any], **{DEAD: dict}) \
            .with_outputs(DEAD, main="rows")   # an int key: the dedupe state's key coder is deterministic
        deduped = (assigned.rows
                   | "WindowReviews" >> window_into(RowWindows(), self.early, self.lateness, accumulate=False)
                   | "Deduplicate" >> beam.ParDo(DedupeInWindowFn(), beam.pvalue.AsDict(known)))
        panes = (deduped
                 | "GroupPanes" >> beam.GroupByKey()
                 | "EnrichPanes" >> beam.ParDo(EnrichPaneFn(self.spec, self.n_buckets,
                                                            scoring.scorer(self.sentiment_model), self.insights),
                                               beam.pvalue.AsDict(product_tables))
                 .with_output_types(typing.Tuple[int, coders.ArrowPayload])
                 .with_outputs(GOLD, main="silver"))
        written = (_commit_window(panes.silver, "SilverForCommit", interval)
                   | "GroupSilver" >> beam.GroupByKey()
                   | "WriteSilver" >> beam.ParDo(WriteSilverFn(
                       self.target, self.spec, gold.review_families(bool(self.sentiment_model), self.insights),
                       bool(self.sentiment_model))).with_outputs(STATE, main="silver"))
        silver = written.silver
        state = written[STATE] | "MergeState" >> beam.CombinePerKey(MergeGoldFn())
        families = frozenset(f.name for f in gold.review_families(bool(self.sentiment_model), self.insights))
        carried = (carried  # a family this run does not compute (a model dropped since) is not carried on
                   | "OnlyComputedFamilies" >> beam.Filter(lambda kv, names=families: kv[0] in names)
                   | "WindowCarriedGold" >> window_into(RowWindows(), self.early, self.lateness, accumulate=True))
        # both inputs windowed alike before the Flatten (Beam wants one windowing there, trigger included)
        merged = ((panes[GOLD] | "WindowGold" >> window_into(RowWindows(), self.early, self.lateness, accumulate=True),
                   carried)
                  | "WithCarriedGold" >> beam.Flatten()
                  | "ComputeGold" >> beam.CombinePerKey(MergeGoldFn()))
        gold_panes = merged | "FinalizeGold" >> beam.ParDo(FinalizeGoldPaneFn(self.top_reviewers,
                                                                             self.target.run_id))
        changelog = (_commit_window(gold_panes, "ChangelogForCommit", interval)
                     | "GroupChangelog" >> beam.GroupByKey()
                     | "WriteChangelog" >> beam.ParDo(WriteChangelogFn(self.target)))
        out = {"silver": silver, "gold": gold_panes, "changelog": changelog, "state": state,
               "dead_letters": assigned[DEAD]}
        if self.insights:  # the speed layer: each reviewer's recent brands in Beam state
            out["recent_brands"] = (panes.silver
                                    | "RecentBrandEvents" >> beam.ParDo(RecentBrandEventsFn())
                                    .with_output_types(tuple[str, typing.Any])  # the state's key: a str
                                    | "GlobalRecentBrands" >> beam.WindowInto(GlobalWindows())
                                    | "RecentBrands" >> beam.ParDo(RecentBrandsFn(self.recent_n)))
            out["recent_brands_staged"] = (_commit_window(out["recent_brands"], "RecentBrandsForCommit", interval)
                                           | "KeyRecentBrands" >> beam.Map(lambda kv: (None, kv))
                                           | "GroupRecentBrands" >> beam.GroupByKey()
                                           | "StageRecentBrands" >> beam.ParDo(StageRecentBrandsFn(self.target,
                                                                                                  self.recent_n)))
        return out


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> files of the dead-letter table (sharded; one set per commit); yields add descriptions."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def expand(self, letters):
        return (_commit_window(letters, "ForCommit", self.target.commit_interval_s)
                | "Shard" >> beam.Map(lambda d: (dead_letter_shard(d), d))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(WriteDeadLettersFn(self.target.loc, self.target.run_id)))


class EventsToReviews(beam.PTransform):
    """EventBatches -> everything the streaming graph derives from them: PrepareEvents, then the SAME
    ParseReviews and CleanReviews composites as batch, then WindowedReviews. Takes ``(event batches,
    products by bucket)``; returns WindowedReviews' dict plus ``positions`` and every review dead letter."""

    def __init__(self, target, spec, clock, allowed_lateness_s, early_firing_s, n_buckets, top_reviewers,
                 max_record_bytes, payload_bytes, shards=1, sentiment_model=None, expectations=None, insights=True,
                 recent_n=recent_brands.DEFAULT_N):
        super().__init__()
        self.shards, self.sentiment_model, self.expectations = shards, sentiment_model, expectations
        self.insights, self.recent_n = insights, recent_n
        self.target, self.spec, self.clock = target, spec, clock
        self.lateness, self.early, self.n_buckets, self.top_reviewers = (allowed_lateness_s, early_firing_s,
                                                                         n_buckets, top_reviewers)
        self.max_record_bytes, self.payload_bytes = max_record_bytes, payload_bytes

    def expand(self, inputs):
        events, product_tables, *extra = inputs
        prepared = events | "PrepareEvents" >> beam.ParDo(
            PrepareEventsFn(self.spec, self.lateness, self.payload_bytes)).with_outputs(DEAD, POSITIONS, main="chunks")
        parsed = prepared.chunks | "ParseReviews" >> ParseReviews(self.max_record_bytes, self.payload_bytes)
        cleaned = parsed.batches | "CleanReviews" >> CleanReviews(self.payload_bytes, self.expectations, stamped=True)
        out = (cleaned.clean, product_tables, *extra) | "WindowedReviews" >> WindowedReviews(
            self.target, self.spec, self.clock, self.lateness, self.early, self.n_buckets, self.top_reviewers,
            self.payload_bytes, self.shards, self.sentiment_model, self.insights, self.recent_n)
        out["dead_letters"] = ((prepared[DEAD], parsed[DEAD], cleaned[DEAD], out["dead_letters"])
                               | "FlattenDeadLetters" >> beam.Flatten())
        out["positions"] = prepared[POSITIONS]
        return out


class DropRecordedFn(beam.DoFn):
    """Product (and product file) dead letters -> those the dead-letter table does not hold yet
    (``transforms.dead_letters.recorded_key``); the others are counted, not appended again."""

    def __init__(self, recorded):
        self.recorded = frozenset(recorded)
        self.earlier = Metrics.counter("products", "dead_letters_recorded_earlier")

    def process(self, letter):
        if recorded_key(letter) in self.recorded:
            self.earlier.inc()
            return
        yield letter


def build_streaming(p, o, target, spec, settings, reader_config, checkpoint, product_tables, product_dead,
                    known=(), carried_gold=(), recorded_dead=frozenset()):
    """The streaming graph after the source switch. ``checkpoint``: the partitions' committed positions;
    ``known``: {shard: content hashes} of the reviews the silver table holds; ``carried_gold``: [(family,
    partial)] of windows the last commit left open; ``recorded_dead``: ``recorded_key`` of the product dead
    letters the table holds (not appended again). Returns its main PCollections; ``staged``: the
    manifest path (bounded) or the commit's table versions (each firing of an unbounded run)."""
    lateness = parse_duration(o.allowed_lateness)
    early = parse_duration(o.early_firing) if o.early_firing else None

    events = p | "ReadEventHub" >> ReadEventHub(settings, reader_config, o.start_position, o.max_records,
                                                checkpoint)
    known = p | "KnownReviews" >> beam.Create(sorted(dict(known).items()))
    carried = (p | "CarriedGold" >> beam.Create([(name, coders.table_to_bytes(t)) for name, t in carried_gold or []])
               | "DecodeCarriedGold" >> beam.MapTuple(lambda name, data: (name, coders.table_from_bytes(data))))
    out = (events, product_tables, known, carried) | "EventsToReviews" >> EventsToReviews(
        target, spec, o.event_time, lateness, early, o.shuffle_buckets or 8, o.top_reviewers, o.max_record_bytes,
        o.dead_letter_payload_bytes, o.stream_shards, o.sentiment_model,
        configure(parse_overrides(o.expectation or [])), o.insights, o.recent_brands)
    product_dead = product_dead | "NewProductDeadLetters" >> beam.ParDo(DropRecordedFn(recorded_dead))
    out["staged"] = (out, product_dead) | "Commit" >> CommitStream(target, o)
    return out


class CommitStream(beam.PTransform):
    """EventsToReviews' outputs (and product dead letters) -> the run's commit: dead letters written, and
    every item (silver and changelog files, gold partials, dead-letter files, recent brands, positions)
    grouped into one commit, staged for the driver at the end of a bounded run, or committed from inside
    the pipeline every ``commit_interval_s`` of an unbounded one (``StageCommitFn``). ``settings``: the
    run's options (top reviewers, insights, windows, hub)."""

    def __init__(self, target, settings):
        super().__init__()
        self.target, self.settings = target, settings

    def expand(self, inputs):
        out, product_dead = inputs
        product_dead = product_dead | "WindowProductDeadLetters" >> beam.WindowInto(GlobalWindows())
        dead = (out["dead_letters"], product_dead) | "AllDeadLetters" >> beam.Flatten()
        dead_adds = dead | "WriteDeadLetters" >> WriteDeadLetters(self.target)
        interval = self.target.commit_interval_s
        recent = [out["recent_brands_staged"]] if "recent_brands_staged" in out else []
        items = [out["silver"], out["changelog"], dead_adds, *recent,
                 out["state"] | "TagState" >> beam.MapTuple(lambda name, t: {"gold": name, "partial": t}),
                 _commit_window(out["positions"], "PositionsForCommit", interval)
                 # grouped like every other item, so all reach the Flatten with the same (continuation) trigger
                 | "GroupPositions" >> beam.GroupByKey()
                 | "TagPositions" >> beam.FlatMapTuple(lambda pid, positions: [{"position": [pid, pos[0], pos[1]]}
                                                                              for pos in positions])]
        return (items
                | "FlattenCommit" >> beam.Flatten()
                | "KeyCommit" >> beam.Map(lambda item: (None, item))
                | "GroupCommit" >> beam.GroupByKey()
                | "StageCommit" >> beam.ParDo(StageCommitFn(self.target, self.settings)))
