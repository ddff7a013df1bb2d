"""The Event Hubs source: a splittable DoFn over a hub's partitions, on the real ``azure-eventhub`` client.

    Create([hub]) -> ResolvePartitions -> ReadPartitions (SDF) -> EventBatch

One element per partition. Its restriction is a range of sequence numbers ``[start, stop)``: ``start``
comes from ``--start_position`` (the last checkpoint by default), ``stop`` is ``start + --max_records``
or unbounded. Each ``process`` call claims and emits what arrived (one ``EventBatch`` of consecutive
events), then defers the rest of the range: the runner calls again, on Dataflow/Flink from any worker.
A background receiver per partition keeps a bounded queue filled, so reading overlaps processing and a
slow pipeline slows the receiver instead of filling memory.

The watermark is on the event-time clock (``transforms.events``): per partition, the largest event time
seen minus ``--max_out_of_orderness``. When a partition has been idle for ``--idle_timeout_s`` its
clock moves on with the wall clock (review time: from the last event time seen; enqueued time: now), so
an idle partition does not hold every window open. With ``--stop_after_idle_s`` a partition's range ends
after that long without events, which is how local runs finish.

Faults: every call to the hub outside the receive loop (partition ids and properties when the run starts,
and a probe of each partition that has been idle for ``ReaderConfig.probe_s``) retries a bounded number of
times (``MANAGEMENT_RETRY``, a few seconds), then raises ``HubUnavailable`` naming the endpoint and what
failed: the run fails before its commit and nothing of it becomes visible. The probe is needed because a
receiver whose connection the hub closed waits silently (the SDK reconnects without reporting it); when
the hub answers but holds events the receiver has not delivered, the receiver is replaced.

Credentials: a connection string from the environment variable named by ``--event_hub_connection_env``
(never an option value: options are logged and stored with the job), or ``--event_hub_namespace`` with
``DefaultAzureCredential``.
"""
import dataclasses
import datetime
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline.testhooks import pause_at
from transforms.events import ENQUEUED_TIME, UNKNOWN, EventBatch, event_times

LOG = logging.getLogger("reviews")
UNBOUNDED = 2 ** 63 - 1
BEHIND_IDLE_S = 60  # silence tolerated while a partition still has events from before the start
RECONNECT_AFTER_S = 15  # a receiver this old that has not delivered what the hub holds is replaced
START_POSITIONS = ("checkpoint", "earliest", "latest", "sequence:N", "enqueued:ISO-8601 time")
# management calls (partition ids and properties, probes): 3 attempts, ~3 s against a closed port, instead
# of the SDK's default ~10 s; receivers keep the SDK's defaults
MANAGEMENT_RETRY = {"retry_total": 2, "retry_backoff_factor": 0.4, "retry_backoff_max": 2}


class HubUnavailable(RuntimeError):
    """The hub could not be reached, or stopped answering, within ``MANAGEMENT_RETRY``'s attempts."""


def hub_failure(settings, what, err):
    """-> HubUnavailable for a failed call to the hub: the endpoint, what was being done, the first line of
    the client's error and the attempts made (never the connection string's key)."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    attempts = MANAGEMENT_RETRY["retry_total"] + 1
    return HubUnavailable(f"event hub {settings.endpoint}: {what} failed after {attempts} attempts "
                          f"({type(err).__name__}: {reason})")


def unavailable_message(err):
    """A HubUnavailable's message without the step Beam appends when it re-raises it from a DoFn."""
    return str(err).split(" [while running '", 1)[0]


