"""End-to-end checks of runners.eventhubs_local driven ONLY by the real azure-eventhub clients (sync API).

Every receive runs in a helper thread that is stopped by closing its client once the expected number of
events has arrived (plus a short grace period to catch duplicates) or a deadline passed, so no test hangs.
Each test's endpoint is stopped in a fixture ``finally``; ``_no_leftover_threads`` checks nothing survives.
"""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from azure.eventhub import (EventData, EventHubConsumerClient, EventHubProducerClient,
                            LoadBalancingStrategy)

from runners.eventhubs_local import LocalEventHubs, partition_for_key
from tests._waiting import wait_until

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
UTC = datetime.timezone.utc
PARTITIONS = 4
RECEIVE_DEADLINE_S = 20.0
DUPLICATE_GRACE_S = 0.4
CLIENT_KW = dict(retry_total=1, retry_backoff_factor=0.1)


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def _no_leftover_threads():
    before = {t.ident for t in threading.enumerate()}
    yield

    # LocalEventHubs.stop() joins its loop thread, so once the test's endpoints are stopped none is left
    extra = [t for t in threading.enumerate()
             if t.ident not in before and t.is_alive() and t.name.startswith("eventhubs-local")]
    assert not extra, f"endpoint threads left running: {extra}"


@pytest.fixture
def hubs(tmp_path):
    eh = LocalEventHubs(tmp_path / "eh", hub="reviews", partitions=PARTITIONS,
                        consumer_groups=("$Default", "analytics"))
    eh.start()
    try:
        yield eh
    finally:
        eh.stop()


def _producer(eh: LocalEventHubs) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(eh.connection_string, **CLIENT_KW)


def _send(eh: LocalEventHubs, bodies, **batch_kw) -> None:
    """Send ``bodies`` as one batch with a fresh producer (connecting costs ~1.3 s with pyamqp)."""
    with _producer(eh) as producer:
        _send_with(producer, bodies, **batch_kw)


def _send_with(producer: EventHubProducerClient, bodies, **batch_kw) -> None:
    batch = producer.create_batch(**batch_kw)
    for body in bodies:
        batch.add(body if isinstance(body, EventData) else EventData(body))
    producer.send_batch(batch)


def _receive(eh: LocalEventHubs, expected: int, starting_position="-1", *, consumer_group="$Default",
             partition_id=None, inclusive=False, deadline_s=RECEIVE_DEADLINE_S, on_started=None):
    """Receive with ``receive_batch`` until ``expected`` events (then a duplicate grace) or the deadline.

    Returns a list of ``(partition_id, sequence_number, offset, enqueued_time, body bytes, event)``.
    ``on_started(events)`` is called repeatedly (every ~0.2 s) from this thread while receiving, and may
    return True to count as "done" (used by the live-tail test).
    """
    client = EventHubConsumerClient.from_connection_string(
        eh.connection_string, consumer_group=consumer_group, load_balancing_interval=1,
        load_balancing_strategy=LoadBalancingStrategy.GREEDY, **CLIENT_KW)
    got: list = []
    lock = threading.Lock()
    enough = threading.Event()
    errors: list = []

    def on_batch(ctx, events):
        with lock:
            for ev in events:
                got.append((ctx.partition_id, ev.sequence_number, ev.offset, ev.enqueued_time,
                            b"".join(ev.body), ev))
            if len(got) >= expected:
                enough.set()

    def on_error(ctx, exc):
        errors.append(exc)

    kwargs = dict(on_event_batch=on_batch, on_error=on_error, max_wait_time=0.5, max_batch_size=100,
                  starting_position=starting_position, starting_position_inclusive=inclusive)
    if partition_id is not None:
        kwargs["partition_id"] = partition_id
    worker = threading.Thread(target=client.receive_batch, kwargs=kwargs, name="eh-test-receiver", daemon=True)
    worker.start()
    try:
        def done():
            if enough.is_set() or on_started is None:
                return enough.is_set()
            with lock:
                snapshot = list(got)
            return on_started(snapshot)

        wait_until(done, deadline_s, interval_s=0.2)
        if enough.is_set():
            time.sleep(DUPLICATE_GRACE_S)                  # anything extra would be a duplicate
    finally:
        client.close()
        worker.join(10)
    assert not worker.is_alive(), "consumer thread did not stop"
    with lock:
        return list(got), errors


