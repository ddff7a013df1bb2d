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
      |-> GroupGoldPartials -> ComputeGold   additive partials per bucket (Arrow IPC payloads), merged
                                        per family and staged for the commit step
    dead letters of every stage -> WriteDeadLetters (JSON lines)
    every staged file -> Publish        replaces the output tables at once

Batch mode carries Arrow tables through every step (one element per chunk or bucket, never one per
review) and the gold windows as columns. ``run(argv)`` is the entry point; it prints and writes a run
summary whose reconciliation ``records_read = silver + dead letters + duplicates`` must hold.
"""
import datetime
import logging
import time
import typing
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from beam_pipeline import coders, io, scoring, tables  # importing coders registers the Arrow coders
from beam_pipeline.composites import (DEAD, CleanReviews, ParseReviews, WriteDeadLettersFn, count_dead, count_schema,
                                      dead_letter_shard, gold_payloads)
from beam_pipeline.threaded import ThreadedDoFn
from beam_pipeline.options import (OptionsError, hub_settings, normalize_argv, parse_duration, validated, window_spec,
                                    with_local_defaults)
from transforms import gold, keys, reasons, schema_versions
from transforms.expectations import configure, failures, parse_overrides
from transforms.dead_letters import dead_letter
from transforms.enrich import content_hashes, dedupe_products, dedupe_reviews, enrich_with_products, preference
from transforms.parse import classify_line
from transforms.products import clean_product
from transforms.schemas import SILVER_PRODUCT_SCHEMA

LOG = logging.getLogger("reviews")
SILVER, PRODUCTS, GOLD = "silver", "products", "gold"
SILVER_REVIEWS_DIR, SILVER_PRODUCTS_DIR, GOLD_DIR, DEAD_DIR = (
    "silver/reviews", "silver/products", "gold", "dead_letters")
EXISTING = "_existing"  # marks a product row the table already held (incremental runs)


# ---------------------------------------------------------------------------------------------------
# reviews

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
            row, reason, detail = clean_product(obj, chunk.source, position, line)
            if row is None:
                dead.append(dead_letter("product", reasons.CLEAN_PRODUCTS, reason, chunk.source, position, line,
                                        detail, self.payload_bytes))
                continue
            rows.append(row)
        if rows:
            count_schema(schema_versions.product_counts(rows), "product")
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
    """(bucket, product rows) -> (bucket, products table deduplicated on asin) + gold partials
    ((family, ArrowPayload), like DedupeAndEnrichFn's)."""

    def __init__(self, window, insights=True):
        self.window, self.families = window, gold.product_families(insights)
        self.rows = Metrics.counter("products", "silver_rows")
        self.duplicates = Metrics.counter("products", "duplicates_dropped")

    def process(self, element):
        bucket, rows = element
        rows = list(rows)
        existing = [{k: v for k, v in r.items() if k != EXISTING} for r in rows if r.get(EXISTING)]
        new = [r for r in rows if not r.get(EXISTING)] if existing else rows
        products, dropped = dedupe_products(new)
        self.rows.inc(products.num_rows)
        self.duplicates.inc(dropped)
        if existing:  # products of earlier runs that this run did not bring again (joins only; not counted)
            fresh = set(products["asin"].to_pylist())
            kept = [r for r in existing if r["asin"] not in fresh]
            if kept:
                products = pa.concat_tables([products, pa.Table.from_pylist(kept, schema=SILVER_PRODUCT_SCHEMA)])
        for name, partial in gold.partials(gold.product_facts(products), self.window, "products",
                                           self.families).items():
            yield pvalue.TaggedOutput(GOLD, (name, coders.ArrowPayload.of(partial)))
        yield bucket, products


class DedupeAndEnrichFn(ThreadedDoFn):
    """(bucket, [encoded clean review tables]) + products of that bucket (side input) + the reviews the
    silver table already holds (side input, incremental runs: ``transforms.enrich.KnownReviews``) -> the
    bucket's silver rows written as Parquet files into the silver table's folder (main output: their add
    descriptions, committed at the end of the run, and ``{"replaces": [content hashes]}`` of the held
    copies that copies of this run win over) and gold partials per family, as (family, ArrowPayload): encoded
    once, on the pool, instead of pickled by Beam at every step they pass (some partials have as many
    rows as the bucket has reviewers).

    Writing here, rather than after a second shuffle, moves the silver data through the runner once
    instead of twice: the runner's data plane, not Arrow, is the job's largest cost."""

    in_flight = 1  # a bucket's working set is large (peak RSS at 1M: 2.2 GB with 2 in flight, 1.9 GB with 1)

    def __init__(self, window, loc, run_id, target_rows, scorer=None, insights=True):
        self.window, self.loc, self.run_id, self.target_rows, self.scorer = window, loc, run_id, target_rows, scorer
        self.families = gold.review_families(scorer is not None, insights)
        self.silver = Metrics.counter("reviews", "silver_rows")
        self.scored = Metrics.counter("reviews", "scored_rows")
        self.duplicates = Metrics.counter("reviews", "duplicates_dropped")
        self.known_duplicates = Metrics.counter("reviews", "duplicates_of_earlier_runs")
        self.matched = Metrics.counter("reviews", "products_matched")
        self.unmatched = Metrics.counter("reviews", "products_unmatched")

    def setup(self):
        super().setup()
        # the gold partials of a bucket are computed here while its Parquet files are written (both mostly
        # outside the GIL): with one bucket in flight the second core would otherwise idle in this stage
        self._gold_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="DedupeAndEnrichGold")
        if self.scorer is not None:
            self.scorer.load()  # once per process (cached by path): a missing or broken model fails here

    def teardown(self):
        self._gold_pool.shutdown(wait=True)
        super().teardown()

    def process(self, element, products_by_bucket, known_by_bucket):
        bucket, tables = element
        yield from super().process((bucket, list(tables), products_by_bucket.get(bucket),
                                    known_by_bucket.get(bucket)))

    def work(self, element):
        bucket, payloads, products, known = element
        # decoded tables live only inside dedupe_reviews: a bucket is the largest working set of the job
        reviews, duplicates = dedupe_reviews([p.table() for p in payloads])
        if reviews is None:
            return None
        earlier, replaces = 0, None
        if known is not None and len(known):  # the content key and the survivor rule hold across runs too
            content = content_hashes(reviews)
            held, wins = known.compare(content, *preference(reviews))
            earlier = int(np.count_nonzero(held & ~wins))
            if earlier:
                reviews = reviews.filter(pa.array(~(held & ~wins)))
            if wins.any():  # the commit removes the copies these replace (beam_pipeline.commit)
                replaces = {"replaces": [int(h) for h in content[wins]]}
        silver, matched, unmatched = enrich_with_products(
            reviews, products if products is not None else SILVER_PRODUCT_SCHEMA.empty_table())
        del reviews
        if self.scorer is not None:
            silver = self.scorer.score(silver)
        partials = self._gold_pool.submit(gold_payloads, silver, self.window, self.families, self.scorer is not None)
        adds = tables.write_files(self.loc, tables.SILVER_REVIEWS, silver, self.run_id, self.target_rows,
                                  tag=f"b{bucket:03d}-")
        return silver.num_rows, duplicates, earlier, matched, unmatched, partials.result(), adds, replaces

    def emit(self, result):
        if result is None:
            return
        rows, duplicates, earlier, matched, unmatched, partials, adds, replaces = result
        self.silver.inc(rows)
        if self.scorer is not None:
            self.scored.inc(rows)
        self.duplicates.inc(duplicates + earlier)
        self.known_duplicates.inc(earlier)
        self.matched.inc(matched)
        self.unmatched.inc(unmatched)
        for name, partial in partials.items():
            yield pvalue.TaggedOutput(GOLD, (name, partial))
        yield from adds
        if replaces is not None:
            yield replaces


