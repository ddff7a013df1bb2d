"""The streaming half of the graph: what comes after the shared parse and clean composites when the
source is a hub.

    ReadEventHub                          EventBatch per partition poll (beam_pipeline.eventhub)
      -> PrepareEvents                    empty and too-late events -> dead letters; the rest -> Chunk
      -> ParseReviews -> CleanReviews     the SAME composites as batch (imported from beam_pipeline.pipeline)
      -> AssignEventTime                  rows -> one sub-batch per (window, asin shard), timestamped
      -> WindowReviews                    RowWindows + trigger (early / on time / late), discarding
      -> Deduplicate                      per shard and window (state): (partition, sequence number) and
                                          the batch content key; state ends with the window
      -> GroupSilverPanes -> WriteSilver  one Parquet file per window, pane, shard (and year/month), the
                                          product join, sentiment scoring (--sentiment_model), gold
                                          partials of the pane's new rows
      -> WindowGold (accumulating) -> ComputeGold -> WriteGold   one file per family, window and pane
    dead letters of every stage -> windowed, sharded -> one JSON-lines file per window, pane, shard
    staged files + last positions + open windows' gold -> Commit: files moved into the tables, then the
                                          checkpoints (and the gold carried to the next run) stored

Gold panes accumulate: a window's value is its last pane of the latest run (``pane_index``, ``run_id``;
``pane_is_last`` only when the runner knows no pane can follow); earlier panes are early or partial
views. Silver panes discard: each row is written once, in the pane in which
it arrived.
"""
import logging
import time
import typing
import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.coders import coders as beam_coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger as tr
from apache_beam.transforms import userstate
from apache_beam.transforms.window import (FixedWindows, GlobalWindows, IntervalWindow, NonMergingWindowFn,
                                           TimestampedValue)
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline import coders, io, scoring
from beam_pipeline.checkpoints import CheckpointStore
from beam_pipeline.eventhub import ReadEventHub
from beam_pipeline.options import parse_duration
from beam_pipeline.pipeline import (DEAD_DIR, GOLD_DIR, SILVER_REVIEWS_DIR, CleanReviews, MergeGoldFn, ParseReviews,
                                    count_dead)
from transforms import gold, keys, reasons
from transforms.dead_letters import dead_letter
from transforms.enrich import (REVIEW_KEY, content_hashes, content_hashes_by_bucket,  # noqa: F401 (re-exported)
                               enrich_with_products)
from transforms.events import UNKNOWN, prepare_events, row_event_times
from transforms.schemas import REVIEW_PARTITION_COLUMNS, SILVER_PRODUCT_SCHEMA
from transforms.windows import window_rows

LOG = logging.getLogger("reviews")
DEAD, GOLD, POSITIONS = "dead_letters", "gold", "positions"
PRIMARY = "_primary"  # the row's copy in its latest window: written to silver, counted once
DEAD_LETTER_SHARDS = 4


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


def make_trigger(early_firing_s, allowed_lateness_s):
    """On time when the watermark passes the window end; optional early panes every ``early_firing_s``
    of processing time; a late pane for each late arrival while the window is within its lateness."""
    early = tr.AfterProcessingTime(early_firing_s) if early_firing_s else None
    late = tr.AfterCount(1) if allowed_lateness_s else None
    return tr.AfterWatermark(early=early, late=late)


def window_into(windowfn, early_firing_s, allowed_lateness_s, accumulate):
    return beam.WindowInto(windowfn, trigger=make_trigger(early_firing_s, allowed_lateness_s),
                           accumulation_mode=(tr.AccumulationMode.ACCUMULATING if accumulate
                                              else tr.AccumulationMode.DISCARDING),
                           allowed_lateness=Duration(seconds=allowed_lateness_s))


