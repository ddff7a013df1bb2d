"""Property-based hostile input through WHOLE runs (issue 21): random and adversarial review lines
(``tests/_hostile.py``: structure, encodings with invalid UTF-8 and NUL, sizes, types, numeric extremes such
as 2**62 and 1e12, deep nesting, markup) plus exact copies of some of them, run through

* a whole batch job: written to a file, ``python -m beam_pipeline --source=files`` (its ``main``, in-process);
* a whole streaming job: the same lines as events of one partition of the local Event Hubs endpoint (real
  producer client), ``--source=eventhub`` from the first of them for exactly their number.

Whatever the lines, the job exits 0 and every input is accounted for exactly once: each non-blank line of
the file (batch) or each event (streaming, where a blank event is an ``empty_event`` dead letter) is a silver
row or a dead letter at its position, or one of the duplicates the summary counts; the summary's counts
equal the committed tables read back (delta-rs / pyarrow) and reconcile; a batch dead letter carries its
line as payload; the stream's checkpoint is its last event. Whole runs cost seconds, so few examples, each
of many lines; the seeds that once failed are kept as ``@example``.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beam_pipeline.__main__ import main
from runners.local_stack import EventHubsEndpoint
from tests._hostile import BASE_2018, BASE_2023, MAX_RECORD_BYTES, hostile_line, nested
from tests.e2e import _outputs

pytestmark = pytest.mark.e2e

ENV = "EVENTHUB_CONNECTION_STRING"
HUB = "reviews"
CLIENT_KW = {"retry_total": 1, "retry_backoff_factor": 0.1}
_runs = itertools.count()


@st.composite
def run_lines(draw):
    """Many hostile lines, then exact copies of a few of them (duplicates the job must count)."""
    lines = draw(st.lists(hostile_line(), min_size=20, max_size=45))
    copies = draw(st.lists(st.integers(0, len(lines) - 1), max_size=4))
    return lines + [lines[i] for i in copies]


# seeds that once failed (issue 21): the poison events that crashed the job at every restart (a style
# 600 levels deep, review times of 2**62 and 1e12 s), a 5000-level nesting, escaped markup, invalid UTF-8,
# NUL, blank lines, and a review sent twice
GOOD = json.dumps(dict(BASE_2018, reviewerID="SEED")).encode()
SEEDS = [
    GOOD,
    b'{"overall": 5.0, "reviewerID": "A", "asin": "B", "unixReviewTime": 1400000000, "style": '
    + nested(600, True).encode() + b"}",
    b'{"overall": 5.0, "reviewerID": "A", "asin": "B", "unixReviewTime": 1400000000, "style": '
    + nested(5000, False).encode() + b"}",
    json.dumps(dict(BASE_2018, unixReviewTime=2 ** 62)).encode(),
    json.dumps(dict(BASE_2018, unixReviewTime=10 ** 12)).encode(),
    json.dumps(dict(BASE_2023, timestamp=2 ** 62)).encode(),
    json.dumps(dict(BASE_2018, summary="&lt;script&gt;alert(1)&lt;/script&gt;", reviewerID="M")).encode(),
    GOOD.replace(b"Great.", b"Gr\xffeat"), GOOD.replace(b'"A2"', b'"A\x002"'), b"", b"   ", b"\r",
    GOOD,
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One partition, for every example: each example's events follow the previous example's."""
    eh = EventHubsEndpoint(tmp_path_factory.mktemp("hostile-hub"), partitions=1, fsync=False).start()
    try:
        yield eh
    finally:
        eh.stop()


def _main(argv, env=None) -> tuple[int, str]:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    return rc, err.getvalue()


def _publish(eh, bodies) -> int:
    """The bodies as events of partition 0, in order -> the sequence number of the first (read back from
    the hub's partition properties, not assumed)."""
    with EventHubProducerClient.from_connection_string(eh.connection_string, **CLIENT_KW) as producer:
        batch = producer.create_batch(partition_id="0")
        for body in bodies:
            try:
                batch.add(EventData(body))
            except ValueError:                           # the batch is full: send it, start another
                producer.send_batch(batch)
                batch = producer.create_batch(partition_id="0")
                batch.add(EventData(body))
        producer.send_batch(batch)
    client = EventHubConsumerClient.from_connection_string(eh.connection_string, consumer_group="$Default",
                                                           **CLIENT_KW)
    try:
        last = client.get_partition_properties("0")["last_enqueued_sequence_number"]
    finally:
        client.close()
    return last - len(bodies) + 1


