"""The reviews graph: read -> parse -> clean -> dedupe + enrich -> silver, gold, dead letters.

    ReadReviews (adls | files)          the only step that knows where data comes from
      -> ParseReviews                   chunks of JSON lines -> Arrow batches; bad lines -> dead letters
      -> CleanReviews                   the shared vectorised rules (transforms.clean)
      -> KeyReviewsByBucket             sub-batches per hash bucket of asin (encoded on the pool)
      -> GroupReviewsByBucket
    ReadProducts -> ParseProducts       per record (a tenth of the volume)
      -> GroupProducts -> DedupeProducts   one products table per bucket, deduplicated on asin
    DedupeAndEnrich                     content-key dedupe, left join with the bucket's products
                                             (a side input: no fan-out, no shuffle of products twice),
                                             sentiment scoring when --sentiment_model is given
      |-> silver reviews               written by DedupeAndEnrich: Parquet, hive partitions year=/month=
      |-> WriteSilverProducts
      |-> ComputeGold -> WriteGold      additive partials per bucket, merged per family
    dead letters of every stage -> WriteDeadLetters (JSON lines)
    every staged file -> Publish        replaces the output tables at once

Batch mode carries Arrow tables through every step (one element per chunk or bucket, never one per
review) and the gold windows as columns. ``run(argv)`` is the entry point; it prints and writes a run
summary whose reconciliation ``records_read = silver + dead letters + duplicates`` must hold.
"""
import datetime
import json
import logging
import time
import typing
import zlib
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from beam_pipeline import coders, io, scoring  # importing coders registers the Arrow coders
from beam_pipeline.checkpoints import CheckpointStore
from beam_pipeline.threaded import THREADS, ThreadedDoFn
from beam_pipeline.options import hub_settings, parse_duration, validated, with_local_defaults
from transforms import gold, keys, reasons
from transforms.clean import clean_reviews
from transforms.dead_letters import counter_name, dead_letter
from transforms.enrich import dedupe_products, dedupe_reviews, enrich_with_products
from transforms.parse import classify_line, parse_reviews
from transforms.products import clean_product
from transforms.schemas import REVIEW_PARTITION_COLUMNS, SILVER_PRODUCT_SCHEMA
from transforms.windows import WindowSpec

LOG = logging.getLogger("reviews")
DEAD = "dead_letters"
SILVER, PRODUCTS, GOLD = "silver", "products", "gold"
SILVER_REVIEWS_DIR, SILVER_PRODUCTS_DIR, GOLD_DIR, DEAD_DIR = (
    "silver/reviews", "silver/products", "gold", "dead_letters")
SUMMARY_FILE = "_run_summary.json"
DEAD_LETTER_SHARDS = 4


def count_dead(letters):
    """One Beam counter increment per dead letter (namespace ``dead_letters``, ``type.stage.reason``)."""
    for d in letters:
        Metrics.counter(DEAD, counter_name(d["record_type"], d["stage"], d["reason"])).inc()


# ---------------------------------------------------------------------------------------------------
# reviews

class ParseReviewsFn(ThreadedDoFn):
    """Chunk -> ParsedBatch (main) + dead letters."""

    def __init__(self, max_record_bytes, payload_bytes):
        self.max_record_bytes, self.payload_bytes = max_record_bytes, payload_bytes
        self.records = Metrics.counter("reviews", "records_read")

    def work(self, chunk):
        return parse_reviews(chunk, self.max_record_bytes, self.payload_bytes)

    def emit(self, result):
        batch, dead, records = result
        self.records.inc(records)
        count_dead(dead)
        for d in dead:
            yield pvalue.TaggedOutput(DEAD, d)
        if batch.table.num_rows:
            yield batch


class StampedTable(typing.NamedTuple):
    """A clean table from a streaming chunk, with the reader's metadata (``transforms.events.EventMeta``)."""
    table: pa.Table
    meta: object


class CleanReviewsFn(ThreadedDoFn):
    """ParsedBatch -> clean Arrow table (main; a StampedTable in streaming) + dead letters."""

    def __init__(self, payload_bytes):
        self.payload_bytes = payload_bytes

    def work(self, batch):
        return clean_reviews(batch, self.payload_bytes) + (batch.meta,)

    def emit(self, result):
        table, dead, meta = result
        count_dead(dead)
        for d in dead:
            yield pvalue.TaggedOutput(DEAD, d)
        if table.num_rows:  # streaming: the table travels on with its events' metadata
            yield table if meta is None else StampedTable(table, meta)


