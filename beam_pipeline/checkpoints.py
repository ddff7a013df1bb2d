"""Per-partition checkpoints of the streaming job: where each Event Hubs partition's next read starts.

They live in the event log (``_pipeline/events``), not in files of their own: a bounded streaming run's
commit row carries the merged positions of its hub and consumer group (``checkpoint_key``), written in
the same run commit as the rows those events became (``beam_pipeline.tables.commit_run``). So the
positions move if and only if the outputs do: a run killed before its commit claim leaves both where
they were (the next run reads the same events again), and a run killed after its claim is finished,
positions included, by the next start (``tables.recover``).

The functions here are the rules, without I/O: how a run's last positions update the stored ones, and
the hub's watermark that follows.
"""


def checkpoint_key(hub_name, consumer_group):
    """The key a hub's positions are stored under in the event log."""
    return f"{hub_name or 'hub'}/{consumer_group or '$Default'}"


def merged_positions(stored, positions, max_out_of_orderness_s):
    """``stored`` ({partition: {"sequence_number", "watermark_s"}}) updated with a run's
    ``{partition: (last sequence number, largest event time seen or None)}``: sequence numbers and
    watermarks never go backwards; a partition's watermark trails its largest event time by the
    out-of-orderness bound."""
    partitions = {pid: dict(v) for pid, v in (stored or {}).items()}
    for pid, (last_seq, max_event_s) in positions.items():
        old = partitions.get(pid, {})
        watermark = None if max_event_s is None else max_event_s - max_out_of_orderness_s
        if old.get("watermark_s") is not None:
            watermark = old["watermark_s"] if watermark is None else max(watermark, old["watermark_s"])
        partitions[pid] = {"sequence_number": max(last_seq, old.get("sequence_number", -1)),
                           "watermark_s": watermark}
    return partitions


def combine_positions(items):
    """[(partition, last sequence number, largest event time or None)] from many reader batches ->
    {partition: (last sequence number, largest event time)}."""
    out = {}
    for pid, seq, event in items:
        old_seq, old_event = out.get(pid, (-1, None))
        out[pid] = (max(seq, old_seq), event if old_event is None else old_event if event is None
                    else max(old_event, event))
    return out


def watermark(partitions):
    """The hub's watermark: the least partition watermark (None while a partition has none)."""
    marks = [v.get("watermark_s") for v in partitions.values()]
    return None if not marks or any(m is None for m in marks) else min(marks)


def partition_lag(consumed, ends):
    """What a commit records of each partition: ``consumed`` ({partition: last sequence number consumed})
    beside the hub's ``ends`` ({partition: ``beam_pipeline.eventhub.partition_end``}) ->
    {partition: {"consumed_sequence_number", "hub_last_sequence_number", "hub_last_enqueued_time_s",
    "lag_events"}}. ``lag_events``: events enqueued and not consumed yet (those before the retention horizon,
    which no reader can get, are not counted); None where the hub's end is unknown."""
    out = {}
    for pid in sorted(set(consumed) | set(ends), key=lambda p: (len(p), p)):
        seq, end = consumed.get(pid), ends.get(pid)
        row = {"consumed_sequence_number": seq, "hub_last_sequence_number": None, "hub_last_enqueued_time_s": None,
               "lag_events": None}
        if end is not None:
            last = end["last_enqueued_sequence_number"]
            gone = end["beginning_sequence_number"] - 1     # the last number past the retention horizon
            done = gone if seq is None else max(seq, gone)
            row.update(hub_last_sequence_number=last, hub_last_enqueued_time_s=end.get("last_enqueued_time_s"),
                       lag_events=max(0, last - done))
        out[pid] = row
    return out