class GoldStateFn(beam.DoFn):
    """(family, merged partial) of a pane -> ("gold_state", (family, window start, pane index, partial)):
    the commit keeps the last pane of each window still open, for the next run to go on from."""

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        name, partial = element
        yield name, int(window.start.micros // 1_000_000), pane.index, partial


def pane_columns(pane, n):
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(pane.timing, "UNKNOWN")
    return {"pane_index": pa.array(np.full(n, pane.index, dtype=np.int64)),
            "pane_timing": pa.array([timing] * n, pa.string()),
            "pane_is_last": pa.array(np.full(n, bool(pane.is_last)))}


def _window_tag(window):
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(int(window.start.micros // 1_000_000)))


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
        for start, rows, primary in window_rows(seconds, self.spec, meta.watermark_s, self.allowed_lateness_s):
            placed[rows] = True
            part = table.take(pa.array(rows)).append_column(PRIMARY, pa.array(primary))
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


class LoadKnownReviewsFn(beam.DoFn):
    """A silver reviews root (e.g. a batch run's OUTPUT/silver/reviews) -> (shard, sorted content hashes),
    so reviews already in the batch tables count as duplicates when they also arrive on the hub."""

    def __init__(self, n_buckets):
        self.n_buckets = n_buckets
        self.loaded = Metrics.counter("reviews", "known_reviews_loaded")

    def process(self, root):
        from beam_pipeline import tables
        if tables.is_delta_folder(root):  # a batch run's Delta table: its committed rows, not every file
            known = content_hashes_by_bucket(tables.read_folder(root, columns=list(REVIEW_KEY)), self.n_buckets)
            self.loaded.inc(sum(len(v) for v in known.values()))
            LOG.info("known reviews: %d content keys from the Delta table %s", sum(len(v) for v in known.values()),
                     root)
            yield from known.items()
            return
        files = [m.path for r in FileSystems.match([io.join(root, "**.parquet")]) for m in r.metadata_list]
        hashes, buckets = [], []
        for path in sorted(files):
            with FileSystems.open(path) as fh:
                t = pq.read_table(fh, columns=list(REVIEW_KEY))
            hashes.append(content_hashes(t))
            buckets.append(keys.buckets(t["asin"], self.n_buckets))
        if not files:
            LOG.warning("--known_reviews %s: no Parquet files there", root)
            return
        hashes, buckets = np.concatenate(hashes), np.concatenate(buckets)
        self.loaded.inc(len(hashes))
        LOG.info("known reviews: %d content keys from %d files under %s", len(hashes), len(files), root)
        for bucket in np.unique(buckets):
            yield int(bucket), np.unique(hashes[buckets == bucket])


class DedupeInWindowFn(beam.DoFn):
    """(shard, WindowedRows) -> the rows not seen before in this window and shard.

    A row is a duplicate when its (partition, sequence number) was seen (an event read twice), its
    content key was seen (the batch key: reviewer, product, review time, text; a review sent twice), or
    its content key is among the known reviews (side input: reviews already in the batch tables).
    Duplicates share the review time, hence the window, so per-window state finds them all, and the
    state is dropped when the window expires. Seen keys are stored as 64-bit hashes."""

    SEEN = userstate.BagStateSpec("seen", beam_coders.BytesCoder())

    def __init__(self):
        self.duplicates = Metrics.counter("reviews", "duplicates_dropped")

    def process(self, element, known_by_bucket, seen=beam.DoFn.StateParam(SEEN)):
        bucket, rows = element
        t = rows.table
        stored = b"".join(seen.read())
        prior = np.frombuffer(stored, dtype=np.uint64) if stored else np.zeros(0, np.uint64)
        position = keys.hash_columns(t, ["source", "source_position"])
        content = content_hashes(t)
        keep = np.zeros(t.num_rows, dtype=bool)
        keep[np.unique(position, return_index=True)[1]] = True
        first_content = np.zeros(t.num_rows, dtype=bool)
        first_content[np.unique(content, return_index=True)[1]] = True
        keep &= first_content & ~np.isin(position, prior) & ~np.isin(content, prior)
        known = known_by_bucket.get(bucket)
        if known is not None:
            keep &= ~np.isin(content, known, assume_unique=False)
        primary = np.asarray(t[PRIMARY].to_numpy(zero_copy_only=False), dtype=bool)
        self.duplicates.inc(int(np.count_nonzero(primary & ~keep)))
        if keep.any():
            seen.add(np.concatenate([position[keep], content[keep]]).tobytes())
            yield bucket, WindowedRows(rows.start_s, rows.end_s, t.filter(pa.array(keep)))


class WriteSilverPaneFn(beam.DoFn):
    """(shard, [WindowedRows]) of one window pane -> silver Parquet of the primary copies (one file per
    year/month), staged paths (main), and gold partials of every copy (GOLD). Rows are joined with the
    products of their asin bucket (the side input is keyed like the batch shuffle) and, with a ``scorer``
    (``beam_pipeline.scoring``), scored by the sentiment model."""

    def __init__(self, layout, n_buckets, scorer=None):
        self.layout, self.n_buckets, self.scorer = layout, n_buckets, scorer
        self.families = gold.review_families(scorer is not None)
        self.silver = Metrics.counter("reviews", "silver_rows")
        self.scored = Metrics.counter("reviews", "scored_rows")
        self.matched = Metrics.counter("reviews", "products_matched")
        self.unmatched = Metrics.counter("reviews", "products_unmatched")

    def _enrich(self, table, products_by_bucket):
        parts, matched = [], 0
        for bucket, rows in keys.split_by_bucket(table, keys.buckets(table["asin"], self.n_buckets)):
            products = products_by_bucket.get(bucket)
            primary = np.asarray(rows[PRIMARY].to_numpy(zero_copy_only=False), dtype=bool)
            enriched, _, _ = enrich_with_products(rows.drop_columns([PRIMARY]), products if products is not None
                                                  else SILVER_PRODUCT_SCHEMA.empty_table())
            if products is not None and products.num_rows:
                hit = np.asarray(pc.is_in(rows["asin"], value_set=products["asin"]).to_numpy(zero_copy_only=False))
                matched += int(np.count_nonzero(hit & primary))
            parts.append(enriched.append_column(PRIMARY, pa.array(primary)))
        return pa.concat_tables(parts), matched

    def setup(self):
        if self.scorer is not None:
            self.scorer.load()  # once per process (cached by path)

    def process(self, element, products_by_bucket, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        shard, parts = element
        parts = list(parts)
        if not parts:  # a pane with nothing new (e.g. on time after an early pane)
            return
        start_s, end_s = parts[0].start_s, parts[0].end_s
        enriched, matched = self._enrich(pa.concat_tables([p.table for p in parts]), products_by_bucket)
        primary = enriched[PRIMARY]
        enriched = enriched.drop_columns([PRIMARY])
        if self.scorer is not None:  # every copy: a sliding window's gold counts the copies of other windows
            enriched = self.scorer.score(enriched)
        facts = gold.review_facts(enriched, self.scorer is not None)
        for name, partial in gold.window_partials(facts, start_s, end_s, families=self.families).items():
            yield pvalue.TaggedOutput(GOLD, (name, partial))
        silver = enriched.filter(primary)
        if not silver.num_rows:
            return
        self.silver.inc(silver.num_rows)
        if self.scorer is not None:
            self.scored.inc(silver.num_rows)
        self.matched.inc(matched)
        self.unmatched.inc(silver.num_rows - matched)
        ym = (silver["year"].to_numpy() * 100 + silver["month"].to_numpy()).astype("int64")
        for key, part in keys.split_by_bucket(silver, ym):
            rel = (f"{SILVER_REVIEWS_DIR}/year={key // 100}/month={key % 100}/"
                   f"part-{_window_tag(window)}-p{pane.index:03d}-s{shard:03d}-{self.layout.run_id}.parquet")
            self.layout.write(io.write_parquet, part.drop_columns(list(REVIEW_PARTITION_COLUMNS)), rel)
            yield rel


class FinalizeGoldPaneFn(beam.DoFn):
    """(family, merged partial) of one window pane -> (family, gold table with pane columns)."""

    def __init__(self, top_reviewers, run_id=None):
        self.top_reviewers, self.run_id = top_reviewers, run_id

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        name, partial = element
        table = gold.finalize(gold.family(name, self.top_reviewers), partial, totals=False)
        for col, values in pane_columns(pane, table.num_rows).items():
            table = table.append_column(col, values)
        table = table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.string()))
        yield name, table


class WriteGoldPaneFn(beam.DoFn):
    """(family, gold table) of one window pane -> one Parquet file; yields its path."""

    def __init__(self, layout):
        self.layout = layout

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        name, table = element
        rel = f"{GOLD_DIR}/{name}/part-{_window_tag(window)}-p{pane.index:03d}-{self.layout.run_id}.parquet"
        self.layout.write(io.write_parquet, table, rel)
        yield rel


class WriteDeadLetterPaneFn(beam.DoFn):
    def __init__(self, layout, prefix):
        self.layout, self.prefix = layout, prefix

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        shard, letters = element
        if not letters:
            return
        letters = sorted(letters, key=lambda d: (d["source"] or "", d["source_position"] or 0))
        tag = _window_tag(window) if isinstance(window, IntervalWindow) else "all"
        rel = f"{DEAD_DIR}/{self.prefix}-{tag}-p{pane.index:03d}-s{shard:02d}-{self.layout.run_id}.jsonl"
        self.layout.write(io.write_json_lines, letters, rel)
        yield rel


def _shard(d):
    return zlib.crc32(f"{d['source']}:{d['source_position']}".encode()) % DEAD_LETTER_SHARDS


class CommitFn(beam.DoFn):
    """Every staged path, the last positions and the gold state (one list, at the end of a bounded run)
    -> files moved into the tables, the gold partials of windows still open stored for the next run, then
    the checkpoints stored (``beam_pipeline.checkpoints``), all under one commit intent."""

    def __init__(self, layout, checkpoint_root, max_out_of_orderness_s, spec, allowed_lateness_s):
        self.layout, self.checkpoint_root, self.ooo = layout, checkpoint_root, max_out_of_orderness_s
        self.spec, self.lateness = spec, allowed_lateness_s

    def process(self, element):
        _, items = element
        files, positions, panes = [], {}, {}
        for kind, value in items:
            if kind == "file":
                files.append(value)
            elif kind == "gold_state":
                name, start, index, partial = value
                if (name, start) not in panes or index > panes[(name, start)][0]:
                    panes[(name, start)] = (index, partial)
            else:
                pid, (seq, max_event) = value
                old_seq, old_event = positions.get(pid, (-1, None))
                positions[pid] = (max(seq, old_seq), max_event if old_event is None else
                                  old_event if max_event is None else max(old_event, max_event))
        moves = [(self.layout.staged(rel), self.layout.final(rel)) for rel in sorted(files)]
        store = CheckpointStore(self.checkpoint_root)
        watermark = store.watermark_after(positions, self.ooo)
        state = {}
        for (name, start), (_, partial) in sorted(panes.items()):
            if watermark is None or start + self.spec.size_s + self.lateness > watermark:  # still open
                state.setdefault(name, []).append(partial)
        state_moves = store.stage_gold_state(self.layout, {n: pa.concat_tables(t) for n, t in state.items()},
                                             self.spec)
        store.commit(self.layout.run_id, moves + state_moves, positions, self.ooo,
                     gold_state=self.spec_record(state_moves))
        io.delete_tree(self.layout.staging)
        io.remove_empty_staging_root(self.layout)
        yield [dst for _, dst in moves]

    def spec_record(self, state_moves):
        return {"window_size_s": self.spec.size_s, "window_period_s": self.spec.period_s,
                "files": [dst for _, dst in state_moves]}


class WindowedReviews(beam.PTransform):
    """Clean tables with their events' metadata (StampedTable) -> windowed, deduplicated silver files,
    windowed gold panes and the dead letters of late rows. The part of the streaming graph after the
    shared cleaning; tests drive it with TestStream.

    Takes ``(stamped tables, products by bucket[, known review hashes by bucket[, carried gold partials]]])``;
    returns a dict of PCollections: ``silver`` (staged silver paths), ``gold`` ((family, table) per window
    pane), ``gold_paths``, ``dead_letters``, ``gold_state`` (merged partials per pane, for the commit).

    Carried gold partials are the merged partials of windows a previous bounded run left open (stored with
    its checkpoint): they join this run's partials, so a window's gold covers the rows of every run."""

    def __init__(self, layout, spec, clock, allowed_lateness_s, early_firing_s, n_buckets, top_reviewers,
                 payload_bytes, shards=1, sentiment_model=None):
        super().__init__()
        self.layout, self.spec, self.clock = layout, spec, clock
        self.lateness, self.early, self.n_buckets = allowed_lateness_s, early_firing_s, n_buckets
        self.top_reviewers, self.payload_bytes, self.shards = top_reviewers, payload_bytes, shards
        self.sentiment_model = sentiment_model

    def expand(self, inputs):
        stamped, product_tables, *extra = inputs
        known = extra[0] if extra else stamped.pipeline | "NoKnownReviews" >> beam.Create([])
        carried = extra[1] if len(extra) > 1 else stamped.pipeline | "NoCarriedGold" >> beam.Create([])
        assigned = stamped | "AssignEventTime" >> beam.ParDo(AssignEventTimeFn(
            self.spec, self.clock, self.lateness, self.shards, self.payload_bytes)).with_outputs(DEAD, main="rows")
        deduped = (assigned.rows
                   | "WindowReviews" >> window_into(RowWindows(), self.early, self.lateness, accumulate=False)
                   | "Deduplicate" >> beam.ParDo(DedupeInWindowFn(), beam.pvalue.AsDict(known))
                   .with_input_types(typing.Tuple[int, typing.Any], typing.Any))
        silver = (deduped
                  | "GroupSilverPanes" >> beam.GroupByKey()
                  | "WriteSilver" >> beam.ParDo(WriteSilverPaneFn(self.layout, self.n_buckets,
                                                                scoring.scorer(self.sentiment_model)),
                                                beam.pvalue.AsDict(product_tables))
                  .with_outputs(GOLD, main="paths"))
        families = frozenset(f.name for f in gold.review_families(bool(self.sentiment_model)))
        carried = (carried  # a family this run does not compute (a model dropped since) is not carried on
                   | "OnlyComputedFamilies" >> beam.Filter(lambda kv, names=families: kv[0] in names)
                   | "WindowCarriedGold" >> beam.WindowInto(RowWindows()))  # Flatten needs one window type
        merged = ((silver[GOLD], carried)
                  | "WithCarriedGold" >> beam.Flatten()
                  | "WindowGold" >> window_into(RowWindows(), self.early, self.lateness, accumulate=True)
                  | "ComputeGold" >> beam.CombinePerKey(MergeGoldFn()))
        gold_tables = merged | "FinalizeGold" >> beam.ParDo(FinalizeGoldPaneFn(self.top_reviewers,
                                                                               self.layout.run_id))
        gold_state = merged | "GoldState" >> beam.ParDo(GoldStateFn())
        gold_paths = gold_tables | "WriteGold" >> beam.ParDo(WriteGoldPaneFn(self.layout))
        return {"silver": silver.paths, "gold": gold_tables, "gold_paths": gold_paths, "dead_letters": assigned[DEAD],
                "gold_state": gold_state}


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> one JSON-lines file per window, pane and shard (``windowfn`` None: as windowed)."""

    def __init__(self, layout, prefix, windowfn=None, early_firing_s=None, allowed_lateness_s=0):
        super().__init__()
        self.layout, self.prefix, self.windowfn = layout, prefix, windowfn
        self.early, self.lateness = early_firing_s, allowed_lateness_s

    def expand(self, letters):
        if self.windowfn is not None:
            letters = letters | "Window" >> window_into(self.windowfn, self.early, self.lateness, accumulate=False)
        return (letters
                | "Shard" >> beam.Map(lambda d: (_shard(d), d))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(WriteDeadLetterPaneFn(self.layout, self.prefix)))


def _collect(pcoll, label, tag):
    return (pcoll
            | f"Collect{label}" >> beam.WindowInto(GlobalWindows(), trigger=tr.AfterWatermark(),
                                                  accumulation_mode=tr.AccumulationMode.DISCARDING)
            | f"Tag{label}" >> beam.Map(lambda value, tag=tag: (tag, value)))


class EventsToReviews(beam.PTransform):
    """EventBatches -> everything the streaming graph derives from them: PrepareEvents, then the SAME
    ParseReviews and CleanReviews composites as batch, then WindowedReviews. Takes ``(event batches,
    products by bucket)``; returns WindowedReviews' dict plus ``positions`` and every review dead letter."""

    def __init__(self, layout, spec, clock, allowed_lateness_s, early_firing_s, n_buckets, top_reviewers,
                 max_record_bytes, payload_bytes, shards=1, sentiment_model=None):
        super().__init__()
        self.shards, self.sentiment_model = shards, sentiment_model
        self.layout, self.spec, self.clock = layout, spec, clock
        self.lateness, self.early, self.n_buckets, self.top_reviewers = (allowed_lateness_s, early_firing_s,
                                                                         n_buckets, top_reviewers)
        self.max_record_bytes, self.payload_bytes = max_record_bytes, payload_bytes

    def expand(self, inputs):
        events, product_tables, *extra = inputs
        prepared = events | "PrepareEvents" >> beam.ParDo(
            PrepareEventsFn(self.spec, self.lateness, self.payload_bytes)).with_outputs(DEAD, POSITIONS, main="chunks")
        parsed = prepared.chunks | "ParseReviews" >> ParseReviews(self.max_record_bytes, self.payload_bytes)
        cleaned = parsed.batches | "CleanReviews" >> CleanReviews(self.payload_bytes)
        out = (cleaned.clean, product_tables, *extra) | "WindowedReviews" >> WindowedReviews(
            self.layout, self.spec, self.clock, self.lateness, self.early, self.n_buckets, self.top_reviewers,
            self.payload_bytes, self.shards, self.sentiment_model)
        out["dead_letters"] = ((prepared[DEAD], parsed[DEAD], cleaned[DEAD], out["dead_letters"])
                               | "FlattenDeadLetters" >> beam.Flatten())
        out["positions"] = prepared[POSITIONS]
        return out


def build_streaming(p, o, layout, spec, settings, reader_config, checkpoint_root, checkpoint, product_tables,
                    product_dead, commit, carried_gold=None):
    """The streaming graph after the source switch. Returns its main PCollections."""

    lateness = parse_duration(o.allowed_lateness)
    early = parse_duration(o.early_firing) if o.early_firing else None

    events = p | "ReadEventHub" >> ReadEventHub(settings, reader_config, o.start_position, o.max_records,
                                                checkpoint)
    if o.known_reviews:
        known = (p | "KnownReviewsRoot" >> beam.Create([o.known_reviews])
                 | "LoadKnownReviews" >> beam.ParDo(LoadKnownReviewsFn(o.stream_shards)))
    else:
        known = p | "NoKnownReviews" >> beam.Create([])
    carried = (p | "CarriedGold" >> beam.Create([(name, coders.table_to_bytes(t)) for name, t in carried_gold or []])
               | "DecodeCarriedGold" >> beam.MapTuple(lambda name, data: (name, coders.table_from_bytes(data))))
    out = (events, product_tables, known, carried) | "EventsToReviews" >> EventsToReviews(
        layout, spec, o.event_time, lateness, early, o.shuffle_buckets or 8, o.top_reviewers, o.max_record_bytes,
        o.dead_letter_payload_bytes, o.stream_shards, o.sentiment_model)
    dead_paths = out["dead_letters"] | "WriteDeadLetters" >> WriteDeadLetters(
        layout, "reviews", FixedWindows(spec.size_s), early, lateness)
    product_dead_paths = product_dead | "WriteProductDeadLetters" >> WriteDeadLetters(layout, "products")
    if commit:
        to_commit = [_collect(paths, label, "file") for label, paths in (
            ("Silver", out["silver"]), ("Gold", out["gold_paths"]), ("DeadLetters", dead_paths),
            ("ProductDeadLetters", product_dead_paths))]
        to_commit.append(_collect(out["positions"], "Positions", "position"))
        to_commit.append(_collect(out["gold_state"], "GoldState", "gold_state"))
        out["published"] = (to_commit
                            | "FlattenCommit" >> beam.Flatten()
                            | "KeyCommit" >> beam.Map(lambda item: (None, item))
                            | "GroupCommit" >> beam.GroupByKey()
                            | "Commit" >> beam.ParDo(CommitFn(layout, checkpoint_root,
                                                              reader_config.max_out_of_orderness_s, spec, lateness)))
    return out