class ParseReviews(beam.PTransform):
    def __init__(self, max_record_bytes, payload_bytes):
        super().__init__()
        self.fn = ParseReviewsFn(max_record_bytes, payload_bytes)

    def expand(self, chunks):
        return chunks | beam.ParDo(self.fn).with_outputs(DEAD, main="batches")


class CleanReviews(beam.PTransform):
    def __init__(self, payload_bytes):
        super().__init__()
        self.fn = CleanReviewsFn(payload_bytes)

    def expand(self, batches):
        return batches | beam.ParDo(self.fn).with_outputs(DEAD, main="clean")


class KeyByBucketFn(ThreadedDoFn):
    """Clean table -> (bucket, encoded sub-table) per hash bucket of asin; split and encoded on the pool."""

    def __init__(self, n_buckets):
        self.n_buckets = n_buckets

    def work(self, table):
        return [(bucket, coders.ArrowPayload.of(part))
                for bucket, part in keys.split_by_bucket(table, keys.buckets(table["asin"], self.n_buckets))]

    def emit(self, parts):
        yield from parts


# ---------------------------------------------------------------------------------------------------
# products (per record)

class ParseProductsFn(beam.DoFn):
    """Chunk of product lines -> (bucket, clean product row) (main) + dead letters."""

    def __init__(self, max_record_bytes, payload_bytes, n_buckets):
        self.max_record_bytes, self.payload_bytes, self.n_buckets = max_record_bytes, payload_bytes, n_buckets
        self.records = Metrics.counter("products", "records_read")

    def process(self, chunk):
        dead, rows = [], []
        for i, line in enumerate(chunk.data.split(b"\n")):
            position = chunk.first_line + i
            obj, verdict = classify_line(line, self.max_record_bytes)
            if verdict is not None and verdict.reason is None:
                continue  # blank
            self.records.inc()
            if verdict is not None:
                dead.append(dead_letter("product", verdict.stage, verdict.reason, chunk.source, position, line,
                                        verdict.detail, self.payload_bytes))
                continue
            row, reason, detail = clean_product(obj, chunk.source, position)
            if row is None:
                dead.append(dead_letter("product", reasons.CLEAN_PRODUCTS, reason, chunk.source, position, line,
                                        detail, self.payload_bytes))
                continue
            rows.append(row)
        if rows:  # the same stable hash as the reviews' buckets, one vectorised call per chunk
            yield from zip(keys.buckets(pa.array([r["asin"] for r in rows], pa.string()), self.n_buckets).tolist(), rows)
        count_dead(dead)
        for d in dead:
            yield pvalue.TaggedOutput(DEAD, d)


class ParseProducts(beam.PTransform):
    def __init__(self, max_record_bytes, payload_bytes, n_buckets):
        super().__init__()
        self.fn = ParseProductsFn(max_record_bytes, payload_bytes, n_buckets)

    def expand(self, chunks):
        return chunks | beam.ParDo(self.fn).with_outputs(DEAD, main="products")


# ---------------------------------------------------------------------------------------------------
# dedupe, join, gold partials

class DedupeProductsFn(beam.DoFn):
    """(bucket, product rows) -> (bucket, products table deduplicated on asin) + gold partials."""

    def __init__(self, window):
        self.window = window
        self.rows = Metrics.counter("products", "silver_rows")
        self.duplicates = Metrics.counter("products", "duplicates_dropped")

    def process(self, element):
        bucket, rows = element
        products, dropped = dedupe_products(list(rows))
        self.rows.inc(products.num_rows)
        self.duplicates.inc(dropped)
        for name, partial in gold.partials(gold.product_facts(products), self.window, "products").items():
            yield pvalue.TaggedOutput(GOLD, (name, partial))
        yield bucket, products


