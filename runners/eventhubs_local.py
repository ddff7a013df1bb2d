"""A durable, local Azure Event Hubs stand-in that the real ``azure-eventhub`` clients talk to unchanged.

There is no pip/npm/apt Event Hubs emulator (Microsoft's is Docker-only), so this module implements the
small part of AMQP 1.0 and of the Event Hubs conventions that ``azure-eventhub`` (pyamqp transport) uses.
Frames are encoded and decoded with the SDK's own vendored codec (``azure.eventhub._pyamqp``), which
always writes every performative field (pyamqp <= 5.15.1 cannot read performatives whose trailing null
fields are omitted). That codec is private API, hence ``azure-eventhub==5.15.1`` is pinned.

Python API::

    from runners.eventhubs_local import LocalEventHubs
    from azure.eventhub import EventHubProducerClient

    with LocalEventHubs("/tmp/eh", hub="reviews", partitions=4) as eh:      # free loopback port
        producer = EventHubProducerClient.from_connection_string(eh.connection_string)
        ...

CLI (foreground; Ctrl-C or SIGTERM stops)::

    python -m runners.eventhubs_local serve --data-dir .local/eventhubs [--port 5674] [--hub reviews]
                                            [--partitions 4] [--consumer-group NAME ...]

Threading model: ``start()`` runs a private asyncio event loop in one daemon thread. All hub state is
touched only on that loop, so no locks are needed. ``stop()`` closes the listener and every client
connection, stops the loop, joins the thread and closes the log files; it is idempotent.

Connection string (no secret; the key is never checked)::

    Endpoint=sb://127.0.0.1:PORT;SharedAccessKeyName=local;SharedAccessKey=local;UseDevelopmentEmulator=true;EntityPath=HUB

``UseDevelopmentEmulator=true`` makes the SDK use plain AMQP (no TLS) on the endpoint's port.

Supported
---------
* Connection: AMQP header exchange, optional SASL (ANONYMOUS / PLAIN / MSSBCBS / EXTERNAL; any credentials
  are accepted), open/begin/attach/flow/transfer/disposition/detach/end/close, empty-frame heartbeats when
  the client asks for an idle timeout, multi-frame transfers in both directions.
* ``$cbs`` put-token: every token is accepted (status 202). There is NO authorization.
* ``$management`` READ of ``com.microsoft:eventhub`` and ``com.microsoft:partition`` (hub and partition
  properties: created_at, partition_ids, begin/last sequence number, last offset/time, is_partition_empty).
* Send: single events and batches (message-format 0x80013700, body = N data sections each holding an
  encoded AMQP message); routing by explicit partition (``.../Partitions/<id>`` target), by partition key
  (``x-opt-partition-key`` on the batch or the event: CRC-32 of the UTF-8 key modulo the partition count,
  stable across processes and restarts), otherwise round robin. Each transfer is written to the
  partition logs, flushed and fsync'd *before* the ``accepted`` disposition is sent.
* Receive: consumer links on ``.../ConsumerGroups/<cg>/Partitions/<id>`` for every configured consumer
  group (case-insensitive), independently; start positions from the selector filter
  ``amqp.annotation.x-opt-offset``, ``x-opt-sequence-number`` (``>`` exclusive, ``>=`` inclusive) and
  ``x-opt-enqueued-time`` (epoch ms), including ``'-1'`` (earliest) and ``'@latest'``; no filter means
  latest. Live tail: events appended after a receiver attached are pushed to it. Link credit and the
  client's session incoming window are respected. Delivered events carry the message annotations
  ``x-opt-sequence-number`` (long), ``x-opt-offset`` (string), ``x-opt-enqueued-time`` (timestamp) and,
  when set, ``x-opt-partition-key``; ``track_last_enqueued_event_properties`` is supported (runtime-metric
  delivery annotations). The stored message (properties, application properties, body sections) is
  delivered byte for byte; only its message annotations are rebuilt and delivery annotations replaced.

Not supported / limits
----------------------
* No authentication or authorization; no TLS; listen on loopback only unless you know what you do.
* No retention: logs grow until you delete ``data_dir``. Sequence numbers start at 0 per partition.
* Offsets are the byte position of the event's record in its partition log file (strings, as in
  Event Hubs; ``"-1"`` means before the first event). They are stable across restarts.
* Messages are limited to ``max_message_size`` (default 1 MiB, as Event Hubs Standard); larger
  deliveries are rejected with ``amqp:link:message-size-exceeded``.
* Epoch / owner-level receivers are accepted but not exclusive; geo-replication offsets, transactions,
  idempotent publishing, AAD/JWT validation, partition/hub creation at runtime and the Kafka endpoint are
  not implemented. Management operations other than READ answer 501.
* The per-partition index (sequence number, offset, time, position) is kept in memory; bodies are read
  back from the log with ``os.pread`` when delivered. Writes and fsyncs happen on the event loop thread,
  so throughput is bounded by the disk's fsync latency (one fsync per partition per transfer/batch).

Log format (``<data_dir>/<hub>/partition-<id>.log``; ``<data_dir>/<hub>/hub.json`` holds the partition
count and creation time): a sequence of records, each ``RECORD_HEADER`` = magic ``b"EHR1"``, uint32
length of what follows the CRC, uint32 CRC-32 of what follows the CRC, int64 sequence number, int64
enqueued time (epoch ms), int32 partition-key length (-1 = none); then the UTF-8 partition key and the
encoded AMQP message exactly as received. A torn or corrupt tail (crash mid-write) is truncated on load.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import faulthandler
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from azure.eventhub._pyamqp import performatives as perf
from azure.eventhub._pyamqp._decode import _DECODE_BY_CONSTRUCTOR, decode_frame, decode_payload
from azure.eventhub._pyamqp._encode import encode_frame, encode_payload, encode_value
from azure.eventhub._pyamqp.endpoints import Source, Target
from azure.eventhub._pyamqp.error import AMQPError
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.outcomes import Accepted, Rejected
from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_CLI_PORT = 5674
DEFAULT_HUB = "reviews"
DEFAULT_PARTITIONS = 4
DEFAULT_CONSUMER_GROUPS = ("$Default",)
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024          # what we accept; the client splits larger deliveries
SESSION_WINDOW = 65536                 # transfer frames we accept per session before a window refresh
PRODUCER_LINK_CREDIT = 1000            # credit granted to each client sender link (refilled at half)
CONTAINER_ID = "runners.eventhubs_local"

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
FRAME_AMQP, FRAME_SASL = b"\x00", b"\x01"
BATCH_MESSAGE_FORMAT = 0x80013700

# performative descriptor codes
_OPEN, _BEGIN, _ATTACH, _FLOW, _TRANSFER, _DISPOSITION, _DETACH, _END, _CLOSE = range(0x10, 0x19)
_SASL_INIT = 0x41
# message section descriptor codes
_SEC_HEADER, _SEC_DELIVERY_ANN, _SEC_MESSAGE_ANN = 0x70, 0x71, 0x72

SELECTOR_FILTER = "apache.org:selector-filter:string"
RUNTIME_METRIC_CAPABILITY = b"com.microsoft:enable-receiver-runtime-metric"
_SELECTOR_RE = re.compile(r"amqp\.annotation\.(x-opt-[a-z-]+)\s*(>=|>)\s*'([^']*)'", re.IGNORECASE)
_HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")

RECORD_MAGIC = b"EHR1"
RECORD_HEADER = struct.Struct(">4sIIqqi")    # magic, length after crc, crc32, seq, enqueued ms, key len
_RECORD_FIXED_AFTER_CRC = RECORD_HEADER.size - 12


# ------------------------------------------------------------------------------------------ helpers
def _text(value: Any) -> Optional[str]:
    """pyamqp decodes AMQP strings and symbols as bytes; return them as str (None stays None)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return value


