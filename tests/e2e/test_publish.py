"""End-to-end checks of the replay publisher ``runners.publish`` against the local Event Hubs endpoint.

Events are read back with the real ``EventHubConsumerClient`` from the start of the partitions: one
client per partition, concurrently; each test says how many events each partition should hold, and a
short grace period after they arrived lets extra events show up. Each test starts its own endpoint
(``fsync=False``: throwaway data) in a tmp dir and stops it in a fixture ``finally``; every receiver is
stopped by closing its client once its partition's events arrived or a deadline passed, so no test hangs.
A few pure helpers are tested without an endpoint.
"""
from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pytest
from azure.eventhub import EventHubConsumerClient

from runners.eventhubs_local import LocalEventHubs, partition_for_key
from runners.publish import (PublishError, TokenBucket, iter_events, main, parse_rate, publish,
                             redact, shuffle_blocks)
from tests._waiting import wait_until

pytestmark = pytest.mark.e2e

HUB_PARTITIONS = 4
RECEIVE_DEADLINE_S = 20.0
EXTRA_GRACE_S = 0.3
CLIENT_KW = dict(retry_total=1, retry_backoff_factor=0.1)


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def hubs(tmp_path):
    eh = LocalEventHubs(tmp_path / "eh", hub="reviews", partitions=HUB_PARTITIONS, fsync=False)
    eh.start()
    try:
        yield eh
    finally:
        eh.stop()


class _PartitionReader:
    """Reads partition ``pid`` from "-1" with its own consumer client in a daemon thread."""

    def __init__(self, eh: LocalEventHubs, pid: str, expected: int):
        self.pid, self.expected = pid, expected
        self.client = EventHubConsumerClient.from_connection_string(eh.connection_string, "$Default", **CLIENT_KW)
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.enough = threading.Event()
        if expected == 0:
            self.enough.set()
        self.thread = threading.Thread(
            target=self.client.receive_batch, name=f"publish-test-receiver-{pid}", daemon=True,
            kwargs=dict(on_event_batch=self._on_batch, partition_id=pid, starting_position="-1",
                        max_wait_time=0.5, max_batch_size=200))

    def _on_batch(self, ctx, events):
        with self.lock:
            for ev in events:
                self.events.append({"partition": ctx.partition_id, "seq": ev.sequence_number,
                                    "body": b"".join(ev.body), "enqueued": ev.enqueued_time,
                                    "key": ev.partition_key})
            if len(self.events) >= self.expected:
                self.enough.set()

    def stop(self) -> None:
        self.client.close()
        self.thread.join(10)


def _receive(eh: LocalEventHubs, expected: dict[str, int], *, every_partition: bool = False) -> list[dict]:
    """The events of the partitions in ``expected`` (or of every partition), read from "-1" concurrently.

    One consumer per partition (idle readers slow the others down, so partitions expected empty are
    read only with ``every_partition``). Stops once each partition delivered its expected count and a
    short grace period passed (an extra event would then show up), or at the deadline; asserts the counts.
    """
    pids = [str(p) for p in range(eh.partitions)] if every_partition else [p for p, n in expected.items() if n]
    readers = [_PartitionReader(eh, pid, expected.get(pid, 0)) for pid in pids]
    try:
        for r in readers:
            r.thread.start()
        wait_until(lambda: all(r.enough.is_set() for r in readers), RECEIVE_DEADLINE_S, interval_s=0.1)
        time.sleep(EXTRA_GRACE_S)
    finally:
        stoppers = [threading.Thread(target=r.stop) for r in readers]    # closing takes ~0.4 s each
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
    assert not [r.pid for r in readers if r.thread.is_alive()], "consumer threads did not stop"
    got = {r.pid: len(r.events) for r in readers}
    assert got == {pid: expected.get(pid, 0) for pid in pids}, got
    return [ev for r in readers for ev in r.events]


def _by_partition(received: list[dict]) -> dict[str, list[bytes]]:
    """partition id -> bodies in sequence-number order."""
    out: dict = {}
    for r in sorted(received, key=lambda r: (r["partition"], r["seq"])):
        out.setdefault(r["partition"], []).append(r["body"])
    return out


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _reviews(n: int, prefix: str = "r") -> list[bytes]:
    return [json.dumps({"asin": f"{prefix}{i:04d}", "overall": 1 + i % 5}).encode() for i in range(n)]


# sample inputs: JSON, a line that is not UTF-8, blank lines, CRLF, no final newline, surrounding spaces
PLAIN = (b'{"asin": "A1", "overall": 5}\n'
         b'\n'
         b'\xff\xfe{bad\n'
         b'{"asin": "A2", "reviewText": "caf\xc3\xa9"}\r\n'
         b'   \t \n'
         b'{"asin": "A3"}')
GZIPPED = b'{"asin": "B1"}\n{"asin": "B2"}\n  {"asin": "B3"}  \n'
EXPECTED_BODIES = [b'{"asin": "A1", "overall": 5}', b'\xff\xfe{bad', b'{"asin": "A2", "reviewText": "caf\xc3\xa9"}',
                   b'{"asin": "A3"}', b'{"asin": "B1"}', b'{"asin": "B2"}', b'  {"asin": "B3"}  ']


