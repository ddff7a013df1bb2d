"""End to end: bad events, poison events included (600-level nesting, review times of 2**62 and 1e12 s
that once crashed every restart), through the whole streaming job (``beam_pipeline.pipeline.run`` in-process,
``--source=eventhub``) against the local Event Hubs endpoint, published with the real producer client.

Events go to explicit partitions in a known order, so every event's (partition, sequence number) is known
(each partition starts at 0). The job's outputs are read back with json / pyarrow and compared with what
was published: each bad event is a dead letter with its reason, stage, source and position, and its raw
body as payload; each good one is a silver row at its position; the run summary reconciles
(``records_read = silver + dead letters + duplicates`` and ``records_read`` = events published).

The endpoint is served from a child process (``python -m runners.eventhubs_local serve``), as in
``test_eventhub_source.py``: in this process its asyncio thread would compete for the GIL with the job
and the job's receiver threads.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubProducerClient

from beam_pipeline.pipeline import run
from runners.local_stack import EventHubsEndpoint
from tests.e2e import _outputs

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = "EVENTHUB_CONNECTION_STRING"
HUB = "reviews"
CLIENT_KW = dict(retry_total=1, retry_backoff_factor=0.1)
T0 = 1_400_000_000                       # 2014-05-13


# ------------------------------------------------------------------------------------------ helpers
def served_hub(data_dir: Path, partitions: int) -> EventHubsEndpoint:
    """The local endpoint served from a child process (see tests/e2e/test_eventhub_source.py)."""
    return EventHubsEndpoint(data_dir, partitions=partitions, fsync=False).start()


def producer(eh: EventHubsEndpoint) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(eh.connection_string, **CLIENT_KW)


def send(producer: EventHubProducerClient, partition: str, bodies: list[bytes]) -> None:
    """One send_batch to an explicit partition (the bodies keep their order: consecutive sequence numbers)."""
    batch = producer.create_batch(partition_id=partition)
    for body in bodies:
        batch.add(EventData(body))
    producer.send_batch(batch)


def review(i: int, **overrides) -> dict:
    obj = {"asin": f"B{i:09d}", "reviewerID": f"R{i:06d}", "overall": 1 + i % 5,
           "unixReviewTime": T0 + 86400 * i, "reviewText": f"review number {i}", "summary": f"summary {i}"}
    obj.update(overrides)
    return obj


def body_of(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def run_job(hub: EventHubsEndpoint, output: Path, *extra: str) -> dict:
    argv = ["--source=eventhub", f"--output={output}", "--run_id=test", "--start_position=earliest",
            "--max_record_bytes=2048", *extra]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, hub.connection_string)
        return run(argv)


def dead_letters(output: Path) -> list[dict]:
    """The committed dead-letter table's rows (without run_id), as the job wrote them."""
    if not _outputs.is_delta(output, "dead_letters"):
        return []
    return _outputs.dead_letters(output)


def silver_rows(output: Path) -> list[dict]:
    if not _outputs.is_delta(output):
        return []
    return _outputs.silver_reviews(output).to_pylist()


def source(partition: str) -> str:
    return f"eventhub:{HUB}/{partition}"


def assert_reconciled(summary: dict, published: int):
    r = summary["reviews"]
    assert r["records_read"] == published, r
    assert r["records_read"] == r["silver_rows"] + r["dead_letters"] + r["duplicates_dropped"], r
    assert r["reconciled"] is True
    assert summary["eventhub"]["events_read"] == published


# ------------------------------------------------------------------------------------------ bad events
GOOD = [review(i) for i in range(6)]
PRETTY = review(10, reviewText="pretty printed,\tover several lines")
DUPLICATE = review(20)
TWICE = review(21)                                         # sent twice in a row to one partition
HUGE = review(30, reviewText="x" * 3000)                   # valid JSON, > --max_record_bytes=2048
# poison events (issue 21): once they crashed the job at every restart, blocking their partition
DEEP = b'{"asin":"B000000050","reviewerID":"R000050","overall":5,"unixReviewTime":1400000000,"style":' \
    + b"[" * 600 + b"]" * 600 + b"}"                                       # nested 600 levels deep
FAR_FUTURE = review(51, unixReviewTime=2 ** 62)                           # crashed the timestamp cast
YEAR_31878 = review(52, unixReviewTime=10 ** 12)                          # landed in year=-31878 once