class MergeGoldPartialsFn(ThreadedDoFn):
    """(family, [ArrowPayload of partials]) -> the family's merged partial, staged as a file for the commit
    step (-> ``{"gold": family, "path": ...}``). A partial crosses the runner once, as bytes; the merge and
    its encoding run on the pool, two families at a time."""

    def __init__(self, loc, run_id):
        self.loc, self.run_id = loc, run_id

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        name, payloads = element
        yield from super().process((name, list(payloads)), timestamp, window)

    def work(self, element):
        from beam_pipeline import commit
        name, payloads = element
        merged = gold.merge([p.table() for p in payloads])
        return commit.stage_gold(self.loc, self.run_id, name, merged)

    def emit(self, item):
        if item is not None:
            yield item


# ---------------------------------------------------------------------------------------------------
# writers: each yields the add descriptions of the files it wrote (tables.write_files)

class WriteProductsFn(beam.DoFn):
    """[(bucket, products table)] -> the silver products table's files (the whole table: this run's
    products and, on an incremental run, those of earlier runs it did not bring again)."""

    def __init__(self, loc, run_id):
        self.loc, self.run_id = loc, run_id

    def process(self, element):
        _, parts = element
        parts = [t for _, t in parts if t is not None and t.num_rows]
        if parts:
            yield from tables.write_files(self.loc, tables.SILVER_PRODUCTS, pa.concat_tables(parts), self.run_id)