@dataclasses.dataclass(frozen=True)
class HubSettings:
    """How to reach the hub. Holds the *name* of the variable with the connection string, never the
    string itself, so pickling the pipeline or logging options leaks nothing."""
    hub: str | None
    consumer_group: str = "$Default"
    connection_env: str | None = "EVENTHUB_CONNECTION_STRING"
    namespace: str | None = None

    def check(self):
        """-> a problem description, or None."""
        if self.namespace:
            return None if self.hub else "--event_hub is required with --event_hub_namespace"
        if not self.connection_env or not os.environ.get(self.connection_env):
            return (f"no Event Hubs credentials: set the environment variable {self.connection_env or '(none named)'} "
                    "to the hub's connection string (for the local endpoint: `python -m runners.local_stack "
                    "eventhubs env`), or pass --event_hub_namespace=NAMESPACE.servicebus.windows.net and sign "
                    "in for DefaultAzureCredential")
        conn = os.environ[self.connection_env]
        if "EntityPath=" not in conn and not self.hub:
            return "the connection string has no EntityPath: name the hub with --event_hub"
        return None

    @property
    def endpoint(self):
        """'sb://HOST[:PORT]/HUB' (the namespace's or the connection string's endpoint; no key)."""
        if self.namespace:
            host = self.namespace
        else:
            conn = os.environ.get(self.connection_env or "", "")
            host = next((part.split("=", 1)[1] for part in conn.split(";") if part.startswith("Endpoint=")), "?")
        host = host if "://" in host else f"sb://{host}"
        return f"{host.rstrip('/')}/{self.hub_name}"

    def call(self, what, fn):
        """``fn(client)`` on a management client with bounded retries; HubUnavailable when it fails."""
        from azure.eventhub.exceptions import EventHubError
        client = None
        try:
            client = self.consumer(**MANAGEMENT_RETRY)
            return fn(client)
        except EventHubError as err:
            raise hub_failure(self, what, err) from err
        finally:
            if client is not None:
                client.close()

    @property
    def hub_name(self):
        if self.hub:
            return self.hub
        conn = os.environ.get(self.connection_env or "", "")
        for part in conn.split(";"):
            if part.startswith("EntityPath="):
                return part.split("=", 1)[1]
        return None

    def consumer(self, **kwargs):
        from azure.eventhub import EventHubConsumerClient
        if self.namespace:
            from azure.identity import DefaultAzureCredential
            return EventHubConsumerClient(self.namespace, self.hub, self.consumer_group, DefaultAzureCredential(),
                                          **kwargs)
        conn = os.environ[self.connection_env]
        extra = {"eventhub_name": self.hub} if self.hub else {}
        return EventHubConsumerClient.from_connection_string(conn, consumer_group=self.consumer_group, **extra,
                                                             **kwargs)


def parse_start_position(text):
    """'checkpoint' | 'earliest' | 'latest' | 'sequence:N' | 'enqueued:2024-01-31T00:00:00Z' ->
    (kind, value); ValueError otherwise."""
    text = (text or "checkpoint").strip()
    if text in ("checkpoint", "earliest", "latest"):
        return text, None
    kind, _, value = text.partition(":")
    if kind == "sequence" and value.strip().isdigit():
        return kind, int(value)
    if kind == "enqueued" and value:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return kind, when
    raise ValueError(f"--start_position {text!r}: use one of {', '.join(START_POSITIONS)}")


class PartitionStart(NamedTuple):
    """One partition to read: sequence numbers [start, stop), the watermark to resume from, and the end
    of the partition when the run started (until the reader is there, silence means a slow connection,
    not an idle partition)."""
    partition: str
    start: int
    stop: int
    watermark_s: int | None = None
    end_at_start: int = 0


class ResolvePartitionsFn(beam.DoFn):
    """Hub -> PartitionStart per partition, from ``--start_position`` and the stored checkpoint."""

    def __init__(self, settings, start_position, max_records, checkpoint):
        self.settings, self.start_position, self.max_records = settings, start_position, max_records
        self.checkpoint = checkpoint or {}  # {partition: {"sequence_number": n, "watermark_s": w}}

    def process(self, hub):
        kind, value = parse_start_position(self.start_position)
        ids = partition_ids(self.settings)
        LOG.info("event hub %s: %d partitions", hub, len(ids))
        props = partition_properties(self.settings, ids)
        with ThreadPoolExecutor(max_workers=min(8, len(ids) or 1)) as pool:   # "enqueued:" asks each partition
            starts = list(pool.map(lambda pid: self._start(pid, props[pid], kind, value), ids))
        for start in starts:
            LOG.info("partition %s: reading from sequence number %d%s", start.partition, start.start,
                     f" to {start.stop - 1}" if start.stop != UNBOUNDED else "")
            yield start

    def _start(self, partition, props, kind, value):
        first = props["beginning_sequence_number"]
        end = props["last_enqueued_sequence_number"] + 1
        if props.get("is_empty"):
            first = end
        watermark = None
        saved = self.checkpoint.get(partition)
        if kind == "checkpoint" and saved is not None:
            start, watermark = saved["sequence_number"] + 1, saved.get("watermark_s")
        elif kind in ("checkpoint", "earliest"):
            start = first
        elif kind == "latest":
            start = end
        elif kind == "sequence":
            start = value
        else:
            start = _first_sequence_after(self.settings.consumer(), partition, value, end,
                                          props.get("last_enqueued_time_utc"))
        start = max(start, first)  # events before the retention horizon are gone
        stop = start + self.max_records if self.max_records else UNBOUNDED
        return PartitionStart(partition, start, stop, watermark, end)


