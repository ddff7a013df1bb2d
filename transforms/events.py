"""Events from a hub partition -> the chunks the batch parser reads, with event time and lateness decided
first.

The streaming source hands over ``EventBatch``es: consecutive events of one partition (sequence numbers
without gaps) plus the reader's watermark *before* these events. ``prepare_events`` turns one into

- dead letters for events that cannot enter the parser as a line: an empty body (``empty_event``), and
  an event whose every window has closed (``too_late``: latest window end + allowed lateness at or behind
  the watermark, decided with the raw body at hand so the dead letter keeps it);
- one ``Chunk`` holding the other bodies as lines, positioned by sequence number, so the batch parser,
  its dead letters and its counts apply unchanged (``source`` = ``eventhub:<hub>/<partition>``,
  ``source_position`` = sequence number). Events already dead-lettered become blank lines, which the
  parser skips, so positions stay aligned. A line break inside a body (pretty-printed JSON) becomes a
  space: JSON whitespace outside strings, and an unescaped line break inside a string is invalid JSON
  either way.

Event time is the review's ``unixReviewTime`` (the same coercion the parser applies) or the event's
enqueued time, in whole seconds; it is known before parsing so the reader can hold its watermark on it.
"""
from typing import NamedTuple

import numpy as np

from transforms import reasons
from transforms.dead_letters import DEFAULT_PAYLOAD_BYTES, dead_letter
from transforms.parse import Chunk, review_time_of
from transforms.windows import latest_window_closed

REVIEW_TIME, ENQUEUED_TIME = "review_time", "enqueued_time"
CLOCKS = (REVIEW_TIME, ENQUEUED_TIME)
UNKNOWN = np.iinfo(np.int64).min  # event time not known before parsing (the parser will reject the body)


class EventBatch(NamedTuple):
    """Consecutive events of one partition, as read."""
    hub: str
    partition: str
    first_seq: int
    offsets: tuple            # str per event
    enqueued_ms: np.ndarray   # int64 per event
    event_s: np.ndarray       # int64 seconds per event on the chosen clock (UNKNOWN if not known)
    bodies: tuple             # bytes per event
    watermark_s: int | None   # the partition's watermark before these events (None: not started)

    @property
    def source(self):
        return source_name(self.hub, self.partition)

    @property
    def last_seq(self):
        return self.first_seq + len(self.bodies) - 1


class EventMeta(NamedTuple):
    """What the streaming steps after cleaning need from the events of a chunk."""
    partition: str
    first_seq: int
    enqueued_ms: np.ndarray
    event_s: np.ndarray
    watermark_s: int | None


def source_name(hub, partition):
    return f"eventhub:{hub}/{partition}"


def event_times(bodies, enqueued_ms, clock, max_record_bytes):
    """-> int64 seconds per event on ``clock``; review time comes from the body (UNKNOWN when the body
    is too large, not JSON or has no usable unixReviewTime: the parser and cleaner then reject it)."""
    if clock == ENQUEUED_TIME:
        return np.asarray(enqueued_ms, dtype=np.int64) // 1000
    out = np.full(len(bodies), UNKNOWN, dtype=np.int64)
    for i, body in enumerate(bodies):
        if len(body) <= max_record_bytes:
            t = review_time_of(body)
            if t is not None:
                out[i] = t
    return out


def prepare_events(batch, spec, allowed_lateness_s, max_payload_bytes=DEFAULT_PAYLOAD_BYTES):
    """EventBatch -> (Chunk with EventMeta, dead letters, records): ``records`` counts every event, the
    dead-lettered ones included (the parser counts only the lines it sees)."""
    source, dead, lines = batch.source, [], []
    late = np.zeros(len(batch.bodies), dtype=bool)
    if batch.watermark_s is not None:
        known = batch.event_s != UNKNOWN
        late[known] = latest_window_closed(batch.event_s[known], spec, batch.watermark_s, allowed_lateness_s)
    for i, body in enumerate(batch.bodies):
        seq = batch.first_seq + i
        if not body.strip():
            dead.append(dead_letter("review", reasons.PARSE, reasons.EMPTY_EVENT, source, seq, body,
                                    "event body is empty", max_payload_bytes))
            lines.append(b"")
        elif late[i]:
            dead.append(dead_letter("review", reasons.WINDOW, reasons.TOO_LATE, source, seq, body,
                                    f"event time {int(batch.event_s[i])} s: window closed at watermark "
                                    f"{batch.watermark_s} s (allowed lateness {allowed_lateness_s} s)",
                                    max_payload_bytes))
            lines.append(b"")
        else:
            lines.append(body.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in body or b"\r" in body
                         else body)
    meta = EventMeta(batch.partition, batch.first_seq, batch.enqueued_ms, batch.event_s, batch.watermark_s)
    chunk = Chunk(b"\n".join(lines) + b"\n", source, batch.first_seq, meta)
    return chunk, dead, len(batch.bodies)


def row_event_times(table, meta, clock):
    """Event time (int64 seconds) of each clean row of a chunk: its review time, or the enqueued time of
    the event it came from (rows are matched to events by sequence number)."""
    if clock == REVIEW_TIME:
        return table["unix_review_time"].to_numpy()
    return np.asarray(meta.enqueued_ms, dtype=np.int64)[table["source_position"].to_numpy() - meta.first_seq] // 1000