class StageRunOutputsFn(beam.DoFn):
    """Everything the run wrote (add descriptions) and its merged gold partials -> one manifest under
    ``_pipeline/_staged/RUN_ID/`` that the commit step (``beam_pipeline.commit``) reads once the pipeline
    has finished and its counters are known."""

    def __init__(self, loc, run_id):
        self.loc, self.run_id = loc, run_id

    def process(self, items):
        from beam_pipeline import commit
        yield commit.stage_manifest(self.loc, self.run_id, items)


def default_run_id():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def stream_target(o, run_id):
    """Where a streaming run writes; a truly unbounded run (no --max_records, no --stop_after_idle_s)
    commits every --commit_interval from inside the pipeline, since its end never comes."""
    from beam_pipeline.commit import _target_rows
    from beam_pipeline.streaming import StreamTarget
    bounded = o.max_records is not None or o.stop_after_idle_s is not None
    return StreamTarget(tables.Location(o.output), run_id, _target_rows(o),
                        None if bounded else parse_duration(o.commit_interval))


def build_pipeline(p, options, plan=None):
    """Add the whole job to pipeline ``p``. Returns the main PCollections (tests look at them).
    ``plan``: what the run reads and builds on: batch, ``beam_pipeline.commit.BatchPlan`` (default: every
    matching file, nothing known from earlier runs); streaming, ``beam_pipeline.commit.StreamPlan``
    (the stored partition positions it resumes from, the content keys silver holds, the gold partials of
    windows still open; default: none)."""
    from beam_pipeline.commit import BatchPlan
    o, review_patterns, product_patterns = validated(options)
    streaming = o.source == "eventhub"
    window = window_spec(o)
    chunk = o.chunk_mb << 20
    if not streaming:
        plan = plan or BatchPlan.naive(o, review_patterns, product_patterns)
        product_patterns = plan.product_files
        n_buckets = plan.n_buckets
    else:
        n_buckets = o.shuffle_buckets or 8

    dead = []
    if product_patterns:
        read_products = io.ReadFiles("products", product_patterns, chunk)
        product_chunks = p | "ReadProducts" >> read_products
        products = product_chunks | "ParseProducts" >> ParseProducts(o.max_record_bytes, o.dead_letter_payload_bytes,
                                                                   n_buckets)
        product_dead = (products[DEAD], read_products.faults) | "ProductDeadLetters" >> beam.Flatten()
        product_rows = products.products
    else:
        product_dead = p | "NoProductDeadLetters" >> beam.Create([])
        product_rows = p | "NoProducts" >> beam.Create([])
    if not streaming and plan.existing_products_version is not None:
        product_rows = ((product_rows, p | "ExistingProducts" >> beam.Create([plan.existing_products_version])
                         | "ReadExistingProducts" >> beam.ParDo(ReadExistingProductsFn(plan.loc, n_buckets)))
                        | "WithExistingProducts" >> beam.Flatten())
    product_tables = (product_rows
                      | "GroupProducts" >> beam.GroupByKey()
                      | "DedupeProducts" >> beam.ParDo(DedupeProductsFn(window, o.insights))
                      .with_output_types(typing.Tuple[int, pa.Table], **{GOLD: typing.Tuple[str, coders.ArrowPayload]})
                      .with_outputs(GOLD, main=PRODUCTS))

    if streaming:
        from beam_pipeline import streaming as stream  # imports this module: not at the top
        from beam_pipeline.eventhub import ReaderConfig
        run_id = plan.run_id if plan is not None else (o.run_id or default_run_id())
        config = ReaderConfig(o.event_time, parse_duration(o.max_out_of_orderness), parse_duration(o.idle_timeout),
                              o.stop_after_idle_s, o.max_record_bytes)
        target = stream_target(o, run_id)
        outputs = stream.build_streaming(p, o, target, window, hub_settings(o), config,
                                         plan.checkpoint if plan is not None else {},
                                         product_tables[PRODUCTS], product_dead,
                                         known=plan.known if plan is not None else {},
                                         carried_gold=plan.carried if plan is not None else (),
                                         recorded_dead=plan.recorded_dead if plan is not None else frozenset())
        outputs["target"] = target
        return outputs
    dead.append(product_dead)

    loc, run_id = plan.loc, plan.run_id
    read_reviews = io.ReadFiles("reviews", plan.review_files, chunk)
    chunks = p | "ReadReviews" >> read_reviews
    parsed = chunks | "ParseReviews" >> ParseReviews(o.max_record_bytes, o.dead_letter_payload_bytes)
    cleaned = parsed.batches | "CleanReviews" >> CleanReviews(o.dead_letter_payload_bytes,
                                                              configure(parse_overrides(o.expectation or [])))
    review_buckets = (cleaned.clean
                      | "KeyReviewsByBucket" >> beam.ParDo(KeyByBucketFn(n_buckets))
                      .with_output_types(typing.Tuple[int, coders.ArrowPayload]))
    dead += [read_reviews.faults, parsed[DEAD], cleaned[DEAD]]
    known = p | "KnownReviews" >> beam.Create(sorted(plan.known.items()))

    enriched = (review_buckets
                | "GroupReviewsByBucket" >> beam.GroupByKey()
                | "DedupeAndEnrich" >> beam.ParDo(DedupeAndEnrichFn(window, loc, run_id, plan.target_rows,
                                                                    scoring.scorer(o.sentiment_model), o.insights),
                                                  products_by_bucket=beam.pvalue.AsDict(product_tables[PRODUCTS]),
                                                  known_by_bucket=beam.pvalue.AsDict(known))
                .with_output_types(dict, **{GOLD: typing.Tuple[str, coders.ArrowPayload]})
                .with_outputs(GOLD, main=SILVER))

    staged = [enriched[SILVER]]
    staged.append(product_tables[PRODUCTS]
                  | "KeyProductsFile" >> beam.Map(lambda kv: (0, kv))   # typed: Arrow IPC, not pickle
                  .with_output_types(typing.Tuple[int, typing.Tuple[int, pa.Table]])
                  | "GroupProductsFile" >> beam.GroupByKey()
                  | "WriteSilverProducts" >> beam.ParDo(WriteProductsFn(loc, run_id)))
    staged.append((enriched[GOLD], product_tables[GOLD])
                  | "FlattenGoldPartials" >> beam.Flatten()
                  | "GroupGoldPartials" >> beam.GroupByKey()
                  | "ComputeGold" >> beam.ParDo(MergeGoldPartialsFn(loc, run_id)))
    all_dead = dead | "FlattenDeadLetters" >> beam.Flatten()
    staged.append(all_dead
                  | "ShardDeadLetters" >> beam.Map(lambda d: (dead_letter_shard(d), d))
                  | "GroupDeadLetters" >> beam.GroupByKey()
                  | "WriteDeadLetters" >> beam.ParDo(WriteDeadLettersFn(loc, run_id)))
    published = (staged
                 | "FlattenStaged" >> beam.Flatten()
                 | "CollectStaged" >> beam.combiners.ToList()
                 | "StageRunOutputs" >> beam.ParDo(StageRunOutputsFn(loc, run_id)))
    return {"silver": enriched[SILVER], "gold": enriched[GOLD], "dead_letters": all_dead, "published": published,
            "plan": plan}


