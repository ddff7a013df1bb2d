"""The composites and writers both modes share: batch (``beam_pipeline.pipeline``) and streaming
(``beam_pipeline.streaming``) import them from here, so neither mode imports the other's graph.

    ParseReviews      chunks of JSON lines -> Arrow batches (main ``batches``); bad lines -> dead letters
    CleanReviews      the shared vectorised cleaning rules and expectations (main ``clean``) + dead letters
    MergeGoldFn       the additive gold partials' combiner (``transforms.gold``)
    WriteDeadLettersFn  one shard of dead letters -> files of the dead-letter table
"""
import typing
import zlib

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from beam_pipeline import coders, tables
from beam_pipeline.threaded import ThreadedDoFn
from transforms import gold, schema_versions
from transforms.clean import clean_reviews
from transforms.dead_letters import counter_name
from transforms.expectations import EXPECTATIONS
from transforms.parse import ParsedBatch, parse_reviews

DEAD = "dead_letters"
DEAD_LETTER_SHARDS = 4


def count_dead(letters):
    """One Beam counter increment per dead letter (namespace ``dead_letters``, ``type.stage.reason``)."""
    for d in letters:
        Metrics.counter(DEAD, counter_name(d["record_type"], d["stage"], d["reason"])).inc()


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


# the types ParseReviews and CleanReviews declare: sized from their Arrow buffers (beam_pipeline.coders)
for _named_tuple in (ParsedBatch, StampedTable):
    beam.coders.registry.register_coder(_named_tuple, coders.sized_tuple_coder(_named_tuple))


class CleanReviewsFn(ThreadedDoFn):
    """ParsedBatch -> clean Arrow table (main; a StampedTable in streaming) + dead letters. Counts, per
    batch, the rows each expectation failed (namespace ``expectations``, ``name.action``), and the clean
    rows by schema version and by rescued field (namespaces ``schema_version``, ``rescued_fields``)."""

    def __init__(self, payload_bytes, expectations=None):
        self.payload_bytes = payload_bytes
        self.expectations = expectations if expectations is not None else EXPECTATIONS

    def work(self, batch):
        result = clean_reviews(batch, self.payload_bytes, self.expectations)
        table = result.table
        return table, result[1], batch.meta, result.expectations, schema_versions.counts(table)

    def emit(self, result):
        table, dead, meta, checks, versions = result
        for name, c in checks.items():
            if c["failed_rows"]:
                Metrics.counter("expectations", f"{name}.{c['action']}").inc(c["failed_rows"])
        count_schema(versions, "review")
        count_dead(dead)
        for d in dead:
            yield pvalue.TaggedOutput(DEAD, d)
        if table.num_rows:  # streaming: the table travels on with its events' metadata
            yield table if meta is None else StampedTable(table, meta)


def count_schema(counts, record_type):
    """Rows by schema version and by rescued field -> Beam counters (``transforms.schema_versions.counts``)."""
    for version, n in counts.get("schema_version", {}).items():
        Metrics.counter("schema_version", f"{record_type}.{version}").inc(n)
    for field, n in counts.get("rescued_fields", {}).items():
        Metrics.counter("rescued_fields", f"{record_type}.{field}").inc(n)


class ParseReviews(beam.PTransform):
    def __init__(self, max_record_bytes, payload_bytes):
        super().__init__()
        self.fn = ParseReviewsFn(max_record_bytes, payload_bytes)

    def expand(self, chunks):
        return chunks | beam.ParDo(self.fn).with_output_types(ParsedBatch, **{DEAD: dict}).with_outputs(
            DEAD, main="batches")


class CleanReviews(beam.PTransform):
    """``stamped``: the batches carry their events' metadata (streaming), and so do the clean tables."""

    def __init__(self, payload_bytes, expectations=None, stamped=False):
        super().__init__()
        self.fn = CleanReviewsFn(payload_bytes, expectations)
        self.out_type = StampedTable if stamped else pa.Table

    def expand(self, batches):
        return batches | beam.ParDo(self.fn).with_output_types(self.out_type, **{DEAD: dict}).with_outputs(
            DEAD, main="clean")


def gold_payloads(silver, window, families, scored):
    """Silver rows of a bucket -> {family: ArrowPayload of its gold partial}."""
    return {name: coders.ArrowPayload.of(partial)
            for name, partial in gold.partials(gold.review_facts(silver, scored), window, "reviews", families).items()}


class MergeGoldFn(beam.CombineFn):
    """Partial gold tables of one family -> one merged partial (see transforms.gold). Streaming's combiner;
    batch runs group the encoded partials instead (MergeGoldPartialsFn)."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
        acc.append(table)
        return [gold.merge(acc)] if len(acc) >= 8 else acc

    def merge_accumulators(self, accs):
        return [gold.merge([t for acc in accs for t in acc])]

    def extract_output(self, acc):
        return gold.merge(acc)


class WriteDeadLettersFn(beam.DoFn):
    def __init__(self, loc, run_id):
        self.loc, self.run_id = loc, run_id

    def process(self, element):
        shard, letters = element
        letters = sorted(letters, key=lambda d: (d["source"] or "", d["source_position"] or 0))
        from beam_pipeline.commit import DEAD_LETTER_TABLE_SCHEMA
        t = pa.Table.from_pylist([{**d, "run_id": self.run_id} for d in letters], schema=DEAD_LETTER_TABLE_SCHEMA)
        yield from tables.write_files(self.loc, tables.DEAD_LETTERS, t, self.run_id, tag=f"d{shard}-")


def dead_letter_shard(d):
    """The dead-letter file shard of a letter (stable across workers and runs)."""
    return zlib.crc32(f"{d['source']}:{d['source_position']}".encode()) % DEAD_LETTER_SHARDS