def _timestamp(ms: int) -> dict:
    return {TYPE: AMQPTypes.timestamp, VALUE: int(ms)}


def _long(value: int) -> dict:
    return {TYPE: AMQPTypes.long, VALUE: int(value)}


def _now_ms() -> int:
    return int(time.time() * 1000)


def partition_for_key(key: bytes, partition_count: int) -> int:
    """Stable partition index of a partition key: CRC-32 of its UTF-8 bytes modulo the partition count."""
    return zlib.crc32(key) % partition_count


def free_port(host: str = DEFAULT_HOST) -> int:
    """A currently free TCP port on ``host`` (the server itself binds port 0 to avoid races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_sections(raw: bytes) -> list[tuple[int, bytes]]:
    """Split an encoded AMQP message into ``(section descriptor code, encoded section bytes)``.

    Raises ValueError for anything that is not a sequence of described sections with numeric
    descriptors, so malformed messages are rejected when sent rather than when delivered.
    """
    view = memoryview(raw)
    sections: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(view):
            if view[pos] != 0x00:
                raise ValueError(f"expected a described section at byte {pos}")
            ctor = view[pos + 1]
            if ctor == 0x53:        # smallulong descriptor
                code, value_at = view[pos + 2], pos + 3
            elif ctor == 0x80:      # ulong descriptor
                code, value_at = struct.unpack_from(">Q", view, pos + 2)[0], pos + 10
            else:
                raise ValueError(f"unsupported section descriptor constructor 0x{ctor:02x}")
            if not 0x70 <= code <= 0x78:
                raise ValueError(f"unknown message section 0x{code:x}")
            decoder = _DECODE_BY_CONSTRUCTOR[view[value_at]]
            if decoder is None:
                raise ValueError(f"unknown constructor 0x{view[value_at]:02x}")
            rest, _ = decoder(view[value_at + 1:])
            end = len(view) - len(rest)
            sections.append((code, bytes(view[pos:end])))
            pos = end
    except (IndexError, struct.error) as exc:
        raise ValueError(f"truncated AMQP message: {exc}") from exc
    return sections


def _encode_annotations_section(code: int, annotations: dict) -> bytes:
    out = bytearray()
    if code == _SEC_MESSAGE_ANN:
        encode_payload(out, Message(message_annotations=annotations))
    else:  # delivery annotations: encode_payload does not write them, so describe the map ourselves
        from azure.eventhub._pyamqp._encode import encode_annotations
        encode_value(out, {TYPE: AMQPTypes.described,
                           VALUE: ({TYPE: AMQPTypes.ulong, VALUE: code}, encode_annotations(annotations))})
    return bytes(out)


# ------------------------------------------------------------------------------------------ storage
@dataclass(slots=True)
class EventRecord:
    """Index entry of one stored event; the message bytes stay in the log file."""
    sequence_number: int
    offset: int                       # byte position of the record in the partition log
    enqueued_ms: int
    partition_key: Optional[bytes]
    data_pos: int                     # where the encoded AMQP message starts in the file
    data_len: int


class PartitionLog:
    """Append-only, fsync'd event log of one partition with an in-memory index."""

    def __init__(self, path: Path, partition_id: str, fsync: bool = True):
        self.path, self.partition_id, self.fsync = path, partition_id, fsync
        self.records: list[EventRecord] = []
        self._enqueued: list[int] = []     # enqueued ms per record (monotonic), for bisect
        self._offsets: list[int] = []
        self._load()
        self._append = open(self.path, "ab", buffering=0)
        self._read_fd = os.open(self.path, os.O_RDONLY)

    def _load(self) -> None:
        self.path.touch(exist_ok=True)
        data = self.path.read_bytes()
        pos, good_end = 0, 0
        while pos + RECORD_HEADER.size <= len(data):
            magic, length, crc, seq, enq, key_len = RECORD_HEADER.unpack_from(data, pos)
            end = pos + 12 + length
            if magic != RECORD_MAGIC or end > len(data) or zlib.crc32(data[pos + 12:end]) != crc:
                break
            if seq != len(self.records):
                raise ValueError(f"{self.path}: record at byte {pos} has sequence number {seq}, "
                                 f"expected {len(self.records)}")
            key_at = pos + RECORD_HEADER.size
            key = data[key_at:key_at + key_len] if key_len >= 0 else None
            data_pos = key_at + max(key_len, 0)
            self._index(EventRecord(seq, pos, enq, key, data_pos, end - data_pos))
            pos = good_end = end
        if good_end != len(data):
            log.warning("%s: truncating %d bytes of torn/corrupt tail at byte %d",
                        self.path, len(data) - good_end, good_end)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())

    def _index(self, rec: EventRecord) -> None:
        self.records.append(rec)
        self._enqueued.append(rec.enqueued_ms)
        self._offsets.append(rec.offset)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> Optional[EventRecord]:
        return self.records[-1] if self.records else None

    def append(self, events: Iterable[tuple[bytes, Optional[bytes]]], enqueued_ms: int) -> list[EventRecord]:
        """Append ``(encoded message, partition key)`` pairs durably; returns their index entries."""
        if self.records:
            enqueued_ms = max(enqueued_ms, self.records[-1].enqueued_ms)   # keep time monotonic
        offset = self._append.tell()
        buf = bytearray()
        new: list[EventRecord] = []
        for message, key in events:
            seq = len(self.records) + len(new)
            key_bytes = key or b""
            after_crc = (struct.pack(">qqi", seq, enqueued_ms, len(key) if key is not None else -1)
                         + key_bytes + message)
            start = offset + len(buf)
            buf += RECORD_MAGIC + struct.pack(">II", len(after_crc), zlib.crc32(after_crc)) + after_crc
            data_pos = start + RECORD_HEADER.size + len(key_bytes)
            new.append(EventRecord(seq, start, enqueued_ms, key, data_pos, len(message)))
        self._append.write(bytes(buf))
        if self.fsync:
            os.fsync(self._append.fileno())
        for rec in new:
            self._index(rec)
        return new

    def read(self, rec: EventRecord) -> bytes:
        return os.pread(self._read_fd, rec.data_len, rec.data_pos)

    def start_index(self, selector: Optional[str]) -> int:
        """Index of the first record a receiver with this selector-filter expression gets."""
        match = _SELECTOR_RE.search(selector or "")
        if not match:
            return len(self.records)                               # no filter: latest
        name, op, raw = match.group(1).lower(), match.group(2), match.group(3)
        inclusive = op == ">="
        if raw == "@latest":
            return len(self.records)
        if name == "x-opt-offset":
            if raw == "-1":
                return 0
            value = int(raw)
            find = bisect.bisect_left if inclusive else bisect.bisect_right
            return find(self._offsets, value)
        if name == "x-opt-sequence-number":
            value = int(raw)
            return min(len(self.records), max(0, value if inclusive else value + 1))
        if name == "x-opt-enqueued-time":
            value = int(float(raw))
            find = bisect.bisect_left if inclusive else bisect.bisect_right
            return find(self._enqueued, value)
        raise ValueError(f"unsupported selector field {name!r}")

    def close(self) -> None:
        try:
            self._append.close()
        finally:
            os.close(self._read_fd)