def _accounting(silver_positions, dead_positions, inputs, summary):
    """Each input position once, as a silver row or a dead letter; the rest are the counted duplicates;
    the summary equals what the tables hold and reconciles."""
    assert len(silver_positions) == len(set(silver_positions)), "a line is in silver twice"
    assert len(dead_positions) == len(set(dead_positions)), "a line is a dead letter twice"
    silver, dead = set(silver_positions), set(dead_positions)
    assert not silver & dead, sorted(silver & dead)[:5]
    assert silver | dead <= set(inputs), sorted((silver | dead) - set(inputs))[:5]
    r = summary["reviews"]
    assert r["records_read"] == len(inputs)
    assert (r["silver_rows"], r["dead_letters"]) == (len(silver), len(dead))
    assert len(set(inputs) - silver - dead) == r["duplicates_dropped"]
    assert r["records_read"] == r["silver_rows"] + r["dead_letters"] + r["duplicates_dropped"]
    assert r["reconciled"] is True


def _review_letters(out):
    letters = _outputs.dead_letters(out) if _outputs.is_delta(out, "dead_letters") else []
    assert all(d["record_type"] == "review" and d["stage"] and d["reason"] for d in letters), letters[:3]
    return letters


def _silver(out):
    return _outputs.silver_reviews(out).to_pylist() if _outputs.is_delta(out) else []


def check_batch(tmp: Path, lines):
    path = tmp / "reviews.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    file_lines = _outputs.read_lines(path)         # as a reader of the file sees them (a body may hold \n)
    inputs = [i + 1 for i, line in enumerate(file_lines) if line.strip()]
    out = tmp / "batch"
    rc, err = _main(["--source=files", f"--reviews={path}", f"--output={out}", "--run_id=batch",
                     f"--max_record_bytes={MAX_RECORD_BYTES}"])
    assert rc == 0, err[-3000:]
    summary = _outputs.run_summary(out)
    rows, letters = _silver(out), _review_letters(out)
    assert {r["source"] for r in rows} | {d["source"] for d in letters} <= {str(path)}
    _accounting([r["source_position"] for r in rows], [d["source_position"] for d in letters], inputs, summary)
    _outputs.check_dead_letters_point_at_their_lines(letters, {str(path): file_lines})
    assert not _outputs.staged_files(out)


def check_stream(tmp: Path, lines, eh):
    first = _publish(eh, lines)
    inputs = list(range(first, first + len(lines)))
    out = tmp / "stream"
    rc, err = _main(["--source=eventhub", f"--output={out}", "--run_id=stream", f"--start_position=sequence:{first}",
                     f"--max_records={len(lines)}", "--stop_after_idle_s=30", "--max_out_of_orderness=36500d",
                     "--window_size=3650d", f"--max_record_bytes={MAX_RECORD_BYTES}"], {ENV: eh.connection_string})
    assert rc == 0, err[-3000:]
    summary = _outputs.run_summary(out)
    assert summary["eventhub"]["events_read"] == len(lines)
    rows, letters = _silver(out), _review_letters(out)
    assert {r["source"] for r in rows} | {d["source"] for d in letters} <= {f"eventhub:{HUB}/0"}
    _accounting([r["source_position"] for r in rows], [d["source_position"] for d in letters], inputs, summary)
    for d in letters:                                 # each dead letter is the event at its position
        body = lines[d["source_position"] - first]
        assert d["payload_bytes"] in (len(body), len(body.rstrip(b"\r\n"))), (d, body[:200])
    from beam_pipeline import tables
    assert tables.checkpoint(tables.Location(str(out)), f"{HUB}/$Default")["0"]["sequence_number"] == inputs[-1]
    assert not _outputs.staged_files(out)


@settings(max_examples=4, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(run_lines())
@example(SEEDS)
def test_whole_runs_never_crash_and_account_for_every_line(tmp_path_factory, hub, lines):
    tmp = tmp_path_factory.mktemp(f"hostile-run-{next(_runs)}")
    check_batch(tmp, lines)
    check_stream(tmp, lines, hub)