# partition -> [(body, expected (stage, reason) or "silver" or "duplicate")], in publishing order.
# DUPLICATE is sent to two partitions: one copy (either) is a silver row, the other is dropped; TWICE is
# sent twice in a row to one partition: one copy is the silver row
EVENTS: dict[str, list[tuple[bytes, object]]] = {
    "0": [(body_of(GOOD[0]), "silver"),
          (b"hello", ("parse", "malformed_json")),
          (b"<html>503</html>", ("parse", "html_payload")),
          (body_of(GOOD[1]), "silver"),
          (b"\xff\xfe\x00garbage", ("parse", "invalid_utf8")),
          (body_of(DUPLICATE), "duplicate")],
    "1": [(body_of(HUGE), ("parse", "too_large")),
          (body_of(GOOD[2]), "silver"),
          (DEEP, ("parse", "too_deep")),
          (body_of(FAR_FUTURE), ("parse", "review_time_out_of_range")),
          (body_of(YEAR_31878), ("parse", "review_time_out_of_range")),
          (body_of({"asin": "X"}), ("clean", "missing_reviewer_id")),
          (body_of(review(40, overall="five")), ("clean", "overall_not_numeric")),
          (body_of(TWICE), "silver"),
          (body_of(TWICE), "duplicate"),
          (body_of({k: v for k, v in review(41).items() if k != "unixReviewTime"}), ("clean", "missing_review_time")),
          (body_of(review(42, overall=0)), ("clean", "overall_out_of_range"))],
    "2": [(b"", ("parse", "empty_event")),
          (b'[{"asin":"B1","reviewerID":"R1","overall":5,"unixReviewTime":1400000000}]', ("parse", "not_an_object")),
          (json.dumps(PRETTY, indent=2).encode(), "silver"),          # raw newlines between the tokens
          (body_of(GOOD[3]), "silver")],
    "3": [(body_of(GOOD[4]) + b"\n", "silver"),                   # a producer that kept the line end
          (b'"just a string"', ("parse", "not_an_object")),
          (body_of(DUPLICATE), "duplicate"),
          (b"  \r\n ", ("parse", "empty_event")),                     # whitespace only
          (body_of(GOOD[5]), "silver")],
}
N_PUBLISHED = sum(len(v) for v in EVENTS.values())


@pytest.fixture(scope="module")
def bad_events_run(tmp_path_factory):
    """EVENTS published before the job (one send per partition), then one run of the whole job from the
    earliest events, with windows and out-of-orderness wide enough (10 years) that nothing is late."""
    hub = served_hub(tmp_path_factory.mktemp("eh-bad") / "eh", partitions=4)
    try:
        with producer(hub) as client:
            for pid, events in EVENTS.items():
                send(client, pid, [body for body, _ in events])
        output = tmp_path_factory.mktemp("bad-out")
        summary = run_job(hub, output, "--stop_after_idle_s=1.5", "--window_size=3650d",
                          "--max_out_of_orderness=3650d")
        return summary, output
    finally:
        hub.stop()


def test_summary_reconciles_with_what_was_published(bad_events_run):
    summary, output = bad_events_run
    assert_reconciled(summary, N_PUBLISHED)
    r = summary["reviews"]
    expected_dead = sum(1 for events in EVENTS.values() for _, want in events if isinstance(want, tuple))
    assert r["dead_letters"] == expected_dead
    assert r["duplicates_dropped"] == 2
    assert r["silver_rows"] == sum(1 for events in EVENTS.values() for _, want in events if want == "silver") + 1
    by_reason: dict = {}
    for events in EVENTS.values():
        for _, want in events:
            if isinstance(want, tuple):
                key = f"{want[0]}.{want[1]}"
                by_reason[key] = by_reason.get(key, 0) + 1
    assert r["dead_letters_by_reason"] == by_reason
    # the checkpoint holds the last sequence number of every partition
    assert {pid: v["sequence_number"] for pid, v in summary["eventhub"]["checkpoint"].items()} == \
           {pid: len(events) - 1 for pid, events in EVENTS.items()}
    logged = {k: v for k, v in summary.items() if k not in ("commit_seconds", "table_versions")}  # known after
    assert _outputs.run_summary(output) == json.loads(json.dumps(logged, sort_keys=True, default=str))