class EventHub:
    """One hub: its partition logs, routing, and the consumer links waiting for new events."""

    def __init__(self, data_dir: Path, name: str, partitions: int, consumer_groups: Iterable[str],
                 fsync: bool = True):
        if not _HUB_NAME_RE.match(name):
            raise ValueError(f"invalid hub name {name!r}")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.name = name
        self.dir = Path(data_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "hub.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta["partitions"] != partitions:
                raise ValueError(f"{meta_path}: hub {name!r} was created with {meta['partitions']} "
                                 f"partitions, not {partitions}")
            self.created_ms = int(meta["created_at_ms"])
        else:
            self.created_ms = _now_ms()
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"name": name, "partitions": partitions,
                                       "created_at_ms": self.created_ms}))
            os.replace(tmp, meta_path)
        self.partition_ids = [str(i) for i in range(partitions)]
        self.partitions = {pid: PartitionLog(self.dir / f"partition-{pid}.log", pid, fsync)
                           for pid in self.partition_ids}
        self.consumer_groups = {cg.lower() for cg in consumer_groups}
        self._round_robin = sum(len(p) for p in self.partitions.values())
        self._subscribers: dict[str, set[Callable[[], None]]] = {pid: set() for pid in self.partition_ids}

    def route(self, partition_id: Optional[str], key: Optional[bytes]) -> str:
        if partition_id is not None:
            return partition_id
        if key is not None:
            return self.partition_ids[partition_for_key(key, len(self.partition_ids))]
        pid = self.partition_ids[self._round_robin % len(self.partition_ids)]
        self._round_robin += 1
        return pid

    def publish(self, events: list[tuple[str, bytes, Optional[bytes]]]) -> None:
        """Durably append ``(partition id, message, key)`` events, then wake the partitions' receivers."""
        by_partition: dict[str, list[tuple[bytes, Optional[bytes]]]] = {}
        for pid, message, key in events:
            by_partition.setdefault(pid, []).append((message, key))
        now = _now_ms()
        for pid, items in by_partition.items():
            self.partitions[pid].append(items, now)
        for pid in by_partition:
            for wake in list(self._subscribers[pid]):
                wake()

    def subscribe(self, pid: str, wake: Callable[[], None]) -> None:
        self._subscribers[pid].add(wake)

    def unsubscribe(self, pid: str, wake: Callable[[], None]) -> None:
        self._subscribers[pid].discard(wake)

    def close(self) -> None:
        for part in self.partitions.values():
            part.close()


