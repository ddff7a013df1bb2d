"""Composite: ``beam_pipeline.io.ReadFiles`` on the FnApiRunner with a whole, a truncated and a non-gzip
``.gz`` file. The job does not fail; the readable lines arrive as chunks; each damaged file is one dead
letter on ``ReadFiles.faults`` (stage ``read``) and is counted (``io/<kind>.files_incomplete`` and the
``dead_letters`` counter ``file.read.<reason>``), as the docstring of ``beam_pipeline.io`` says."""
import collections
import gzip
import json

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline import io
from transforms import reasons

LINES = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(3000))


def test_read_files_keeps_what_it_can_and_emits_file_dead_letters(tmp_path):
    whole = gzip.compress(LINES)
    (tmp_path / "a.json.gz").write_bytes(whole)
    (tmp_path / "b.json.gz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "c.json.gz").write_bytes(LINES)
    expected_faults = []
    kept_b = b"".join(c.data for c in io.read_chunks(str(tmp_path / "b.json.gz"), 1 << 12, expected_faults))
    read = io.ReadFiles("reviews", [str(tmp_path / "*.json.gz")], 1 << 12)
    p = TestPipeline(runner="FnApiRunner")
    chunks = p | read
    lines = chunks | beam.Map(lambda c: (c.source.rsplit("/", 1)[1], c.data.count(b"\n"))) | beam.CombinePerKey(sum)
    assert_that(lines, equal_to([("a.json.gz", 3000), ("b.json.gz", kept_b.count(b"\n"))]), label="Lines")
    faults = read.faults | beam.Map(lambda d: (d["source"].rsplit("/", 1)[1], d["stage"], d["reason"]))
    assert_that(faults, equal_to([("b.json.gz", reasons.READ, reasons.TRUNCATED_FILE),
                                  ("c.json.gz", reasons.READ, reasons.CORRUPT_FILE)]), label="Faults")
    result = p.run()
    result.wait_until_finish()
    counters = collections.Counter()
    for c in result.metrics().query(MetricsFilter())["counters"]:
        counters[(c.key.metric.namespace, c.key.metric.name)] += c.committed or c.attempted or 0
    assert counters[("io", "reviews.files_incomplete")] == 2
    assert counters[("io", "reviews.files_read")] == 3
    assert counters[("dead_letters", "file.read.truncated_file")] == 1
    assert counters[("dead_letters", "file.read.corrupt_file")] == 1