@pytest.fixture
def sample_files(tmp_path) -> list[Path]:
    plain = tmp_path / "in" / "part-0.jsonl"
    plain.parent.mkdir()
    plain.write_bytes(PLAIN)
    gz = tmp_path / "in" / "part-1.jsonl.gz"
    gz.write_bytes(gzip.compress(GZIPPED))
    return [plain, gz]


# ------------------------------------------------------------------------------------------ pure helpers
def test_iter_events_raw_bytes_gzip_globs_and_blanks(sample_files, tmp_path):
    blanks = []
    assert list(iter_events(sample_files, on_blank=lambda: blanks.append(1))) == EXPECTED_BODIES
    assert len(blanks) == 2
    assert list(iter_events(str(tmp_path / "in" / "part-*.jsonl*"))) == EXPECTED_BODIES   # unexpanded glob
    with pytest.raises(PublishError, match="no file matches"):
        list(iter_events([str(tmp_path / "nothing-*.jsonl")]))
    with pytest.raises(PublishError, match="not a file"):
        list(iter_events([tmp_path / "missing.jsonl"]))


def test_parse_rate_shuffle_blocks_token_bucket_redact():
    assert parse_rate("200/s") == parse_rate("200") == parse_rate(200) == 200.0
    assert parse_rate("0") == 0.0 and parse_rate("0.5/s") == 0.5
    for bad in ("-1", "fast", "1/min", "nan"):
        with pytest.raises(ValueError):
            parse_rate(bad)

    items = list(range(23))
    shuffled = list(shuffle_blocks(items, 5, seed=3))
    assert shuffled == list(shuffle_blocks(items, 5, seed=3)) != items
    assert [sorted(shuffled[i:i + 5]) for i in range(0, 23, 5)] == [items[i:i + 5] for i in range(0, 23, 5)]
    assert list(shuffle_blocks(items, 5, seed=4)) != shuffled
    assert list(shuffle_blocks(items, 0)) == list(shuffle_blocks(items, 1)) == items

    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(100.0, capacity=10, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.acquire(10)                                 # 100 events at 100/s: >= 1 s of sleeping
    assert sum(slept) == pytest.approx(1.0)
    now[0] += 60                                           # idle: the burst stays capped at 10 events
    bucket.acquire(10)
    bucket.acquire(10)
    assert sum(slept) == pytest.approx(1.1)

    assert redact("Endpoint=sb://h/;SharedAccessKeyName=n;SharedAccessKey=s3cr3t;EntityPath=x") == \
        "Endpoint=sb://h/;SharedAccessKeyName=n;SharedAccessKey=***;EntityPath=x"


# ------------------------------------------------------------------------------------------ end to end
def test_round_robin_exact_bytes_partitions_and_counts(hubs, sample_files):
    stats = publish(hubs.connection_string, sample_files, partitions=2, batch_size=2, progress=False)
    assert (stats.sent, stats.blank_skipped, stats.rejected, stats.keyed) == (7, 2, 0, 0)
    assert stats.per_partition == {"0": 4, "1": 3}

    received = _receive(hubs, {"0": 4, "1": 3}, every_partition=True)
    assert _by_partition(received) == {"0": EXPECTED_BODIES[0::2], "1": EXPECTED_BODIES[1::2]}


def test_shuffle_window_bounded_and_deterministic(hubs, tmp_path):
    lines = _reviews(30)
    path = _write_lines(tmp_path / "reviews.jsonl", lines)
    for _ in range(2):                                     # the same seed twice, one partition: order kept
        stats = publish(hubs.connection_string, [path], partitions=1, shuffle_window=8, seed=11, progress=False)
        assert stats.sent == 30 and stats.per_partition == {"0": 30}
    order = _by_partition(_receive(hubs, {"0": 60}))["0"]
    first, second = order[:30], order[30:]
    assert first == second, "same seed, same order"
    assert first != lines, "the order was shuffled"
    for start in range(0, 30, 8):
        assert sorted(first[start:start + 8]) == sorted(lines[start:start + 8]), f"block at {start}"


def test_rate_limit_limit_and_batches_cut_at_the_size_limit(hubs, tmp_path, monkeypatch):
    """Every event passes through a token bucket at the requested rate (its pacing is checked with a fake
    clock in test_parse_rate_shuffle_blocks_token_bucket_redact: no wall-clock timing here)."""
    import runners.publish as pub
    buckets = []

    class RecordingBucket(pub.TokenBucket):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.acquired = 0
            buckets.append(self)

        def acquire(self, n):
            self.acquired += n
            super().acquire(n)

    monkeypatch.setattr(pub, "TokenBucket", RecordingBucket)
    lines = _reviews(150)
    # five 300 KiB reviews in the first send round (20 events at 200/s): 1.5 MB does not fit one batch
    lines[10:15] = [json.dumps({"asin": f"S{i}", "reviewText": "y" * (300 * 1024)}).encode() for i in range(5)]
    path = _write_lines(tmp_path / "reviews.jsonl", lines)
    stats = publish(hubs.connection_string, [path], rate="200/s", partitions=1, limit=100, progress=False)
    assert (stats.sent, stats.rejected, stats.per_partition) == (100, 0, {"0": 100})
    assert [(b.rate, b.acquired) for b in buckets] == [(200.0, 100)]
    received = _receive(hubs, {"0": 100})
    assert _by_partition(received) == {"0": lines[:100]}


def test_cli_key_routing_oversized_summary_json(hubs, tmp_path, monkeypatch, capsys):
    keyed = [json.dumps({"asin": asin, "n": i}).encode() for i, asin in enumerate(["K1", "K2", "K1", "K3", "K1"])]
    unkeyed = [b'{"no_asin": 1}', b'not json', b'{"asin": null}', b'{"asin": 17}']
    huge = b'{"asin": "BIG", "reviewText": "' + b"x" * (1100 * 1024) + b'"}'
    lines = [keyed[0], unkeyed[0], keyed[1], huge, unkeyed[1], keyed[2], unkeyed[2], keyed[3], keyed[4], unkeyed[3]]
    (tmp_path / "in").mkdir()
    _write_lines(tmp_path / "in" / "a.jsonl", lines)
    summary = tmp_path / "out" / "summary.json"
    without_hub = hubs.connection_string.replace(";EntityPath=reviews", "")
    assert "EntityPath" not in without_hub
    monkeypatch.setenv("MY_EH_CONN", without_hub)                     # the hub comes from --hub
    monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)

    rc = main(["--connection-string-env", "MY_EH_CONN", "--hub", "reviews", "--partition-key-field", "asin",
               "--partitions", "2", "--rate", "1000", "--summary-json", str(summary),
               str(tmp_path / "in" / "*.jsonl")])                      # a glob the shell did not expand
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "SharedAccessKey" not in out + err and without_hub not in out + err
    assert f"127.0.0.1:{hubs.port}" in out and "reviews" in out and "published 9 events" in out
    assert "rejected" in err and "a.jsonl:4" in err           # the oversized line, by file and line number
    result = json.loads(summary.read_text())
    # {"asin": 17} is keyed too (a number): 5 + 1 keyed, 3 round robin (0, 1, 0)
    assert {k: result[k] for k in ("sent", "blank_skipped", "rejected", "keyed", "per_partition")} == \
        {"sent": 9, "blank_skipped": 0, "rejected": 1, "keyed": 6, "per_partition": {"0": 2, "1": 1}}
    assert {"seconds", "events_per_s"} <= result.keys()                  # reported in the summary, not judged

    # where the endpoint puts a key (CRC-32 of the key modulo 4), plus the round robin over 0 and 1
    key_of = {k: json.loads(k)["asin"] for k in keyed} | {unkeyed[3]: "17"}
    expected_partition = {body: str(partition_for_key(key.encode(), HUB_PARTITIONS)) for body, key in key_of.items()}
    expected_partition |= dict(zip(unkeyed[:3], ["0", "1", "0"]))
    counts: dict = {}
    for pid in expected_partition.values():
        counts[pid] = counts.get(pid, 0) + 1
    received = _receive(hubs, counts)
    assert {r["body"]: r["partition"] for r in received} == expected_partition
    assert {r["body"]: r["key"] for r in received if r["key"] is not None} == \
        {body: key.encode() for body, key in key_of.items()}