# ------------------------------------------------------------------------------------------ AMQP
def _not_found(description: str) -> AMQPError:
    """The error an attach to a missing hub, consumer group or partition is refused with."""
    return AMQPError(condition=b"amqp:not-found", description=description)


@dataclass
class _Link:
    handle: int                       # the client's handle (we reuse it as ours)
    name: Any
    server_sends: bool                # True: we are the sender (client receives)
    source: Optional[str]
    target: Optional[str]
    delivery_count: int = 0
    credit: int = 0
    # client -> us (producer, $cbs/$management requests)
    partial: bytearray = field(default_factory=bytearray)
    partial_format: int = 0
    partial_delivery: Optional[int] = None
    partial_settled: bool = False
    partition_id: Optional[str] = None       # target partition (producer) or source partition (consumer)
    # us -> client
    outbox: list = field(default_factory=list)   # queued replies ($cbs / $management)
    next_index: int = 0                           # consumer: next record index to deliver
    runtime_metric: bool = False
    wake: Optional[Callable[[], None]] = None


@dataclass
class _Session:
    channel: int
    links: dict[int, _Link] = field(default_factory=dict)
    next_incoming_id: int = 0
    incoming_left: int = SESSION_WINDOW
    next_outgoing_id: int = 0          # transfer id of our next frame
    next_delivery_id: int = 0
    remote_incoming_window: int = 0


class _ProtocolError(Exception):
    pass


