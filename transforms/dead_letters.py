"""Dead-letter records: one dict per rejected record, with a bounded copy of the raw payload."""

DEFAULT_PAYLOAD_BYTES = 4096


def dead_letter(record_type, stage, reason, source, position, raw, detail=None,
                max_payload_bytes=DEFAULT_PAYLOAD_BYTES):
    """A dead letter as a plain dict (see ``transforms.schemas.DEAD_LETTER_SCHEMA``).

    ``raw`` is the record's bytes (or str); the payload keeps at most ``max_payload_bytes`` of it, decoded
    as UTF-8 with invalid bytes written as ``\\xNN`` escapes so a non-UTF-8 record survives JSON output.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    raw = bytes(raw or b"").rstrip(b"\r\n")
    cut = raw[:max_payload_bytes]
    return {
        "record_type": record_type,
        "stage": stage,
        "reason": reason,
        "detail": None if detail is None else str(detail)[:500],
        "source": source,
        "source_position": None if position is None else int(position),
        "payload": cut.decode("utf-8", "backslashreplace"),
        "payload_bytes": len(raw),
        "payload_truncated": len(raw) > max_payload_bytes,
    }


def counter_name(record_type, stage, reason):
    """Name of the Beam counter that counts these dead letters (namespace ``dead_letters``)."""
    return f"{record_type}.{stage}.{reason}"


RECORDED_KEY = ("record_type", "source", "source_position", "reason", "payload_bytes", "payload")


def recorded_key(letter):
    """What makes a dead letter the same as one already recorded: the same record type, source, position,
    reason and payload (a changed line at that position is a new dead letter)."""
    return tuple(letter[k] for k in RECORDED_KEY)