def partition_ids(settings):
    """The hub's partition ids."""
    return list(settings.call("reading its partition ids", lambda c: c.get_partition_ids()))


def partition_properties(settings, ids):
    """{partition: the hub's properties of it now} (``get_partition_properties``: beginning and last
    enqueued sequence numbers, last enqueued time, is_empty). One management round trip per partition;
    on their own connections they overlap."""
    def one(pid):
        return settings.call(f"reading partition {pid}'s properties", lambda c: c.get_partition_properties(pid))
    with ThreadPoolExecutor(max_workers=min(8, len(ids) or 1)) as pool:
        return dict(zip(ids, pool.map(one, ids)))


def partition_end(props):
    """One partition's properties -> {"beginning_sequence_number", "last_enqueued_sequence_number",
    "last_enqueued_time_s"} (plain JSON values; an empty partition begins after its last number)."""
    last = props["last_enqueued_sequence_number"]
    when = props.get("last_enqueued_time_utc")
    return {"beginning_sequence_number": last + 1 if props.get("is_empty") else props["beginning_sequence_number"],
            "last_enqueued_sequence_number": last,
            "last_enqueued_time_s": None if when is None or props.get("is_empty") else int(when.timestamp())}


def partition_ends(settings, deadline_s=15.0):
    """The hub's end of every partition now ({partition: ``partition_end``}), for the commit to record
    beside what the run consumed. An observation, not a position: when the hub cannot be asked within
    ``deadline_s`` (or refuses) -> {} and a warning, and the commit goes on."""
    found, failed = {}, []

    def ask():
        try:
            ids = partition_ids(settings)
            found.update({pid: partition_end(p) for pid, p in partition_properties(settings, ids).items()})
        except Exception as err:  # noqa: BLE001 - reported below
            failed.append(err)
    worker = threading.Thread(target=ask, daemon=True, name="eventhub-partition-ends")
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive() or failed:
        LOG.warning("could not read the hub's last sequence numbers (%s): the commit records no lag in events",
                    repr(failed[0]) if failed else f"no answer in {deadline_s:.0f} s")
        return {}
    return found


def _first_sequence_after(client, partition, when, default, last_enqueued=None):
    """Sequence number of the first event enqueued at or after ``when`` (``default`` if none yet)."""
    if last_enqueued is not None and last_enqueued < when:
        client.close()
        return default  # nothing that late yet: start at the end
    found = []

    def on_batch(_ctx, events):
        if events and not found:
            found.append(events[0].sequence_number)

    worker = threading.Thread(target=client.receive_batch, daemon=True, kwargs=dict(
        on_event_batch=on_batch, partition_id=partition, starting_position=when, starting_position_inclusive=True,
        max_batch_size=1, max_wait_time=2))
    worker.start()
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.05)
    client.close()
    worker.join(5)
    return found[0] if found else default


# ---------------------------------------------------------------------------------------------------
# the splittable DoFn

class _SequenceRanges(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return min(restriction.size(), 1 << 40)

    def split(self, element, restriction):
        yield restriction  # a partition is read in order; no initial splits


class _ResumedWatermark(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element, restriction):
        return None if element.watermark_s is None else Timestamp(seconds=element.watermark_s)

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state)


def event_body(event):
    """An EventData's body as raw bytes (b'' for an event without a body)."""
    try:
        body = event.body
    except ValueError:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    try:
        return b"".join(body)
    except TypeError:
        return str(body).encode("utf-8")


class _Receiver:
    """A background ``receive_batch`` positioned at a sequence number, feeding a bounded queue."""

    def __init__(self, settings, partition, start, prefetch):
        self.next_seq, self.started = start, time.monotonic()
        self.pending = []  # received events not yet claimed (a batch ended in the middle of them)
        self.queue = queue.Queue(maxsize=max(2, prefetch))
        self.client = settings.consumer()
        self.closed = False
        self.thread = threading.Thread(target=self._run, args=(partition, start), daemon=True,
                                       name=f"eventhub-receive-{partition}")
        self.thread.start()

    def _run(self, partition, start):
        def on_batch(_ctx, events):
            while events and not self.closed:
                try:
                    self.queue.put(events, timeout=0.5)
                    return
                except queue.Full:
                    continue
        try:
            self.client.receive_batch(on_event_batch=on_batch, partition_id=partition, starting_position=start,
                                      starting_position_inclusive=True, max_batch_size=300, max_wait_time=None,
                                      prefetch=300)
        except Exception as err:  # noqa: BLE001 - surfaced by the reader
            if not self.closed:
                LOG.warning("receiver for partition %s stopped: %r", partition, err)

    def close(self):
        self.closed = True
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass


def idle_watermark_s(clock, last_event_s, idle_s, now_s, max_out_of_orderness_s):
    """The watermark (epoch seconds) of a partition that has had no events for ``idle_s`` seconds: its clock
    follows the wall clock. Enqueued-time clock: ``now_s`` minus the out-of-orderness; review-time clock: the
    latest review time seen plus the whole seconds of idle time, minus the out-of-orderness (None before
    any review time was seen)."""
    if clock == ENQUEUED_TIME:
        return int(now_s) - max_out_of_orderness_s
    if last_event_s is None:
        return None
    return last_event_s + int(idle_s) - max_out_of_orderness_s


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    clock: str                        # transforms.events.REVIEW_TIME | ENQUEUED_TIME
    max_out_of_orderness_s: int
    idle_timeout_s: float             # idle this long -> the partition's clock follows the wall clock
    stop_after_idle_s: float | None   # idle this long -> the partition's range ends (local runs)
    max_record_bytes: int
    read_s: float = 0.5               # longest a process call reads before it emits and defers
    poll_s: float = 0.02              # how long a call waits for the first / next receive batch
    max_batch_events: int = 2000      # most events in one EventBatch
    prefetch_batches: int = 16        # receive batches buffered per partition
    probe_s: float = 10.0             # idle this long -> ask the hub for the partition's end (and before stopping)