def test_each_bad_event_is_a_dead_letter_at_its_position(bad_events_run):
    _, output = bad_events_run
    letters = dead_letters(output)
    got = {(d["source"], d["source_position"]): d for d in letters}
    assert len(got) == len(letters), "a position was dead-lettered twice"
    expected = {(source(pid), seq): (body, want) for pid, events in EVENTS.items()
                for seq, (body, want) in enumerate(events) if isinstance(want, tuple)}
    assert sorted(got) == sorted(expected)
    for key, (body, (stage, reason)) in expected.items():
        d = got[key]
        assert set(d) >= {"record_type", "stage", "reason", "detail", "source", "source_position", "payload",
                          "payload_bytes", "payload_truncated"}, d
        assert (d["record_type"], d["stage"], d["reason"]) == ("review", stage, reason), (key, d)
        raw = body.rstrip(b"\r\n")
        assert d["payload_bytes"] == len(raw), (key, d)
        assert d["payload_truncated"] is False
        # the raw body, invalid UTF-8 bytes as \xNN escapes
        assert d["payload"] == raw.decode("utf-8", "backslashreplace"), (key, d["payload"][:80])
    assert got[(source("0"), 4)]["payload"] == "\\xff\\xfe\x00garbage"
    assert got[(source("2"), 0)]["payload"] == "" and got[(source("2"), 0)]["payload_bytes"] == 0


def test_good_events_are_silver_rows_at_their_positions(bad_events_run):
    _, output = bad_events_run
    rows = silver_rows(output)
    at = {(r["source"], r["source_position"]): r for r in rows}
    assert len(at) == len(rows)
    expected = {(source(pid), seq): json.loads(body) for pid, events in EVENTS.items()
                for seq, (body, want) in enumerate(events)
                if want == "silver" or (want == "duplicate" and json.loads(body) == DUPLICATE)}
    copies = [key for key in expected if expected[key] == DUPLICATE]
    assert len(copies) == 2 and sum(key in at for key in copies) == 1, copies
    expected.pop(copies[0] if copies[1] in at else copies[1])
    assert sorted(at) == sorted(expected)
    for key, obj in expected.items():
        row = at[key]
        assert (row["asin"], row["reviewer_id"], row["overall"], row["unix_review_time"]) == \
               (obj["asin"], obj["reviewerID"], float(obj["overall"]), obj["unixReviewTime"]), key
        assert row["review_text"] == obj["reviewText"] and row["summary"] == obj["summary"], key
        when = datetime.datetime.fromtimestamp(obj["unixReviewTime"], datetime.timezone.utc)
        assert (row["year"], row["month"]) == (when.year, when.month), key


def test_pretty_printed_json_parses(bad_events_run):
    _, output = bad_events_run
    rows = [r for r in silver_rows(output) if r["reviewer_id"] == PRETTY["reviewerID"]]
    assert [(r["source"], r["source_position"], r["review_text"]) for r in rows] == \
           [(source("2"), 2, PRETTY["reviewText"])]


def test_a_review_sent_twice_is_one_silver_row(bad_events_run):
    summary, output = bad_events_run
    rows = silver_rows(output)

    def copies(obj):
        return [(r["source"], r["source_position"]) for r in rows
                if (r["asin"], r["reviewer_id"]) == (obj["asin"], obj["reviewerID"])]

    assert len(copies(DUPLICATE)) == 1 and copies(DUPLICATE)[0] in {(source("0"), 5), (source("3"), 2)}
    twice_at = {(source("1"), seq) for seq, (body, _) in enumerate(EVENTS["1"]) if body == body_of(TWICE)}
    assert len(twice_at) == 2
    assert len(copies(TWICE)) == 1 and copies(TWICE)[0] in twice_at
    assert summary["reviews"]["duplicates_dropped"] == 2
    assert not [d for d in dead_letters(output) if d["payload"] in (body_of(DUPLICATE).decode(),
                                                                    body_of(TWICE).decode())]


# ------------------------------------------------------------------------------------------ too late
HOUR = 3600
T_LATE = T0 - T0 % HOUR + 600                      # 10 minutes into an hour window
LATE_OOO_S = 60
LATE_WAIT_S = 4.0                                  # after the start positions are resolved
LATE_STOP_AFTER_IDLE_S = 6.0