def _receive_concurrently(eh: LocalEventHubs, specs: dict) -> dict:
    """Run several ``_receive(eh, **spec)`` at once (each with its own client); name -> events."""
    results: dict = {}

    def run(name, spec):
        spec = dict(spec)
        results[name] = _receive(eh, spec.pop("expected"), spec.pop("starting_position"), **spec)[0]

    threads = [threading.Thread(target=run, args=item, name=f"eh-test-{item[0]}") for item in specs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RECEIVE_DEADLINE_S + 15)
        assert not t.is_alive()
    return results


def _by_partition(received):
    out: dict = {}
    for pid, seq, offset, _t, body, _ev in received:
        out.setdefault(pid, []).append((seq, body))
    return {pid: sorted(v) for pid, v in out.items()}


# ------------------------------------------------------------------------------------------ tests
def test_connection_string_and_properties(hubs):
    assert hubs.connection_string == (
        f"Endpoint=sb://127.0.0.1:{hubs.port};SharedAccessKeyName=local;SharedAccessKey=local;"
        f"UseDevelopmentEmulator=true;EntityPath=reviews")
    with _producer(hubs) as producer:
        props = producer.get_eventhub_properties()
        assert props["eventhub_name"] == "reviews"
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        assert isinstance(props["created_at"], datetime.datetime)
        assert producer.get_partition_ids() == ["0", "1", "2", "3"]
        empty = producer.get_partition_properties("1")
        assert empty["is_empty"] is True
        assert empty["last_enqueued_sequence_number"] == -1
        batch = producer.create_batch(partition_id="1")
        for i in range(3):
            batch.add(EventData(f"p1-{i}"))
        before = datetime.datetime.now(UTC) - datetime.timedelta(seconds=1)
        producer.send_batch(batch)
        part = producer.get_partition_properties("1")
        assert part["id"] == "1" and part["eventhub_name"] == "reviews"
        assert part["beginning_sequence_number"] == 0
        assert part["last_enqueued_sequence_number"] == 2
        assert part["is_empty"] is False
        assert int(part["last_enqueued_offset"]) > 0
        assert part["last_enqueued_time_utc"] >= before
        assert producer.get_partition_properties("0")["is_empty"] is True
        # the consumer client reads the same management data
    consumer = EventHubConsumerClient.from_connection_string(hubs.connection_string, "$Default", **CLIENT_KW)
    with consumer:
        assert consumer.get_partition_ids() == ["0", "1", "2", "3"]
        assert consumer.get_partition_properties("1")["last_enqueued_sequence_number"] == 2


def test_routing_and_receive_everything_once_from_earliest(hubs):
    explicit = [f"explicit-{i}".encode() for i in range(5)]
    keyed_a = [f"alpha-{i}".encode() for i in range(4)]
    keyed_a2 = [f"alpha-late-{i}".encode() for i in range(2)]
    keyed_b = [f"beta-{i}".encode() for i in range(3)]
    round_robin = [f"rr-{i}".encode() for i in range(8)]
    with _producer(hubs) as producer:
        _send_with(producer, explicit, partition_id="2")
        _send_with(producer, keyed_a, partition_key="alpha")
        _send_with(producer, keyed_b, partition_key="beta")
        _send_with(producer, keyed_a2, partition_key="alpha")
        _send_with(producer, round_robin)
        # a single event (not a batch) through send_event, with a key
        producer.send_event(EventData(b"single-alpha"), partition_key="alpha")
    sent = explicit + keyed_a + keyed_b + keyed_a2 + round_robin + [b"single-alpha"]

    received, errors = _receive(hubs, len(sent), "-1")
    assert not errors
    bodies = [r[4] for r in received]
    assert sorted(bodies) == sorted(sent), "every body exactly once"
    where = {r[4]: r[0] for r in received}
    assert {where[b] for b in explicit} == {"2"}
    alpha_pid = str(partition_for_key(b"alpha", PARTITIONS))
    assert {where[b] for b in keyed_a + keyed_a2 + [b"single-alpha"]} == {alpha_pid}
    assert len({where[b] for b in keyed_b}) == 1
    rr_counts = {pid: sum(where[b] == pid for b in round_robin) for pid in ["0", "1", "2", "3"]}
    assert sorted(rr_counts.values()) == [2, 2, 2, 2], rr_counts
    for pid, events in _by_partition(received).items():
        assert [seq for seq, _ in events] == list(range(len(events))), pid
    # offsets grow with the sequence number, and partition keys come back
    for pid in ["0", "1", "2", "3"]:
        offsets = [int(r[2]) for r in sorted((r for r in received if r[0] == pid), key=lambda r: r[1])]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    keyed = [r[5] for r in received if r[4] in keyed_a]
    assert all(ev.partition_key == b"alpha" for ev in keyed)