class ReadExistingProductsFn(beam.DoFn):
    """The silver products table at the version the run started from -> (bucket, row) like ParseProducts',
    so an incremental run joins its new reviews with every product known so far. These rows are not
    records read by this run: DedupeProductsFn keeps them only for asins this run did not bring."""

    def __init__(self, loc, n_buckets):
        self.loc, self.n_buckets = loc, n_buckets

    def process(self, version):
        t = tables.read(self.loc, tables.SILVER_PRODUCTS, version)
        if t is None or not t.num_rows:
            return
        t = t.select(SILVER_PRODUCT_SCHEMA.names).cast(SILVER_PRODUCT_SCHEMA)
        for bucket, row in zip(keys.buckets(t["asin"], self.n_buckets).tolist(), t.to_pylist()):
            row[EXISTING] = True
            yield bucket, row


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
            # files that could not be read to their end (truncated or corrupt): what was read is counted
            # above, the rest is unknown; each has a dead letter with record_type "file"
            "files_incomplete": get("io", f"{kind}.files_incomplete"),
        }
    for kind, rtype in (("reviews", "review"), ("products", "product")):
        for ns, key in (("schema_version", "rows_by_schema_version"), ("rescued_fields", "rows_with_rescued_field")):
            summary[kind][key] = {name.split(".", 1)[1]: int(v) for (n, name), v in sorted(counters.items())
                                  if n == ns and name.startswith(rtype + ".")}
    summary["expectations"] = {}
    for (ns, name), v in sorted(counters.items()):
        if ns == "expectations":
            check, action = name.rsplit(".", 1)
            summary["expectations"][check] = {"action": action, "failed_rows": int(v)}
    summary["reviews"]["scored_rows"] = get("reviews", "scored_rows")
    summary["reviews"]["products_matched"] = get("reviews", "products_matched")
    summary["reviews"]["products_unmatched"] = get("reviews", "products_unmatched")
    summary["reviews"]["duplicates_of_earlier_runs"] = get("reviews", "duplicates_of_earlier_runs")  # of duplicates
    return summary