class DedupeAndEnrichFn(ThreadedDoFn):
    """(bucket, [encoded clean review tables]) + products of that bucket (side input) -> the bucket's silver rows
    written straight into their year/month partitions (one file per bucket and partition; main output:
    the staged paths) and gold partials per family.

    Writing here, rather than after a second shuffle by partition, moves the silver data through the
    runner once instead of twice: the runner's data plane, not Arrow, is the job's largest cost."""

    in_flight = 1  # a bucket's working set is large (peak RSS at 1M: 2.2 GB with 2 in flight, 1.9 GB with 1);
    # the second core is used by the partition writes, which run on their own pool

    def __init__(self, window, layout, n_buckets, scorer=None):
        self.window, self.layout, self.n_buckets, self.scorer = window, layout, n_buckets, scorer
        self.families = gold.review_families(scorer is not None)
        self.silver = Metrics.counter("reviews", "silver_rows")
        self.scored = Metrics.counter("reviews", "scored_rows")
        self.duplicates = Metrics.counter("reviews", "duplicates_dropped")
        self.matched = Metrics.counter("reviews", "products_matched")
        self.unmatched = Metrics.counter("reviews", "products_unmatched")

    def setup(self):
        super().setup()
        self._writers = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="WriteSilver")
        if self.scorer is not None:
            self.scorer.load()  # once per process (cached by path): a missing or broken model fails here

    def teardown(self):
        self._writers.shutdown(wait=True)
        super().teardown()

    def process(self, element, products_by_bucket):
        bucket, tables = element
        yield from super().process((bucket, list(tables), products_by_bucket.get(bucket)))

    def work(self, element):
        bucket, payloads, products = element
        # decoded tables live only inside dedupe_reviews: a bucket is the largest working set of the job
        reviews, duplicates = dedupe_reviews([p.table() for p in payloads])
        if reviews is None:
            return None
        silver, matched, unmatched = enrich_with_products(
            reviews, products if products is not None else SILVER_PRODUCT_SCHEMA.empty_table())
        del reviews
        if self.scorer is not None:
            silver = self.scorer.score(silver)
        partials = gold.partials(gold.review_facts(silver, self.scorer is not None), self.window, "reviews",
                                 self.families)
        rows = silver.num_rows
        ym = (silver["year"].to_numpy() * 100 + silver["month"].to_numpy()).astype("int64")
        parts = keys.split_by_bucket(silver, ym)
        del silver
        written, writes = [], []
        for key, part in parts:
            rel = (f"{SILVER_REVIEWS_DIR}/year={key // 100}/month={key % 100}/"
                   f"part-{bucket:05d}-of-{self.n_buckets:05d}.parquet")
            writes.append(self._writers.submit(io.write_parquet, part.drop_columns(list(REVIEW_PARTITION_COLUMNS)),
                                               self.layout.staged(rel)))
            written.append(rel)
        for w in writes:
            w.result()
        return rows, duplicates, matched, unmatched, partials, written

    def emit(self, result):
        if result is None:
            return
        rows, duplicates, matched, unmatched, partials, written = result
        self.silver.inc(rows)
        if self.scorer is not None:
            self.scored.inc(rows)
        self.duplicates.inc(duplicates)
        self.matched.inc(matched)
        self.unmatched.inc(unmatched)
        for name, partial in partials.items():
            yield pvalue.TaggedOutput(GOLD, (name, partial))
        yield from written