def test_starting_positions_sequence_offset_time_latest(hubs):
    first = [f"first-{i}".encode() for i in range(5)]
    second = [f"second-{i}".encode() for i in range(5)]
    _send(hubs, first, partition_id="0")
    time.sleep(0.05)
    between = datetime.datetime.now(UTC)
    time.sleep(0.05)
    _send(hubs, second, partition_id="0")
    everything = first + second

    all_events, _ = _receive(hubs, 10, "-1", partition_id="0")
    offset_of = {r[1]: r[2] for r in all_events}
    results = _receive_concurrently(hubs, {
        "exclusive": dict(expected=6, starting_position=3, partition_id="0"),
        "inclusive": dict(expected=7, starting_position=3, partition_id="0", inclusive=True),
        "time": dict(expected=5, starting_position=between, partition_id="0"),
        "offset": dict(expected=5, starting_position=offset_of[4], partition_id="0"),   # str: after event 4
    })
    exclusive = results["exclusive"]
    assert [(r[1], r[4]) for r in sorted(exclusive, key=lambda r: r[1])] == list(zip(range(4, 10), everything[4:]))
    assert sorted(r[1] for r in results["inclusive"]) == list(range(3, 10))
    by_time = results["time"]
    assert sorted(r[4] for r in by_time) == sorted(second)
    # enqueued times are whole epoch milliseconds: every event read from `between` was enqueued at or after it
    floor_ms = int(between.timestamp() * 1000)
    assert all(int(r[3].timestamp() * 1000) >= floor_ms - 1 for r in by_time)
    assert sorted(r[1] for r in results["offset"]) == [5, 6, 7, 8, 9]

    # live tail from @latest: keep publishing probes until the receiver sees one; none of the older
    # events may show up, and every probe after the first one seen must arrive (in order).
    probes: list[bytes] = []
    with _producer(hubs) as producer:
        producer.send_batch([EventData(b"warm-up")], partition_id="0")    # connects before the loop

        def probe(snapshot):
            if len(snapshot) >= 3:
                return True
            body = f"probe-{len(probes)}".encode()
            probes.append(body)
            producer.send_batch([EventData(body)], partition_id="0")
            return False

        tail, _ = _receive(hubs, 3, "@latest", partition_id="0", on_started=probe, deadline_s=20)
    seqs = [r[1] for r in tail]
    assert len(tail) >= 3 and seqs == sorted(seqs) and min(seqs) >= 11
    assert not {r[4] for r in tail} & set(everything)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_live_tail_and_two_consumer_groups(hubs):
    bodies = [f"cg-{i}".encode() for i in range(12)]
    _send(hubs, bodies[:6])
    results: dict = {}

    def run(group):
        results[group] = _receive(hubs, len(bodies), "-1", consumer_group=group)

    threads = [threading.Thread(target=run, args=(g,), name=f"eh-test-{g}") for g in ("$Default", "analytics")]
    for t in threads:
        t.start()
    time.sleep(1.0)
    _send(hubs, bodies[6:])        # events sent while the receivers are attached (live tail)
    for t in threads:
        t.join(RECEIVE_DEADLINE_S + 15)
        assert not t.is_alive()
    for group in ("$Default", "analytics"):
        received, errors = results[group]
        assert sorted(r[4] for r in received) == sorted(bodies), group