def _reconciliation_lines(summary):
    """read = silver + dead letters + duplicates per record type, the join, dead letters by reason."""
    r, p = summary["reviews"], summary["products"]
    lines = [
        f"  reviews   read {r['records_read']:,} = silver {r['silver_rows']:,} + dead letters {r['dead_letters']:,}"
        f" + duplicates {r['duplicates_dropped']:,}  [{'reconciled' if r['reconciled'] else 'DOES NOT RECONCILE'}]"
        + (f"  ({r['duplicates_of_earlier_runs']:,} duplicates of rows earlier runs committed)"
           if r.get("duplicates_of_earlier_runs") else ""),
        f"            products joined {r['products_matched']:,}, unmatched {r['products_unmatched']:,}"
        + (f"; scored by the sentiment model {r['scored_rows']:,}" if r.get("scored_rows") else ""),
        f"  products  read {p['records_read']:,} = silver {p['silver_rows']:,} + dead letters {p['dead_letters']:,}"
        f" + duplicates {p['duplicates_dropped']:,}  [{'reconciled' if p['reconciled'] else 'DOES NOT RECONCILE'}]"
        + (f"  ({p['dead_letters_recorded_earlier']:,} dead letters recorded by earlier runs, not appended again)"
           if p.get("dead_letters_recorded_earlier") else ""),
    ]
    for kind in ("reviews", "products"):
        for reason, n in summary[kind]["dead_letters_by_reason"].items():
            lines.append(f"  dead letter  {kind[:-1]:8s} {reason:38s} {n:,}")
    for kind in ("reviews", "products"):
        if summary[kind].get("files_incomplete"):
            lines.append(f"  INCOMPLETE  {summary[kind]['files_incomplete']:,} {kind[:-1]} file(s) could not be read to"
                         f" the end (truncated or corrupt): their readable lines are counted above, the rest is"
                         f" lost; see the dead letters with record_type 'file' (exit status 4)")
    return lines