class ReadPartitionsFn(beam.DoFn):
    """PartitionStart -> EventBatch elements (timestamped on the event-time clock), unbounded per element."""

    def __init__(self, settings, config):
        self.settings, self.config = settings, config

    def setup(self):
        self._receivers = {}
        self._state = {}  # partition -> [max event time seen, wall time of the last event, of the last probe]

    def teardown(self):
        for r in self._receivers.values():
            r.close()
        self._receivers = {}

    def _receiver(self, partition, start):
        r = self._receivers.get(partition)
        if r is None or r.next_seq != start or not r.thread.is_alive():
            if r is not None:
                r.close()
            r = self._receivers[partition] = _Receiver(self.settings, partition, start, self.config.prefetch_batches)
        return r

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=beam.DoFn.RestrictionParam(_SequenceRanges()),
                estimator=beam.DoFn.WatermarkEstimatorParam(_ResumedWatermark())):
        cfg, partition = self.config, element.partition
        rng = tracker.current_restriction()
        if rng.start >= rng.stop:
            return
        receiver = self._receiver(partition, rng.start)
        seen = self._state.setdefault(partition, [None, time.monotonic(), time.monotonic()])
        watermark = estimator.current_watermark()
        watermark_s = None if watermark is None or watermark <= Timestamp(seconds=-(2 ** 40)) \
            else int(watermark.micros // 1_000_000)
        events, exhausted = [], False
        deadline = time.monotonic() + cfg.read_s
        while len(events) < cfg.max_batch_events and time.monotonic() < deadline:
            if receiver.pending:  # the rest of a receive batch a full EventBatch left behind
                got, receiver.pending = receiver.pending, []
            else:
                try:  # what has arrived, then give the other partitions their turn
                    got = receiver.queue.get(timeout=cfg.poll_s)
                except queue.Empty:
                    break
            for k, ev in enumerate(got):
                if len(events) >= cfg.max_batch_events:
                    receiver.pending = got[k:]
                    break
                seq = ev.sequence_number
                if seq < receiver.next_seq:
                    continue
                if not tracker.try_claim(seq):
                    exhausted = True
                    break
                events.append(ev)
                receiver.next_seq = seq + 1
            if exhausted:
                break
        now = time.monotonic()
        if events:
            seen[1] = now
            yield from self._emit(partition, events, watermark_s, seen, estimator)
            pause_at("read")  # test hook (beam_pipeline.testhooks)
        if exhausted or receiver.next_seq >= rng.stop:
            self._close_receiver(partition)
            return
        idle = now - seen[1]
        behind = receiver.next_seq < min(element.end_at_start, rng.stop)
        stopping = cfg.stop_after_idle_s is not None and idle >= (cfg.stop_after_idle_s if not behind else
                                                                  max(cfg.stop_after_idle_s, BEHIND_IDLE_S))
        if not events and (stopping or now - max(seen[1], seen[2]) >= cfg.probe_s):
            seen[2] = now
            self._probe(partition, receiver)  # idle, or has the hub gone? (a range never ends on a dead hub)
        if stopping:
            if behind:
                LOG.warning("partition %s: no events for %.0f s although the partition held events up to %d at "
                            "the start; stopping at %d", partition, idle, element.end_at_start - 1,
                            receiver.next_seq - 1)
            LOG.info("partition %s: idle for %.1f s, stopping at sequence number %d", partition, idle,
                     receiver.next_seq - 1)
            tracker.try_claim(rng.stop)  # claims the rest: the range is done
            self._close_receiver(partition)
            return
        if not events and not behind and idle >= cfg.idle_timeout_s:
            self._advance_idle(seen, idle, estimator)
        tracker.defer_remainder(Duration(seconds=0 if events else 0.05))

    def _probe(self, partition, receiver):
        """An idle partition: is the hub still there (HubUnavailable if not), and has the receiver missed
        events it holds (a connection the hub closed: the receiver is replaced, the next call reconnects)?"""
        props = self.settings.call(f"probing partition {partition} (read up to sequence number "
                                   f"{receiver.next_seq - 1})", lambda c: c.get_partition_properties(partition))
        if not props.get("is_empty") and props["last_enqueued_sequence_number"] >= receiver.next_seq \
                and time.monotonic() - receiver.started >= RECONNECT_AFTER_S:
            LOG.warning("partition %s: the hub holds events up to %d but none arrived after %d; reconnecting",
                        partition, props["last_enqueued_sequence_number"], receiver.next_seq - 1)
            self._close_receiver(partition)

    def _emit(self, partition, events, watermark_s, seen, estimator):
        cfg = self.config
        bodies = tuple(event_body(ev) for ev in events)
        enqueued = np.fromiter((int(ev.enqueued_time.timestamp() * 1000) for ev in events), dtype=np.int64,
                               count=len(events))
        times = event_times(bodies, enqueued, cfg.clock, cfg.max_record_bytes)
        known = times[times != UNKNOWN]
        if known.size:
            seen[0] = int(known.max()) if seen[0] is None else max(seen[0], int(known.max()))
        # split where sequence numbers jump (events past the retention horizon): a batch is contiguous
        seqs = np.fromiter((ev.sequence_number for ev in events), dtype=np.int64, count=len(events))
        cuts = np.flatnonzero(np.diff(seqs) != 1) + 1
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(events)]])):
            batch = EventBatch(self.settings.hub_name, partition, int(seqs[a]),
                               tuple(str(ev.offset) for ev in events[a:b]), enqueued[a:b], times[a:b],
                               bodies[a:b], watermark_s)
            part_known = times[a:b][times[a:b] != UNKNOWN]
            carrier = max(watermark_s if watermark_s is not None else 0,
                          int(part_known.max()) if part_known.size else 0)
            yield TimestampedValue(batch, Timestamp(seconds=carrier))
        if seen[0] is not None:
            self._raise_watermark(estimator, seen[0] - cfg.max_out_of_orderness_s)

    def _advance_idle(self, seen, idle_s, estimator):
        mark = idle_watermark_s(self.config.clock, seen[0], idle_s, time.time(), self.config.max_out_of_orderness_s)
        if mark is not None:
            self._raise_watermark(estimator, mark)

    @staticmethod
    def _raise_watermark(estimator, seconds):
        target = Timestamp(seconds=seconds)
        current = estimator.current_watermark()
        if current is None or target > current:
            estimator.set_watermark(target)

    def _close_receiver(self, partition):
        r = self._receivers.pop(partition, None)
        if r is not None:
            r.close()


class ReadEventHub(beam.PTransform):
    """Hub -> EventBatch elements, one stream per partition."""

    def __init__(self, settings, config, start_position="checkpoint", max_records=None, checkpoint=None):
        super().__init__()
        self.settings, self.config = settings, config
        self.start_position, self.max_records, self.checkpoint = start_position, max_records, checkpoint

    def expand(self, pbegin):
        return (pbegin
                | "Hub" >> beam.Create([self.settings.hub_name or "hub"])
                | "ResolvePartitions" >> beam.ParDo(
                    ResolvePartitionsFn(self.settings, self.start_position, self.max_records, self.checkpoint))
                | "ReadPartitions" >> beam.ParDo(ReadPartitionsFn(self.settings, self.config)))