@pytest.fixture(scope="module")
def too_late_run(tmp_path_factory):
    """One partition: a review at T and one at T+10h (the watermark moves to T+10h-60s once they are
    read), then - sent while the job runs, LATE_WAIT_S after it resolved its start positions, by when it
    has long read the first two - a review at T again: its only window [T0, T0+1h) closed at the
    watermark, so it is a dead letter too_late at stage window."""
    hub = served_hub(tmp_path_factory.mktemp("eh-late") / "eh", partitions=1)
    try:
        first = body_of(review(1, unixReviewTime=T_LATE))
        second = body_of(review(2, unixReviewTime=T_LATE + 10 * HOUR))
        late = body_of(review(3, unixReviewTime=T_LATE))
        client = producer(hub)
        errors: list = []
        resolved = threading.Event()

        class _Resolved(logging.Handler):
            def emit(self, record):
                if "reading from sequence number" in record.getMessage():
                    resolved.set()

        def publish_late():
            try:
                assert resolved.wait(60), "the job did not resolve its start position"
                time.sleep(LATE_WAIT_S)
                send(client, "0", [late])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        log = logging.getLogger("reviews")
        handler, old_level = _Resolved(level=logging.INFO), log.level
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            send(client, "0", [first])
            send(client, "0", [second])
            publisher = threading.Thread(target=publish_late, name="too-late-publisher", daemon=True)
            publisher.start()
            output = tmp_path_factory.mktemp("late-out")
            summary = run_job(hub, output, f"--stop_after_idle_s={LATE_STOP_AFTER_IDLE_S}", "--window_size=1h",
                              f"--max_out_of_orderness={LATE_OOO_S}", "--allowed_lateness=0")
            publisher.join(30)
        finally:
            log.removeHandler(handler)
            log.setLevel(old_level)
            client.close()
        assert not errors, errors
        return summary, output, (first, second, late)
    finally:
        hub.stop()


def test_an_event_whose_window_closed_is_a_too_late_dead_letter(too_late_run):
    summary, output, (first, second, late) = too_late_run
    assert_reconciled(summary, 3)
    assert summary["reviews"]["dead_letters_by_reason"] == {"window.too_late": 1}, summary["reviews"]
    letters = dead_letters(output)
    assert len(letters) == 1, letters
    d = letters[0]
    assert (d["record_type"], d["stage"], d["reason"]) == ("review", "window", "too_late")
    assert (d["source"], d["source_position"]) == (source("0"), 2)
    assert d["payload"] == late.decode() and d["payload_bytes"] == len(late) and not d["payload_truncated"]
    assert str(T_LATE + 10 * HOUR - LATE_OOO_S) in d["detail"], d["detail"]     # the watermark it met
    rows = silver_rows(output)
    assert sorted((r["source_position"], r["unix_review_time"]) for r in rows) == \
           [(0, T_LATE), (1, T_LATE + 10 * HOUR)]
    assert summary["eventhub"]["checkpoint"]["0"]["sequence_number"] == 2


def test_make_run_may_replace_what_a_streaming_run_wrote(bad_events_run, tmp_path):
    """``make run`` empties its streaming output before the leg, unless the folder holds something the job
    does not write (runners.demo.stream_output_problem): every top folder a real streaming run wrote,
    insights included, counts as the job's own, so a second ``make run`` goes through; anything else is
    refused."""
    from runners import demo
    _, output = bad_events_run
    assert {"silver", "gold", "insights", "_pipeline"} <= set(os.listdir(output))
    assert demo.stream_output_problem(output) is None
    (tmp_path / "silver").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    problem = demo.stream_output_problem(tmp_path)
    assert problem is not None and "notes.txt" in problem and "silver" not in problem


# ------------------------------------------------------------------------------------------ a failed expectation
def test_a_fail_expectation_commits_nothing_and_the_events_are_read_again(tmp_path):
    """An expectation with action "fail" that a streaming run's rows do not meet stops the run before its
    commit: the error names the expectation and its row count, no table and no partition position moves,
    and the next run (the expectation back to its default, warn) reads the same events from the start."""
    from beam_pipeline import tables

    hub = served_hub(tmp_path / "eh", partitions=2)
    try:
        bodies = {"0": [body_of(review(60)), body_of(review(61, reviewText="   ", summary=""))],
                  "1": [body_of(review(62)), body_of(review(63, reviewText=""))]}
        with producer(hub) as client:
            for pid, events in bodies.items():
                send(client, pid, events)
        output = tmp_path / "out"
        wide = ("--stop_after_idle_s=1.5", "--window_size=3650d", "--max_out_of_orderness=3650d")
        with pytest.raises(tables.ExpectationFailed, match=r"empty_review_text on 2 rows.*read again"):
            run_job(hub, output, *wide, "--expectation=empty_review_text=fail")
        assert not _outputs.is_delta(output)
        assert tables.table_version(tables.Location(str(output)), tables.EVENTS) is None or not [
            e for e in tables.events(tables.Location(str(output))) if e["event"] == "committed"]

        summary = run_job(hub, output, *wide)
        assert_reconciled(summary, 4)
        assert summary["expectations"]["empty_review_text"]["failed_rows"] == 2
        assert sorted(r["asin"] for r in silver_rows(output)) == [f"B{i:09d}" for i in (60, 61, 62, 63)]
        assert {pid: v["sequence_number"] for pid, v in summary["eventhub"]["checkpoint"].items()} == {"0": 1, "1": 1}
    finally:
        hub.stop()