def _print_stream_summary(summary, plan, seconds):
    eh = summary["eventhub"]
    positions = ", ".join(f"{pid}@{v['sequence_number']}" for pid, v in sorted(eh["checkpoint"].items()))
    lines = ["", f"Run summary ({seconds:.1f} s; streaming run {plan.run_id})"] + _reconciliation_lines(summary)
    lines.append(f"  event hub  events read {eh['events_read']:,}; checkpoint (partition@last sequence number) "
                 f"{positions or 'none'}, stored in the event log under {plan.checkpoint_key}")
    lag = [f"{pid}: {v['lag_events']:,}" for pid, v in (eh.get("partitions") or {}).items()
           if v["lag_events"] is not None]
    if lag:
        lines.append(f"  event hub  events enqueued and not read yet, per partition (at the commit): {', '.join(lag)}")
    lines += _table_lines(summary, plan.loc, extra="gold_changelog/<family> holds every pane (early/on time/late)")
    print("\n".join(lines), flush=True)


def _table_lines(summary, loc, extra=None):
    lines = [f"Delta tables under {loc.root} (version after this run; commit {summary['commit_seconds']:.2f} s)"]
    for rel, v in sorted(summary["table_versions"].items()):
        if not rel.startswith(("_state/", "gold/", "gold_changelog/")):
            lines.append(f"  {rel:28s} v{v}")
    for prefix in ("gold/", "gold_changelog/"):
        rels = sorted(rel for rel in summary["table_versions"] if rel.startswith(prefix))
        if rels:
            lines.append(f"  {prefix + '<family>':28s} {len(rels)} tables: "
                         + ", ".join(f"{rel[len(prefix):]} v{summary['table_versions'][rel]}" for rel in rels))
    if extra:
        lines.append(f"  ({extra})")
    lines.append("  query: python -m beam_pipeline.tables show " + loc.root + "   (or DuckDB, see README)")
    return lines


def _print_batch_summary(summary, plan, seconds):
    lines = [
        "",
        f"Run summary ({seconds:.1f} s; run {plan.run_id}{', full refresh' if plan.full_refresh else ''})",
    ]
    for kind, c in summary["files"].items():
        lines.append(f"  {kind + ' files':15s} {c['new']:,} new, {c['changed']:,} changed, {c['skipped']:,} "
                     f"already ingested (skipped)")
    lines += _reconciliation_lines(summary)
    for kind in ("reviews", "products"):
        versions = summary[kind].get("rows_by_schema_version") or {}
        if versions:
            lines.append(f"  {kind:9s} clean rows by schema version: "
                         + ", ".join(f"{v} {n:,}" for v, n in versions.items()))
        rescued = summary[kind].get("rows_with_rescued_field") or {}
        if rescued:
            top = sorted(rescued.items(), key=lambda kv: -kv[1])[:8]
            lines.append("            rows with rescued data (_rescued_data), by field: "
                         + ", ".join(f"{f} {n:,}" for f, n in top) + (" ..." if len(rescued) > 8 else ""))
    for name, c in summary.get("expectations", {}).items():
        if c["action"] == "warn":
            lines.append(f"  expectation {name:28s} warn: {c['failed_rows']:,} rows kept")
    lines += _table_lines(summary, plan.loc)
    print("\n".join(lines), flush=True)