def test_more_partitions_than_the_hub_has(hubs, tmp_path, monkeypatch, capsys):
    path = _write_lines(tmp_path / "reviews.jsonl", _reviews(3))
    with pytest.raises(PublishError, match=r"--partitions 5, but hub 'reviews' has 4 partition"):
        publish(hubs.connection_string, [path], partitions=5, progress=False)
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", hubs.connection_string)
    assert main(["--partitions", "6", "--quiet", str(path)]) == 2
    assert "has 4 partition(s)" in capsys.readouterr().err


def test_cli_missing_env_var_and_help(tmp_path, monkeypatch, capsys):
    path = _write_lines(tmp_path / "reviews.jsonl", _reviews(1))
    monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)
    assert main([str(path)]) == 2
    assert "EVENTHUB_CONNECTION_STRING is not set" in capsys.readouterr().err
    monkeypatch.delenv("OTHER_EH", raising=False)
    assert main(["--connection-string-env", "OTHER_EH", str(path)]) == 2
    assert "OTHER_EH is not set" in capsys.readouterr().err

    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--rate", "--partitions", "--partition-key-field", "--shuffle-window", "--seed", "--limit",
                   "--batch-size", "--connection-string-env", "--hub", "--summary-json", "--quiet",
                   "EVENTHUB_CONNECTION_STRING", "runners.eventhubs_local serve"):
        assert option in help_text, option
    assert main(["--rate", "fast", str(path)]) == 2                     # usage error