def test_unknown_consumer_group_is_refused(hubs):
    _send(hubs, [b"x"])
    received, _errors = _receive(hubs, 1, "-1", consumer_group="nope", partition_id="0", deadline_s=2)
    assert received == []   # the link is refused with amqp:not-found (the SDK retries/logs it internally)


def test_durable_across_restart(tmp_path):
    data_dir = tmp_path / "eh"
    bodies = [f"durable-{i}".encode() for i in range(20)]
    first = LocalEventHubs(data_dir, partitions=PARTITIONS)
    try:
        first.start()
        with _producer(first) as producer:
            _send_with(producer, bodies[:8])
            _send_with(producer, bodies[8:14], partition_key="k")
            _send_with(producer, bodies[14:], partition_id="3")
            created = producer.get_eventhub_properties()["created_at"]
        before, _ = _receive(first, len(bodies), "-1")
    finally:
        first.stop()
    first.stop()                                                          # idempotent
    assert len(before) == len(bodies)

    second = LocalEventHubs(data_dir, partitions=PARTITIONS)
    try:
        second.start()
        after, _ = _receive(second, len(bodies), "-1")
        key = lambda r: (r[0], r[1])                                       # noqa: E731
        assert [(r[0], r[1], r[2], r[3], r[4]) for r in sorted(after, key=key)] == \
               [(r[0], r[1], r[2], r[3], r[4]) for r in sorted(before, key=key)]
        with _producer(second) as producer:
            assert producer.get_eventhub_properties()["created_at"] == created
            last3 = producer.get_partition_properties("3")["last_enqueued_sequence_number"]
            _send_with(producer, [b"after-restart"], partition_id="3")
        more, _ = _receive(second, 1, last3, partition_id="3")
        assert [(r[1], r[4]) for r in more] == [(last3 + 1, b"after-restart")]
    finally:
        second.stop()
    with pytest.raises(ValueError, match="partitions"):
        LocalEventHubs(data_dir, partitions=2).start()


def test_binary_and_large_bodies_round_trip(hubs):
    binary = bytes(range(256)) * 3
    invalid_utf8 = b"\xff\xfe\x00\xc3\x28\xa0\xa1\x80"
    large = os.urandom(200 * 1024)
    events = [EventData(binary), EventData(invalid_utf8), EventData(large), EventData(b"")]
    events[0].properties = {"kind": "binary", "n": 7}
    events[0].content_type = "application/octet-stream"
    with _producer(hubs) as producer:
        _send_with(producer, events[:2], partition_id="1")
        _send_with(producer, events[2:3], partition_id="1")
        _send_with(producer, events[3:], partition_id="1")
    received, errors = _receive(hubs, 4, "-1", partition_id="1")
    assert not errors
    ordered = sorted(received, key=lambda r: r[1])
    assert [r[4] for r in ordered] == [binary, invalid_utf8, large, b""]
    first = ordered[0][5]
    assert first.properties == {b"kind": b"binary", b"n": 7}
    assert first.content_type == "application/octet-stream"


def test_cli_help_and_serve(tmp_path):
    help_out = subprocess.run([sys.executable, "-m", "runners.eventhubs_local", "serve", "--help"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert help_out.returncode == 0
    for option in ("--data-dir", "--port", "--hub", "--partitions", "--consumer-group"):
        assert option in help_out.stdout
    proc = subprocess.Popen([sys.executable, "-m", "runners.eventhubs_local", "serve", "--data-dir",
                             str(tmp_path / "cli"), "--port", "0", "--hub", "cli-hub", "--partitions", "2"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a suite started in the background by a shell without job
                            # control inherits SIGINT ignored, and Python then installs no Ctrl-C handler
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("Endpoint=sb://127.0.0.1:") and line.endswith("EntityPath=cli-hub"), line
        with EventHubProducerClient.from_connection_string(line, **CLIENT_KW) as producer:
            assert producer.get_partition_ids() == ["0", "1"]
    finally:
        proc.send_signal(signal.SIGINT)  # as Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # hung: dump its threads' stacks into stderr, then kill it
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, proc.stderr.read()