def run(argv=None, save_main_session=False, fail_after=None):
    """Parse ``argv``, run the job to completion, commit its outputs, print the run summary; returns it.
    ``fail_after``: test hook, stop a batch commit after a phase (see ``beam_pipeline.tables.commit_run``)."""
    options = PipelineOptions(normalize_argv(argv) if argv is not None else None)
    o, review_patterns, product_patterns = validated(options)  # fail fast, before anything starts
    with_local_defaults(options)
    options.view_as(SetupOptions).save_main_session = save_main_session
    from apache_beam.io.filesystems import FileSystems
    from beam_pipeline import commit
    FileSystems.set_options(options)   # the driver lists inputs and commits through the same filesystems
    run_id = o.run_id or default_run_id()
    if _dataflow_dry_run(options):
        return _dry_run(options, o, run_id)
    loc = tables.Location(o.output)
    # inputs listed before anything is written: a glob that matches nothing leaves no output folder behind
    matched = commit.match_inputs(review_patterns, product_patterns)
    if not o.take_over_output:
        foreign = tables.foreign_files(loc)
        if foreign:
            raise OptionsError(f"--output {o.output} holds files the job did not write (e.g. {', '.join(foreign)}); "
                               "its cleanup would delete some of them. Choose an empty or new folder, or pass "
                               "--take_over_output")
    tables.register_run(loc, run_id)
    finished = False
    try:
        if o.source == "eventhub":
            summary = _run_streaming(options, o, run_id)
        else:
            plan = commit.prepare_batch(o, review_patterns, product_patterns, run_id, matched)
            summary = _run_batch(options, o, plan, fail_after)
        finished = True
        return summary
    finally:
        tables.unregister_run(loc, run_id, wait_s=None if finished else 5)


def _dataflow_dry_run(options):
    from apache_beam.options.pipeline_options import TestOptions
    runner = str(options.view_as(StandardOptions).runner or "")
    return "Dataflow" in runner and bool(options.view_as(TestOptions).dry_run)


def _dry_run(options, o, run_id):
    """``--runner=DataflowRunner --dry_run=True``: translate the whole graph for Dataflow without touching
    storage or the hub (no listing, no commit, nothing submitted) and save the job's JSON locally."""
    import json
    import os
    p = beam.Pipeline(options=options)
    build_pipeline(p, options)
    result = p.run()
    job = getattr(result, "job", None)
    if job is None:
        raise OptionsError("--dry_run=True: this runner returned no job to show (use --runner=DataflowRunner)")
    from google.protobuf import json_format
    path = os.path.abspath(f"dataflow-dry-run-{run_id}.json")
    with open(path, "w", encoding="utf-8") as fh:   # the job's header and its whole runner-API graph
        json.dump({"job": json.loads(job.json()), "pipeline": json_format.MessageToDict(job.proto_pipeline)}, fh,
                  indent=1)
    steps = len(job.proto_pipeline.components.transforms)
    kind = "streaming" if o.source == "eventhub" else "batch"
    print(f"Dry run: the {kind} graph was translated for Dataflow ({steps} transforms) and NOT submitted; "
          f"nothing was read or written. Job JSON: {path}", flush=True)
    return {"dry_run": {"job_json": path, "transforms": steps, "mode": kind}}