class _Connection:
    """Serves one client TCP connection."""

    def __init__(self, server: "_Server", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.hub = server, server.hub
        self.reader, self.writer = reader, writer
        self.sessions: dict[int, _Session] = {}
        self.remote_max_frame = MAX_FRAME_SIZE
        self.closed = False
        self._heartbeat: Optional[asyncio.Task] = None

    # -- framing
    def _write_frame(self, channel: int, frame: Any, frame_type: bytes = FRAME_AMQP) -> None:
        if self.closed:
            return
        header, body = encode_frame(frame, frame_type=frame_type)
        self.writer.write(header + struct.pack(">H", channel) + (body or b""))

    async def _read_frame(self) -> tuple[int, Optional[int], Optional[list]]:
        size, doff, _ftype, channel = struct.unpack(">IBBH", await self.reader.readexactly(8))
        if size < 8 or size > MAX_FRAME_SIZE:
            raise _ProtocolError(f"bad frame size {size}")
        body = await self.reader.readexactly(size - 8)
        body = body[doff * 4 - 8:]
        if not body:
            return channel, None, None                                  # heartbeat
        code, fields = decode_frame(memoryview(body))
        return channel, code, fields

    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        log.debug("connection from %s", peer)
        try:
            header = await self.reader.readexactly(8)
            if header == SASL_HEADER:
                await self._sasl()
                header = await self.reader.readexactly(8)
            if header != AMQP_HEADER:
                self.writer.write(AMQP_HEADER)
                raise _ProtocolError(f"unsupported protocol header {header!r}")
            self.writer.write(AMQP_HEADER)
            while not self.closed:
                channel, code, fields = await self._read_frame()
                if code is not None:
                    self._dispatch(channel, code, fields)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad client must not take the server down
            log.exception("closing connection from %s after an error", peer)
        finally:
            self._teardown()

    async def _sasl(self) -> None:
        self.writer.write(SASL_HEADER)
        self._write_frame(0, perf.SASLMechanism(
            sasl_server_mechanisms=[b"ANONYMOUS", b"PLAIN", b"MSSBCBS", b"EXTERNAL"]), FRAME_SASL)
        _, code, _ = await self._read_frame()
        if code != _SASL_INIT:
            raise _ProtocolError(f"expected sasl-init, got 0x{code}")
        self._write_frame(0, perf.SASLOutcome(code=0, additional_data=None), FRAME_SASL)

    def _teardown(self) -> None:
        self.closed = True
        if self._heartbeat:
            self._heartbeat.cancel()
        for session in self.sessions.values():
            for link in session.links.values():
                self._forget_link(link)
        self.sessions.clear()
        self.server.connections.discard(self)
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass

    def close(self, error: Optional[AMQPError] = None) -> None:
        """Server-initiated close (used by ``stop()``)."""
        if not self.closed:
            self._write_frame(0, perf.CloseFrame(error=error))
            self._teardown()

    async def _send_heartbeats(self, interval: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval)
            header, _ = encode_frame(None)
            self.writer.write(header + b"\x00\x00")

    # -- performatives
    def _dispatch(self, channel: int, code: int, f: list) -> None:
        if code == _OPEN:
            self.remote_max_frame = min(f[2] or 2 ** 32 - 1, 2 ** 32 - 1)
            idle_ms = f[4]
            if idle_ms:
                self._heartbeat = asyncio.ensure_future(self._send_heartbeats(idle_ms / 2000))
            self._write_frame(0, perf.OpenFrame(
                container_id=CONTAINER_ID, hostname=None, max_frame_size=MAX_FRAME_SIZE, channel_max=65535,
                idle_timeout=None, outgoing_locales=None, incoming_locales=None, offered_capabilities=None,
                desired_capabilities=None, properties=None))
        elif code == _BEGIN:
            session = _Session(channel, next_incoming_id=f[1] or 0, remote_incoming_window=f[2] or 0)
            self.sessions[channel] = session
            self._write_frame(channel, perf.BeginFrame(
                remote_channel=channel, next_outgoing_id=0, incoming_window=SESSION_WINDOW,
                outgoing_window=SESSION_WINDOW, handle_max=2 ** 32 - 1, offered_capabilities=None,
                desired_capabilities=None, properties=None))
        elif code == _ATTACH:
            self._attach(self.sessions[channel], f)
        elif code == _FLOW:
            self._flow(self.sessions[channel], f)
        elif code == _TRANSFER:
            self._transfer(self.sessions[channel], f)
        elif code == _DISPOSITION:
            pass                                   # we only send pre-settled deliveries
        elif code == _DETACH:
            session = self.sessions.get(channel)
            link = session.links.pop(f[0], None) if session else None
            if link:
                self._forget_link(link)
            self._write_frame(channel, perf.DetachFrame(handle=f[0], closed=True, error=None))
        elif code == _END:
            session = self.sessions.pop(channel, None)
            if session:
                for link in session.links.values():
                    self._forget_link(link)
            self._write_frame(channel, perf.EndFrame(error=None))
        elif code == _CLOSE:
            self._write_frame(0, perf.CloseFrame(error=None))
            self.closed = True
        else:
            raise _ProtocolError(f"unexpected performative 0x{code:x}")

    def _forget_link(self, link: _Link) -> None:
        if link.wake is not None and link.partition_id is not None:
            self.hub.unsubscribe(link.partition_id, link.wake)
            link.wake = None

    def _entity_path(self, address: Optional[str]) -> Optional[str]:
        """``amqps://host/hub/...`` or ``hub/...`` -> ``hub/...`` (None for $cbs/$management/unknown)."""
        if not address:
            return None
        path = re.sub(r"^[a-z]+://[^/]+/", "", address, flags=re.IGNORECASE).strip("/")
        return path

    def _attach(self, session: _Session, f: list) -> None:
        name, handle, client_is_receiver = f[0], f[1], bool(f[2])
        source, target = list(f[5] or []), list(f[6] or [])
        src = _text(source[0]) if source else None
        tgt = _text(target[0]) if target else None
        link = _Link(handle=handle, name=name, server_sends=client_is_receiver, source=src, target=tgt)
        error: Optional[AMQPError] = None
        hub_lower = self.hub.name.lower()
        if client_is_receiver:
            path = self._entity_path(src)
            m = re.fullmatch(r"([^/]+)/ConsumerGroups/([^/]+)/Partitions/([^/]+)", path or "", re.IGNORECASE)
            if src in ("$cbs", "$management"):
                pass
            elif not m or m.group(1).lower() != hub_lower:
                error = _not_found(f"no such entity: {src}")
            elif m.group(2).lower() not in self.hub.consumer_groups:
                error = _not_found(f"consumer group {m.group(2)!r} does not exist")
            elif m.group(3) not in self.hub.partitions:
                error = _not_found(f"no partition {m.group(3)!r}")
            else:
                link.partition_id = m.group(3)
                filters = source[7] if len(source) > 7 and source[7] else {}
                selector = next((_text(v[1] if isinstance(v, (list, tuple)) else v)
                                 for k, v in filters.items() if _text(k) == SELECTOR_FILTER), None)
                try:
                    link.next_index = self.hub.partitions[link.partition_id].start_index(selector)
                except ValueError as exc:
                    error = AMQPError(condition=b"amqp:invalid-field", description=str(exc))
                link.runtime_metric = RUNTIME_METRIC_CAPABILITY in [bytes(c) for c in (f[12] or [])]
                log.debug("consumer attach %s selector=%r start index=%d", src, selector, link.next_index)
        else:
            path = self._entity_path(tgt)
            m = re.fullmatch(r"([^/]+)(?:/Partitions/([^/]+))?", path or "", re.IGNORECASE)
            if tgt in ("$cbs", "$management"):
                pass
            elif not m or m.group(1).lower() != hub_lower:
                error = _not_found(f"no such entity: {tgt}")
            elif m.group(2) is not None and m.group(2) not in self.hub.partitions:
                error = _not_found(f"no partition {m.group(2)!r}")
            else:
                link.partition_id = m.group(2)
        self._write_frame(session.channel, perf.AttachFrame(
            name=name, handle=handle, role=not client_is_receiver, send_settle_mode=f[3],
            rcv_settle_mode=f[4], source=Source(address=src or ""), target=Target(address=tgt or ""),
            unsettled=None, incomplete_unsettled=False,
            initial_delivery_count=0 if client_is_receiver else None,
            max_message_size=self.server.max_message_size, offered_capabilities=None,
            desired_capabilities=None, properties=None))
        if error is not None:
            log.info("refusing link %s: %s", src if client_is_receiver else tgt, error.description)
            self._write_frame(session.channel, perf.DetachFrame(handle=handle, closed=True, error=error))
            return
        session.links[handle] = link
        if client_is_receiver:
            if link.partition_id is not None:
                link.wake = lambda s=session, l=link: self._pump(s, l)
                self.hub.subscribe(link.partition_id, link.wake)
        else:
            self._grant(session, link)

    def _session_flow_fields(self, session: _Session) -> dict:
        session.incoming_left = SESSION_WINDOW
        return dict(next_incoming_id=session.next_incoming_id, incoming_window=SESSION_WINDOW,
                    next_outgoing_id=session.next_outgoing_id, outgoing_window=SESSION_WINDOW)

    def _grant(self, session: _Session, link: _Link) -> None:
        link.credit = PRODUCER_LINK_CREDIT
        self._write_frame(session.channel, perf.FlowFrame(
            **self._session_flow_fields(session), handle=link.handle, delivery_count=link.delivery_count,
            link_credit=link.credit, available=None, drain=False, echo=False, properties=None))

    def _flow(self, session: _Session, f: list) -> None:
        next_incoming_id = f[0] if f[0] is not None else 0
        session.remote_incoming_window = next_incoming_id + (f[1] or 0) - session.next_outgoing_id
        link = session.links.get(f[4]) if f[4] is not None else None
        if link is None:
            for each in session.links.values():
                if each.server_sends:
                    self._pump(session, each)
            return
        if link.server_sends:
            credit = f[6] or 0
            link.credit = (f[5] + credit - link.delivery_count) if f[5] is not None else credit
            self._pump(session, link)
            if f[8] and link.credit > 0:           # drain: nothing left, so use up the credit
                link.delivery_count += link.credit
                link.credit = 0
                self._link_flow(session, link)
            elif f[9]:                             # echo
                self._link_flow(session, link)
        elif f[9]:
            self._link_flow(session, link)

    def _link_flow(self, session: _Session, link: _Link) -> None:
        self._write_frame(session.channel, perf.FlowFrame(
            **self._session_flow_fields(session), handle=link.handle, delivery_count=link.delivery_count,
            link_credit=link.credit, available=0, drain=False, echo=False, properties=None))

    # -- us -> client
    def _deliver(self, session: _Session, link: _Link, payload: bytes) -> None:
        """Send one pre-settled delivery, split into frames of the client's max frame size."""
        delivery_id = session.next_delivery_id
        session.next_delivery_id += 1
        tag = struct.pack(">I", delivery_id & 0xFFFFFFFF)
        room = max(512, self.remote_max_frame - 256)       # 256 covers the transfer performative + header
        chunks = [payload[i:i + room] for i in range(0, len(payload), room)] or [b""]
        for i, chunk in enumerate(chunks):
            self._write_frame(session.channel, perf.TransferFrame(
                handle=link.handle, delivery_id=delivery_id, delivery_tag=tag, message_format=0,
                settled=True, more=i < len(chunks) - 1, payload=chunk))
            session.next_outgoing_id += 1
            session.remote_incoming_window -= 1
        link.delivery_count += 1
        link.credit -= 1

    def _pump(self, session: _Session, link: _Link) -> None:
        if self.closed or self.sessions.get(session.channel) is not session:
            return
        while link.outbox and link.credit > 0 and session.remote_incoming_window > 0:
            self._deliver(session, link, link.outbox.pop(0))
        if link.partition_id is None:
            return
        part = self.hub.partitions[link.partition_id]
        while link.credit > 0 and session.remote_incoming_window > 0 and link.next_index < len(part):
            record = part.records[link.next_index]
            self._deliver(session, link, self._event_payload(part, record, link.runtime_metric))
            link.next_index += 1

    def _event_payload(self, part: PartitionLog, record: EventRecord, runtime_metric: bool) -> bytes:
        sections = split_sections(part.read(record))
        annotations: dict = {}
        for code, raw in sections:
            if code == _SEC_MESSAGE_ANN:
                annotations.update(decode_payload(memoryview(raw)).message_annotations or {})
        annotations[b"x-opt-sequence-number"] = _long(record.sequence_number)
        annotations[b"x-opt-offset"] = str(record.offset)
        annotations[b"x-opt-enqueued-time"] = _timestamp(record.enqueued_ms)
        if record.partition_key is not None:
            annotations[b"x-opt-partition-key"] = {TYPE: AMQPTypes.string, VALUE: record.partition_key}
        out = bytearray()
        out += b"".join(raw for code, raw in sections if code == _SEC_HEADER)
        if runtime_metric and part.last is not None:
            last = part.last
            out += _encode_annotations_section(_SEC_DELIVERY_ANN, {
                b"last_enqueued_sequence_number": _long(last.sequence_number),
                b"last_enqueued_offset": str(last.offset),
                b"last_enqueued_time_utc": _timestamp(last.enqueued_ms),
                b"runtime_info_retrieval_time_utc": _timestamp(_now_ms())})
        out += _encode_annotations_section(_SEC_MESSAGE_ANN, annotations)
        out += b"".join(raw for code, raw in sections if code > _SEC_MESSAGE_ANN)
        return bytes(out)

    def _reply(self, session: _Session, request_link: _Link, request: Message, status: int,
               description: str, body: Any = None) -> None:
        reply_to = _text(request.properties.reply_to) if request.properties else None
        link = next((l for l in session.links.values() if l.server_sends and l.partition_id is None
                     and l.source in (request_link.target, reply_to)), None)
        if link is None:
            log.warning("no reply link for a request on %s", request_link.target)
            return
        props = Properties(correlation_id=request.properties.message_id) if request.properties else None
        out = bytearray()
        encode_payload(out, Message(properties=props, value=body, application_properties={
            "status-code": status, "status-description": description}))
        link.outbox.append(bytes(out))
        self._pump(session, link)

    # -- client -> us
    def _transfer(self, session: _Session, f: list) -> None:
        session.next_incoming_id += 1
        session.incoming_left -= 1
        link = session.links.get(f[0])
        if link is None or link.server_sends:
            raise _ProtocolError(f"transfer on unknown or wrong-direction handle {f[0]}")
        if not link.partial and f[1] is not None:
            link.partial_delivery, link.partial_format = f[1], f[3] or 0
            link.partial_settled = bool(f[4])
        link.partial += bytes(f[11] or b"")
        if f[9]:                                    # aborted
            link.partial = bytearray()
            return
        if f[5]:                                    # more frames follow
            if len(link.partial) > self.server.max_message_size + 64 * 1024:
                raise _ProtocolError("delivery too large")
            return
        raw, link.partial = bytes(link.partial), bytearray()
        link.delivery_count += 1
        link.credit -= 1
        state: Any = Accepted()
        try:
            if link.target == "$cbs":
                self._reply(session, link, decode_payload(memoryview(raw)), 202, "Accepted")
            elif link.target == "$management":
                self._management(session, link, decode_payload(memoryview(raw)))
            elif len(raw) > self.server.max_message_size:
                state = Rejected(error=AMQPError(
                    condition=b"amqp:link:message-size-exceeded",
                    description=f"message of {len(raw)} bytes exceeds {self.server.max_message_size}"))
            else:
                self._publish(link, raw)
        except ValueError as exc:
            log.info("rejecting a delivery: %s", exc)
            state = Rejected(error=AMQPError(condition=b"amqp:decode-error", description=str(exc)))
        if not link.partial_settled:
            self._write_frame(session.channel, perf.DispositionFrame(
                role=True, first=link.partial_delivery, last=link.partial_delivery, settled=True,
                state=state, batchable=None))
        if link.credit < PRODUCER_LINK_CREDIT // 2 or session.incoming_left < SESSION_WINDOW // 2:
            self._grant(session, link)

    def _publish(self, link: _Link, raw: bytes) -> None:
        split_sections(raw)                                   # validate before storing anything
        outer = decode_payload(memoryview(raw))
        outer_key = (outer.message_annotations or {}).get(b"x-opt-partition-key")
        if link.partial_format == BATCH_MESSAGE_FORMAT:
            inner = [(bytes(d), None) for d in (outer.data or [])]
        else:
            inner = [(raw, outer)]
        events = []
        for message, decoded in inner:
            if decoded is None:
                split_sections(message)                       # validate now, not at delivery time
                decoded = decode_payload(memoryview(message))
            key = (decoded.message_annotations or {}).get(b"x-opt-partition-key", outer_key)
            if isinstance(key, str):
                key = key.encode("utf-8")
            elif key is not None:
                key = bytes(key)
            events.append((self.hub.route(link.partition_id, key), message, key))
        if events:
            self.hub.publish(events)

    def _management(self, session: _Session, link: _Link, request: Message) -> None:
        props = {_text(k): _text(v) for k, v in (request.application_properties or {}).items()
                 if _text(k) != "security_token"}
        operation, kind = props.get("operation"), props.get("type")
        if operation != "READ":
            self._reply(session, link, request, 501, f"operation {operation!r} not implemented")
            return
        if (props.get("name") or "").lower() != self.hub.name.lower():
            self._reply(session, link, request, 404, f"no event hub {props.get('name')!r}")
            return
        if kind == "com.microsoft:eventhub":
            body = {"name": self.hub.name, "type": kind, "created_at": _timestamp(self.hub.created_ms),
                    "partition_count": len(self.hub.partition_ids), "partition_ids": self.hub.partition_ids}
        elif kind == "com.microsoft:partition":
            pid = props.get("partition")
            part = self.hub.partitions.get(str(pid))
            if part is None:
                self._reply(session, link, request, 404, f"no partition {pid!r}")
                return
            last = part.last
            body = {"name": self.hub.name, "type": kind, "partition": pid,
                    "begin_sequence_number": _long(0),
                    "last_enqueued_sequence_number": _long(last.sequence_number if last else -1),
                    "last_enqueued_offset": str(last.offset) if last else "-1",
                    "last_enqueued_time_utc": _timestamp(last.enqueued_ms if last else 0),
                    "is_partition_empty": last is None}
        else:
            self._reply(session, link, request, 400, f"unknown entity type {kind!r}")
            return
        self._reply(session, link, request, 200, "OK", body)


class _Server:
    def __init__(self, hub: EventHub, max_message_size: int):
        self.hub, self.max_message_size = hub, max_message_size
        self.connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self.connections.add(conn)
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass                    # stop(): end quietly (asyncio logs cancelled client_connected_cb tasks)
        finally:
            self._tasks.discard(task)

    async def close_all(self) -> None:
        """Send close to every client and drop its transport; handlers then end on EOF by themselves."""
        for conn in list(self.connections):
            conn.close(AMQPError(condition=b"amqp:connection:forced", description="server stopping"))
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)


