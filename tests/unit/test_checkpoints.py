"""Streaming checkpoints: the position rules (``beam_pipeline.checkpoints``) and their storage in the
event log, committed with the run (``beam_pipeline.tables.commit_run`` / ``checkpoint`` / ``recover``),
on local Delta tables."""
import pyarrow as pa
import pytest

from beam_pipeline import tables
from beam_pipeline.checkpoints import checkpoint_key, combine_positions, merged_positions, partition_lag, watermark

HOUR = 3600
KEY = checkpoint_key("reviews", "$Default")


def test_merged_positions_never_go_backwards():
    stored = merged_positions({}, {"0": (10, 1_000_000), "1": (4, None), "2": (7, 50 * HOUR), "3": (3, 9 * HOUR)},
                              HOUR)
    assert stored == {"0": {"sequence_number": 10, "watermark_s": 1_000_000 - HOUR},
                      "1": {"sequence_number": 4, "watermark_s": None},
                      "2": {"sequence_number": 7, "watermark_s": 49 * HOUR},
                      "3": {"sequence_number": 3, "watermark_s": 8 * HOUR}}
    # a different max_out_of_orderness than before: stored watermarks are seconds, not recomputed
    after = merged_positions(stored, {
        "0": (25, 990_000),          # seq advances; the watermark (990_000 - 2h) would go back: stays
        "1": (2, 2_000_000),         # seq would go back: stays 4; first watermark for the partition
        "2": (8, None),              # no event time this run: the old watermark stays
        "4": (0, 3 * HOUR),          # a partition seen for the first time
    }, 2 * HOUR)                     # "3" not read this run: kept as it was
    assert after == {"0": {"sequence_number": 25, "watermark_s": 1_000_000 - HOUR},
                     "1": {"sequence_number": 4, "watermark_s": 2_000_000 - 2 * HOUR},
                     "2": {"sequence_number": 8, "watermark_s": 49 * HOUR},
                     "3": {"sequence_number": 3, "watermark_s": 8 * HOUR},
                     "4": {"sequence_number": 0, "watermark_s": 1 * HOUR}}
    assert stored["0"]["sequence_number"] == 10   # the input is not modified


def test_combine_positions_of_many_reader_batches():
    assert combine_positions([("0", 4, None), ("0", 9, 100), ("1", 3, 50), ("0", 7, 300), ("1", 2, None)]) == \
        {"0": (9, 300), "1": (3, 50)}
    assert combine_positions([]) == {}


def test_watermark_is_the_least_partition_watermark():
    assert watermark({"0": {"watermark_s": 50}, "1": {"watermark_s": 20}}) == 20
    assert watermark({"0": {"watermark_s": 50}, "1": {"watermark_s": None}}) is None
    assert watermark({}) is None


def _commit(loc, run_id, positions, fail_after=None, key=KEY):
    rows = pa.table({"x": [1]})
    adds = tables.write_files(loc, "t", rows, run_id)
    return tables.commit_run(loc, run_id, {"t": {"mode": "append", "adds": adds, "schema": rows.schema}},
                             tables.table_version(loc, tables.EVENTS), mode="stream", source="eventhub",
                             positions=positions, checkpoint_key=key, fail_after=fail_after)


def test_partition_lag_counts_events_enqueued_and_not_consumed():
    ends = {"0": {"beginning_sequence_number": 0, "last_enqueued_sequence_number": 99, "last_enqueued_time_s": 5},
            "1": {"beginning_sequence_number": 50, "last_enqueued_sequence_number": 80, "last_enqueued_time_s": 6},
            "2": {"beginning_sequence_number": 0, "last_enqueued_sequence_number": 9, "last_enqueued_time_s": 7},
            "3": {"beginning_sequence_number": 4, "last_enqueued_sequence_number": 3, "last_enqueued_time_s": None}}
    lag = partition_lag({"0": 59, "1": 10, "2": 9, "10": 3}, ends)
    assert list(lag) == ["0", "1", "2", "3", "10"]
    assert {pid: v["lag_events"] for pid, v in lag.items()} == {
        "0": 40,      # 60..99 not read
        "1": 31,      # 11..49 are past the retention horizon: only 50..80 can still be read
        "2": 0,       # read to the end
        "3": 0,       # an empty partition, never read
        "10": None}   # the hub did not answer for it
    assert lag["0"] == {"consumed_sequence_number": 59, "hub_last_sequence_number": 99, "hub_last_enqueued_time_s": 5,
                        "lag_events": 40}
    assert partition_lag({"0": 4}, {}) == {"0": {"consumed_sequence_number": 4, "hub_last_sequence_number": None,
                                                 "hub_last_enqueued_time_s": None, "lag_events": None}}


def test_positions_are_committed_with_the_rows_and_read_back(tmp_path):
    loc = tables.Location(str(tmp_path))
    assert tables.checkpoint(loc, KEY) == {}
    first = merged_positions({}, {"0": (5, 100 * HOUR)}, HOUR)
    _commit(loc, "run1", first)
    assert tables.checkpoint(loc, KEY) == first
    second = merged_positions(first, {"0": (9, 101 * HOUR), "1": (2, None)}, HOUR)
    _commit(loc, "run2", second)
    _commit(loc, "run3", {"0": {"sequence_number": 99, "watermark_s": None}}, key="other/$Default")
    assert tables.checkpoint(loc, KEY) == second            # another hub's commit does not touch it
    assert tables.read(loc, "t").num_rows == 3


@pytest.mark.parametrize("phase", ["intent", "claim", "t"])
def test_a_commit_stopped_after_a_phase_moves_rows_and_positions_together(tmp_path, phase):
    """Stopped before its claim: neither rows nor positions moved. Stopped after it: the next start
    (``recover``) finishes both."""
    loc = tables.Location(str(tmp_path))
    first = merged_positions({}, {"0": (5, 100 * HOUR)}, HOUR)
    _commit(loc, "run1", first)
    second = merged_positions(first, {"0": (9, 101 * HOUR)}, HOUR)
    with pytest.raises(tables.TableError):
        _commit(loc, "run2", second, fail_after=phase)
    claimed = phase != "intent"
    tables.recover(loc)
    assert tables.checkpoint(loc, KEY) == (second if claimed else first)
    assert tables.read(loc, "t").num_rows == (2 if claimed else 1)
    tables.recover(loc)   # idempotent
    assert tables.read(loc, "t").num_rows == (2 if claimed else 1)


def test_partition_ends_from_the_hub_properties_and_a_hub_that_does_not_answer():
    import datetime

    from beam_pipeline.eventhub import partition_end, partition_ends
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
    assert partition_end({"beginning_sequence_number": 5, "last_enqueued_sequence_number": 9,
                          "last_enqueued_time_utc": when, "is_empty": False}) == {
        "beginning_sequence_number": 5, "last_enqueued_sequence_number": 9, "last_enqueued_time_s": 1704153600}
    assert partition_end({"beginning_sequence_number": 0, "last_enqueued_sequence_number": 41,
                          "last_enqueued_time_utc": when, "is_empty": True}) == {
        "beginning_sequence_number": 42, "last_enqueued_sequence_number": 41, "last_enqueued_time_s": None}

    class Down:
        def consumer(self):
            raise ConnectionError("refused")
    assert partition_ends(Down(), deadline_s=5) == {}     # an observation: the commit goes on without it