def _run_streaming(options, o, run_id):
    from beam_pipeline import commit
    from beam_pipeline.checkpoints import checkpoint_key
    options.view_as(StandardOptions).streaming = True
    settings = hub_settings(o)
    key = checkpoint_key(settings.hub_name, settings.consumer_group)
    spec = window_spec(o)
    plan = commit.prepare_stream(o, run_id, spec, key, o.stream_shards)
    started = time.monotonic()
    p = beam.Pipeline(options=options)
    outputs = build_pipeline(p, options, plan=plan)
    LOG.info("running: reviews from event hub %s -> %s", settings.hub_name, o.output)
    from beam_pipeline.eventhub import HubUnavailable, unavailable_message
    try:
        result = p.run()
        result.wait_until_finish()
    except HubUnavailable as err:  # before the commit: no table, no position moved
        raise HubUnavailable(f"{unavailable_message(err)}; nothing of run {run_id} was committed (tables and hub "
                             "positions unchanged): the next run reads its events again") from None
    counters = _counters(result)
    summary = _run_summary(counters, o, run_id, started)
    summary["products"]["dead_letters_recorded_earlier"] = int(
        counters.get(("products", "dead_letters_recorded_earlier"), 0))
    summary["eventhub"] = {
        "events_read": int(counters.get(("eventhub", "events_read"), 0)), "checkpoint": plan.checkpoint,
        "checkpoint_key": key, "committed": outputs["target"].commit_interval_s is None,
        "event_time": o.event_time, "allowed_lateness": o.allowed_lateness,
        "max_out_of_orderness": o.max_out_of_orderness}
    _fail_on_expectations(summary, f"run {run_id} committed nothing and its events will be read again")
    if outputs["target"].commit_interval_s is None:
        from beam_pipeline.eventhub import partition_ends
        summary["table_versions"] = commit.commit_stream(plan, o.top_reviewers, summary,
                                                         insights=commit.Insights.of(o),
                                                         hub_ends=lambda: partition_ends(settings), spec=spec)
    _print_stream_summary(summary, plan, time.monotonic() - started)
    return summary


def _run_summary(counters, o, run_id, started, **options):
    """The summary both modes start from: the reconciled counts, time, output and the options that shaped
    the run (``options``: a mode's own)."""
    summary = summarize(counters)
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["output"] = o.output
    summary["options"] = {"source": o.source, "reviews": o.reviews, "products": o.products,
                          "window_size": o.window_size, "window_period": o.window_period,
                          "sentiment_model": o.sentiment_model, "run_id": run_id, **options,
                          "rating_min_reviews": o.rating_min_reviews}
    return summary


def _fail_on_expectations(summary, consequence):
    """An expectation with action "fail" that rows failed: the run stops before its commit (nothing becomes
    visible) and says which, on how many rows, and ``consequence``."""
    failed = failures(summary["expectations"])
    if failed:
        raise tables.ExpectationFailed(
            "expectations with action 'fail' were not met: " + ", ".join(f"{k} on {n:,} rows" for k, n in failed.items())
            + f"; {consequence}")


def _run_batch(options, o, plan, fail_after=None):
    from beam_pipeline import commit
    started = time.monotonic()
    p = beam.Pipeline(options=options)
    build_pipeline(p, options, plan=plan)
    LOG.info("running: %d review files, %d product files -> %s", len(plan.review_files), len(plan.product_files),
             o.output)
    result = p.run()
    result.wait_until_finish()
    summary = _run_summary(_counters(result), o, plan.run_id, started, insights=o.insights)
    summary["files"] = plan.file_counts
    summary["full_refresh"] = plan.full_refresh
    summary["shuffle_buckets"] = plan.n_buckets
    _fail_on_expectations(summary, f"run {plan.run_id} committed nothing (its files are removed by the next run)")
    summary["table_versions"] = commit.commit_batch(plan, o, summary, fail_after=fail_after)
    _print_batch_summary(summary, plan, time.monotonic() - started)
    return summary