# ------------------------------------------------------------------------------------------ public API
class LocalEventHubs:
    """A local, durable Event Hubs namespace with one hub, served from a background thread.

    Args:
        data_dir: where the hub's partition logs live (created if missing; reused on restart).
        hub: event hub name (the connection string's EntityPath).
        partitions: partition count ("0".."N-1"); must match what ``data_dir`` was created with.
        host: interface to listen on (loopback by default; there is no authentication).
        port: TCP port; None picks a free one (read it back from ``.port`` after ``start()``).
        consumer_groups: consumer groups receivers may use (case-insensitive).
        fsync: fsync each appended batch before acknowledging it (turn off only for throwaway data).
        max_message_size: largest accepted delivery (single event or batch) in bytes.
    """

    def __init__(self, data_dir, hub: str = DEFAULT_HUB, partitions: int = DEFAULT_PARTITIONS,
                 host: str = DEFAULT_HOST, port: Optional[int] = None,
                 consumer_groups: Iterable[str] = DEFAULT_CONSUMER_GROUPS, *, fsync: bool = True,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        if not _HUB_NAME_RE.match(hub):
            raise ValueError(f"invalid hub name {hub!r}")
        self.data_dir = Path(data_dir)
        self.hub_name, self.partitions, self.host = hub, int(partitions), host
        self._requested_port = port
        self.consumer_groups = tuple(consumer_groups)
        self.fsync, self.max_message_size = fsync, max_message_size
        self._port: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._hub: Optional[EventHub] = None
        self._asyncio_server: Optional[asyncio.base_events.Server] = None
        self._server: Optional[_Server] = None
        self._stop_lock = threading.Lock()

    # -- properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def endpoint(self) -> str:
        return f"sb://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return (f"Endpoint={self.endpoint};SharedAccessKeyName=local;SharedAccessKey=local;"
                f"UseDevelopmentEmulator=true;EntityPath={self.hub_name}")

    def partition_sizes(self) -> dict:
        """{partition id: events stored in it}, counted in the partition logs (the endpoint's own count)."""
        if self._hub is None:
            raise RuntimeError("not started")
        return {pid: len(part) for pid, part in self._hub.partitions.items()}

    # -- lifecycle
    def start(self, timeout: float = 10.0) -> "LocalEventHubs":
        """Load the logs, start listening in a background thread, return once connections are accepted."""
        if self.running:
            return self
        self._hub = EventHub(self.data_dir, self.hub_name, self.partitions, self.consumer_groups, self.fsync)
        self._server = _Server(self._hub, self.max_message_size)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        async def listen() -> None:
            self._asyncio_server = await asyncio.start_server(
                self._server.handle, self.host, self._requested_port or 0, reuse_address=True)
            self._port = self._asyncio_server.sockets[0].getsockname()[1]

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(listen())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"eventhubs-local-{self.hub_name}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self.stop()
            if failure:
                raise RuntimeError(f"could not start the Event Hubs endpoint: {failure[0]}") from failure[0]
            raise RuntimeError("the Event Hubs endpoint did not start in time")
        with socket.create_connection((self.host, self._port), timeout=timeout):
            pass                                                   # really accepting
        log.info("Event Hubs endpoint %s (hub %s, %d partitions, data in %s)",
                 self.endpoint, self.hub_name, self.partitions, self.data_dir)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, stop the loop thread and close the logs. Safe to call repeatedly."""
        with self._stop_lock:
            loop, thread = self._loop, self._thread
            if loop is not None and thread is not None and thread.is_alive():
                async def shutdown() -> None:
                    if self._asyncio_server is not None:
                        self._asyncio_server.close()
                    if self._server is not None:
                        await self._server.close_all()
                    if self._asyncio_server is not None:
                        await asyncio.wait_for(self._asyncio_server.wait_closed(), 2)

                try:
                    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
                except Exception as exc:  # noqa: BLE001 - still stop the loop
                    log.warning("unclean Event Hubs endpoint shutdown: %r", exc)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                if thread.is_alive():
                    log.error("Event Hubs endpoint thread did not stop within %ss", timeout)
            if loop is not None and not loop.is_running() and not loop.is_closed():
                loop.close()
            if self._hub is not None:
                self._hub.close()
            self._loop = self._thread = self._hub = self._server = self._asyncio_server = None

    def __enter__(self) -> "LocalEventHubs":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"LocalEventHubs(hub={self.hub_name!r}, partitions={self.partitions}, {state}, data_dir={str(self.data_dir)!r})"


# ------------------------------------------------------------------------------------------ CLI
def _build_parser() -> argparse.ArgumentParser:
    from beam_pipeline.cli import ArgumentParser
    parser = ArgumentParser(
        prog="python -m runners.eventhubs_local",
        description="Local, durable Azure Event Hubs stand-in for the azure-eventhub SDK (plain AMQP, "
                    "no authentication; clients must use UseDevelopmentEmulator=true).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the endpoint in the foreground (Ctrl-C stops)",
                           description="Serve one event hub in the foreground until Ctrl-C / SIGTERM. "
                                       "Prints the connection string to use on stdout.")
    serve.add_argument("--data-dir", required=True,
                       help="directory for the partition logs; reusing it serves previously sent events")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_CLI_PORT,
                       help=f"TCP port, 0 for a free one (default {DEFAULT_CLI_PORT})")
    serve.add_argument("--hub", default=DEFAULT_HUB, help=f"event hub name / EntityPath (default {DEFAULT_HUB})")
    serve.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                       help=f"partition count; must match an existing data dir (default {DEFAULT_PARTITIONS})")
    serve.add_argument("--consumer-group", action="append", dest="consumer_groups", metavar="NAME",
                       help="allowed consumer group, repeatable (default: $Default only)")
    serve.add_argument("--no-fsync", action="store_true",
                       help="flush but do not fsync appended events (faster, not crash-safe)")
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoint = LocalEventHubs(args.data_dir, hub=args.hub, partitions=args.partitions, host=args.host,
                              port=args.port or None,
                              consumer_groups=args.consumer_groups or DEFAULT_CONSUMER_GROUPS,
                              fsync=not args.no_fsync)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if hasattr(signal, "SIGUSR1"):  # kill -USR1 <pid>: every thread's stack on stderr, to see where it hangs
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    endpoint.start()
    print(endpoint.connection_string, flush=True)
    try:
        while not stop.wait(0.5):
            if not endpoint.running:
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