class MergeGoldFn(beam.CombineFn):
    """Partial gold tables of one family -> one merged partial (see transforms.gold)."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
        acc.append(table)
        return [gold.merge(acc)] if len(acc) >= 8 else acc

    def merge_accumulators(self, accs):
        return [gold.merge([t for acc in accs for t in acc])]

    def extract_output(self, acc):
        return gold.merge(acc)


# ---------------------------------------------------------------------------------------------------
# writers: each yields the relative paths it staged

class WriteTableFn(beam.DoFn):
    """(relpath, [tables]) -> one Parquet file."""

    def __init__(self, layout, schema=None):
        self.layout, self.schema = layout, schema

    def process(self, element):
        rel, tables = element
        tables = [t for t in tables if t is not None]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        io.write_parquet(table, self.layout.staged(rel))
        yield rel


class WriteDeadLettersFn(beam.DoFn):
    def __init__(self, layout):
        self.layout = layout

    def process(self, element):
        shard, letters = element
        letters = sorted(letters, key=lambda d: (d["source"] or "", d["source_position"] or 0))
        rel = f"{DEAD_DIR}/part-{shard:05d}-of-{DEAD_LETTER_SHARDS:05d}.jsonl"
        io.write_json_lines(letters, self.layout.staged(rel))
        yield rel


def _dead_letter_shard(d):
    return zlib.crc32(f"{d['source']}:{d['source_position']}".encode()) % DEAD_LETTER_SHARDS


def _finalize_gold(element, top_reviewers):
    name, table = element
    return f"{GOLD_DIR}/{name}/part-00000.parquet", [gold.finalize(gold.family(name, top_reviewers), table)]


def output_tables():
    """The table directories a batch run replaces: every family's, the predicted ones included, so a run
    without a model also removes the predicted gold an earlier run with one left."""
    return (SILVER_REVIEWS_DIR, SILVER_PRODUCTS_DIR, DEAD_DIR) + tuple(f"{GOLD_DIR}/{f.name}"
                                                                       for f in gold.ALL_FAMILIES)


def _layout(o, streaming):
    run_id = o.run_id or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if not streaming:
        return io.Layout(o.output, run_id, output_tables())
    # streaming runs append their files (named with the run id) and clear nothing; a truly unbounded
    # run writes in place, since its end never comes to commit from staging
    bounded = o.max_records is not None or o.stop_after_idle_s is not None
    return io.Layout(o.output, run_id, (), in_place=not bounded)


def checkpoint_root(o):
    settings = hub_settings(o)
    return o.checkpoint_dir or io.join(o.output, "_checkpoints", settings.hub_name or "hub",
                                       settings.consumer_group.replace("$", "") or "default")


def build_pipeline(p, options, checkpoint=None, carried_gold=None):
    """Add the whole job to pipeline ``p``. Returns the main PCollections (tests look at them).
    ``checkpoint``: the stored partition positions a streaming run resumes from; ``carried_gold``: the gold
    partials of the windows the last streaming run left open."""
    o, review_patterns, product_patterns = validated(options)
    streaming = o.source == "eventhub"
    size = parse_duration(o.window_size)
    window = WindowSpec(size, parse_duration(o.window_period) if o.window_period else None)
    layout = _layout(o, streaming)
    chunk = o.chunk_mb << 20
    n_buckets = o.shuffle_buckets

    dead = []
    if product_patterns:
        product_chunks = p | "ReadProducts" >> io.ReadFiles("products", product_patterns, chunk)
        products = product_chunks | "ParseProducts" >> ParseProducts(o.max_record_bytes, o.dead_letter_payload_bytes,
                                                                   n_buckets)
        product_dead = products[DEAD]
        product_rows = products.products
    else:
        product_dead = p | "NoProductDeadLetters" >> beam.Create([])
        product_rows = p | "NoProducts" >> beam.Create([])
    product_tables = (product_rows
                      | "GroupProducts" >> beam.GroupByKey()
                      | "DedupeProducts" >> beam.ParDo(DedupeProductsFn(window))
                      .with_output_types(typing.Tuple[int, pa.Table]).with_outputs(GOLD, main=PRODUCTS))

    if streaming:
        from beam_pipeline import streaming as stream  # imports this module: not at the top
        from beam_pipeline.eventhub import ReaderConfig
        config = ReaderConfig(o.event_time, parse_duration(o.max_out_of_orderness), parse_duration(o.idle_timeout),
                              o.stop_after_idle_s, o.max_record_bytes)
        outputs = stream.build_streaming(p, o, layout, window, hub_settings(o), config, checkpoint_root(o),
                                         checkpoint, product_tables[PRODUCTS], product_dead,
                                         commit=not layout.in_place, carried_gold=carried_gold)
        outputs["layout"] = layout
        return outputs
    dead.append(product_dead)

    chunks = p | "ReadReviews" >> io.ReadFiles("reviews", review_patterns, chunk)
    parsed = chunks | "ParseReviews" >> ParseReviews(o.max_record_bytes, o.dead_letter_payload_bytes)
    cleaned = parsed.batches | "CleanReviews" >> CleanReviews(o.dead_letter_payload_bytes)
    review_buckets = (cleaned.clean
                      | "KeyReviewsByBucket" >> beam.ParDo(KeyByBucketFn(n_buckets))
                      .with_output_types(typing.Tuple[int, coders.ArrowPayload]))
    dead += [parsed[DEAD], cleaned[DEAD]]

    enriched = (review_buckets
                | "GroupReviewsByBucket" >> beam.GroupByKey()
                | "DedupeAndEnrich" >> beam.ParDo(DedupeAndEnrichFn(window, layout, n_buckets,
                                                                    scoring.scorer(o.sentiment_model)),
                                                  products_by_bucket=beam.pvalue.AsDict(product_tables[PRODUCTS]))
                .with_output_types(str)
                .with_outputs(GOLD, main=SILVER))

    staged = []
    staged.append(enriched[SILVER])
    staged.append(product_tables[PRODUCTS]
                  | "KeyProductsFile" >> beam.MapTuple(lambda _, t: (f"{SILVER_PRODUCTS_DIR}/part-00000.parquet", t))
                  .with_output_types(typing.Tuple[str, pa.Table])
                  | "GroupProductsFile" >> beam.GroupByKey()
                  | "WriteSilverProducts" >> beam.ParDo(WriteTableFn(layout, SILVER_PRODUCT_SCHEMA)))
    staged.append((enriched[GOLD], product_tables[GOLD])
                  | "FlattenGoldPartials" >> beam.Flatten()
                  | "ComputeGold" >> beam.CombinePerKey(MergeGoldFn())
                  | "FinalizeGold" >> beam.Map(_finalize_gold, o.top_reviewers)
                  | "WriteGold" >> beam.ParDo(WriteTableFn(layout)))
    all_dead = dead | "FlattenDeadLetters" >> beam.Flatten()
    staged.append(all_dead
                  | "ShardDeadLetters" >> beam.Map(lambda d: (_dead_letter_shard(d), d))
                  | "GroupDeadLetters" >> beam.GroupByKey()
                  | "WriteDeadLetters" >> beam.ParDo(WriteDeadLettersFn(layout)))
    published = (staged
                 | "FlattenStaged" >> beam.Flatten()
                 | "CollectStaged" >> beam.combiners.ToList()
                 | "Publish" >> beam.ParDo(io.PublishFn(layout)))
    return {"silver": enriched[SILVER], "gold": enriched[GOLD], "dead_letters": all_dead, "published": published,
            "layout": layout}


# ---------------------------------------------------------------------------------------------------
# run summary

def _counters(result):
    out = {}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[(c.key.metric.namespace, c.key.metric.name)] = out.get((c.key.metric.namespace, c.key.metric.name), 0) \
            + (value or 0)
    return out


def summarize(counters):
    """Beam counters -> the run summary, with the reconciliation of each record type."""
    def get(ns, name):
        return int(counters.get((ns, name), 0))

    summary = {}
    for kind, rtype in (("reviews", "review"), ("products", "product")):
        dead = {name.split(".", 1)[1]: int(v) for (ns, name), v in sorted(counters.items())
                if ns == DEAD and name.startswith(rtype + ".")}
        read, silver, dups = get(kind, "records_read"), get(kind, "silver_rows"), get(kind, "duplicates_dropped")
        n_dead = sum(dead.values())
        summary[kind] = {
            "records_read": read, "silver_rows": silver, "dead_letters": n_dead, "dead_letters_by_reason": dead,
            "duplicates_dropped": dups,
            "reconciled": read == silver + n_dead + dups,
            "files_read": get("io", f"{kind}.files_read"), "bytes_read": get("io", f"{kind}.bytes_read"),
        }
    summary["reviews"]["scored_rows"] = get("reviews", "scored_rows")
    summary["reviews"]["products_matched"] = get("reviews", "products_matched")
    summary["reviews"]["products_unmatched"] = get("reviews", "products_unmatched")
    return summary


def _print_summary(summary, layout, seconds):
    r, p = summary["reviews"], summary["products"]
    lines = [
        "",
        f"Run summary ({seconds:.1f} s)",
        f"  reviews   read {r['records_read']:,} = silver {r['silver_rows']:,} + dead letters {r['dead_letters']:,}"
        f" + duplicates {r['duplicates_dropped']:,}  [{'reconciled' if r['reconciled'] else 'DOES NOT RECONCILE'}]",
        f"            products joined {r['products_matched']:,}, unmatched {r['products_unmatched']:,}"
        + (f"; scored by the sentiment model {r['scored_rows']:,}" if r.get("scored_rows") else ""),
        f"  products  read {p['records_read']:,} = silver {p['silver_rows']:,} + dead letters {p['dead_letters']:,}"
        f" + duplicates {p['duplicates_dropped']:,}  [{'reconciled' if p['reconciled'] else 'DOES NOT RECONCILE'}]",
    ]
    for kind in ("reviews", "products"):
        for reason, n in summary[kind]["dead_letters_by_reason"].items():
            lines.append(f"  dead letter  {kind[:-1]:8s} {reason:38s} {n:,}")
    if "eventhub" in summary:
        eh = summary["eventhub"]
        positions = ", ".join(f"{pid}@{v['sequence_number']}" for pid, v in sorted(eh["checkpoint"].items()))
        lines += [
            f"  event hub  events read {eh['events_read']:,}; checkpoint (partition@last sequence number) "
            f"{positions or 'none'}{'' if eh['committed'] else ' (unbounded run: outputs written in place)'}",
            "Outputs (one file per window, pane and shard; gold: the last pane of a window is its value)",
            f"  silver reviews   {layout.final(SILVER_REVIEWS_DIR)}   (Parquet, hive partitions year=/month=)",
            f"  gold metrics     {layout.final(GOLD_DIR)}/<family>   (window_start/window_end, pane_index, "
            f"pane_timing, pane_is_last)",
            f"  dead letters     {layout.final(DEAD_DIR)}   (JSON lines)",
            f"  checkpoints      {eh['checkpoint_dir']}",
            f"  this summary     {layout.final(SUMMARY_FILE)}",
        ]
        print("\n".join(lines), flush=True)
        return
    lines += [
        "Outputs",
        f"  silver reviews   {layout.final(SILVER_REVIEWS_DIR)}   (Parquet, hive partitions year=/month=)",
        f"  silver products  {layout.final(SILVER_PRODUCTS_DIR)}",
        f"  gold metrics     {layout.final(GOLD_DIR)}/<family>   "
        f"({', '.join(f.name for f in gold.review_families(bool(summary['options'].get('sentiment_model'))))})",
        f"  dead letters     {layout.final(DEAD_DIR)}   (JSON lines)",
        f"  this summary     {layout.final(SUMMARY_FILE)}",
    ]
    print("\n".join(lines), flush=True)


def run(argv=None, save_main_session=False):
    """Parse ``argv``, run the job to completion, write and print the run summary; returns the summary."""
    options = PipelineOptions(argv)
    o, review_patterns, _ = validated(options)  # fail fast, before anything starts
    with_local_defaults(options)
    options.view_as(SetupOptions).save_main_session = save_main_session
    streaming = o.source == "eventhub"
    checkpoint, store, carried = None, None, None
    if streaming:
        options.view_as(StandardOptions).streaming = True
        store = CheckpointStore(checkpoint_root(o))
        store.recover()                                    # a commit a killed run left half done
        io.delete_tree(io.join(o.output, io.STAGING))      # what killed runs staged: never committed
        checkpoint = store.load()
        carried = store.load_gold_state(WindowSpec(parse_duration(o.window_size), parse_duration(o.window_period)
                                                   if o.window_period else None))
    started = time.monotonic()
    p = beam.Pipeline(options=options)
    outputs = build_pipeline(p, options, checkpoint, carried)
    layout = outputs["layout"]
    LOG.info("running: reviews from %s -> %s", f"event hub {hub_settings(o).hub_name}" if streaming
             else ", ".join(review_patterns), layout.output)
    result = p.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started
    counters = _counters(result)
    summary = summarize(counters)
    summary["seconds"] = round(seconds, 3)
    summary["output"] = layout.output
    summary["options"] = {"source": o.source, "reviews": o.reviews, "products": o.products,
                          "window_size": o.window_size, "window_period": o.window_period,
                          "sentiment_model": o.sentiment_model, "run_id": layout.run_id}
    if streaming:
        summary["eventhub"] = {
            "events_read": int(counters.get(("eventhub", "events_read"), 0)),
            "checkpoint": store.load(), "checkpoint_dir": store.root, "committed": not layout.in_place,
            "event_time": o.event_time, "allowed_lateness": o.allowed_lateness,
            "max_out_of_orderness": o.max_out_of_orderness}
    io.write_bytes(json.dumps(summary, indent=1, sort_keys=True).encode() + b"\n", layout.final(SUMMARY_FILE))
    _print_summary(summary, layout, seconds)
    return summary
