"""Unit tests for beam_pipeline.checkpoints.CheckpointStore on local temporary directories.

A commit is: write the intent (``_commit.json``), move the staged files, write ``checkpoint.json``,
delete the intent. These tests drive each step and the crash points between them. A crash mid-commit is
simulated by making ``FileSystems.rename`` raise after the first move (the process would die there; the
next start calls ``recover()`` on a fresh store). Every expectation is written out by hand: the moved
files' bytes, and the checkpoint documents in full (only ``committed_at`` is taken from the file, after
checking it is an ISO-8601 UTC time within the test's run).
"""
import datetime
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.checkpoints import CHECKPOINT_FILE, CheckpointStore

HOUR = 3600


# ---------------------------------------------------------------------------------------------------
# helpers

@pytest.fixture
def out(tmp_path):
    """An output root with three staged files of run ``run-1``; returns (root, moves, expected bytes)."""
    root = tmp_path / "out"
    staged = {
        "silver/reviews/year=2014/month=3/part-20140301T000000-p000-b003-run-1.parquet": b"silver rows\x00\x01",
        "gold/reviews_by_day/part-20140301T000000-p000-run-1.parquet": b"gold table",
        "dead_letters/reviews-20140301T000000-p000-s02-run-1.jsonl": b'{"reason": "malformed_json"}\n',
    }
    moves = []
    for rel, data in staged.items():
        src = root / "_staging" / "run-1" / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        moves.append((str(src), str(root / rel)))
    return root, moves, {dst: staged[rel] for (_, dst), rel in zip(moves, staged)}


def _store(root):
    return CheckpointStore(str(root / "_checkpoints" / "reviews" / "Default"))


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _committed_at(doc, since):
    """The document's committed_at, checked to be an ISO-8601 UTC time (seconds) between ``since`` and now."""
    text = doc["committed_at"]
    when = datetime.datetime.fromisoformat(text)
    assert when.utcoffset() == datetime.timedelta(0), text
    assert when.microsecond == 0, text
    now = datetime.datetime.now(datetime.timezone.utc)
    assert since.replace(microsecond=0) <= when <= now, (since, text, now)
    return text


def _tree(root):
    """{relative path: bytes} of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _crash_after_moves(monkeypatch, n):
    """Make FileSystems.rename move ``n`` staged files, then raise (the process "dies" in the next move).
    The store's own write-then-rename of its JSON files (``*.tmp``) is not a move and goes through."""
    real = FileSystems.rename
    done = []

    def rename(sources, destinations):
        if all(src.endswith(".tmp") for src in sources):
            return real(sources, destinations)
        if len(done) >= n:
            raise OSError("simulated crash during the commit")
        done.append(sources)
        return real(sources, destinations)

    monkeypatch.setattr(FileSystems, "rename", staticmethod(rename))
    return done


def _commit_killed_after(store, moves, monkeypatch, n):
    """``store.commit`` of run-1 (partition 0 at 10) dies after ``n`` moves; the patch is undone after."""
    _crash_after_moves(monkeypatch, n)
    with pytest.raises(OSError):
        store.commit("run-1", moves, {"0": (10, 1_000_000)}, HOUR)
    monkeypatch.undo()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------------
# load / commit

def test_load_and_recover_before_any_commit(tmp_path):
    store = _store(tmp_path)
    assert store.load() == {}
    assert store.recover() is False
    assert not (tmp_path / "_checkpoints").exists()     # neither call creates anything


def test_commit_moves_the_files_and_writes_the_checkpoint(out):
    root, moves, expected = out
    store = _store(root)
    since = _now()
    store.commit("run-1", moves, {"0": (10, 1_000_000), "1": (4, None), "3": (0, 7 * HOUR)}, HOUR)

    for src, dst in moves:
        assert not os.path.exists(src)
        assert Path(dst).read_bytes() == expected[dst]
    doc = _read(store.checkpoint_path)
    assert doc == {
        "partitions": {
            "0": {"sequence_number": 10, "watermark_s": 1_000_000 - HOUR},
            "1": {"sequence_number": 4, "watermark_s": None},       # no event time seen: no watermark
            "3": {"sequence_number": 0, "watermark_s": 6 * HOUR},
        },
        "run_id": "run-1",
        "committed_at": _committed_at(doc, since),
    }
    assert not os.path.exists(store.intent_path)
    assert sorted(os.listdir(store.root)) == [CHECKPOINT_FILE]
    assert store.load() == doc["partitions"]
    assert store.recover() is False                      # nothing half done


def test_commit_merges_with_the_previous_checkpoint_and_never_goes_backwards(out):
    root, moves, _ = out
    store = _store(root)
    store.commit("run-1", moves, {"0": (10, 1_000_000), "1": (4, None), "2": (7, 50 * HOUR), "3": (3, 9 * HOUR)},
                 HOUR)
    src = root / "_staging" / "run-2" / "gold" / "x" / "part-run-2.parquet"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"run 2")
    since = _now()
    # a different max_out_of_orderness than run 1: the watermark is stored in seconds, not recomputed
    store.commit("run-2", [(str(src), str(root / "gold" / "x" / "part-run-2.parquet"))], {
        "0": (25, 990_000),          # seq advances; watermark (990_000 - 2h) would go back: stays
        "1": (2, 2_000_000),         # seq would go back: stays 4; first watermark for the partition
        "2": (8, None),              # no event time this run: the old watermark stays
        "4": (0, 3 * HOUR),          # a partition seen for the first time
    }, 2 * HOUR)                     # "3" not read this run: kept as it was

    assert (root / "gold" / "x" / "part-run-2.parquet").read_bytes() == b"run 2"
    doc = _read(store.checkpoint_path)
    assert doc == {
        "partitions": {
            "0": {"sequence_number": 25, "watermark_s": 1_000_000 - HOUR},
            "1": {"sequence_number": 4, "watermark_s": 2_000_000 - 2 * HOUR},
            "2": {"sequence_number": 8, "watermark_s": 49 * HOUR},
            "3": {"sequence_number": 3, "watermark_s": 8 * HOUR},
            "4": {"sequence_number": 0, "watermark_s": 1 * HOUR},
        },
        "run_id": "run-2",
        "committed_at": _committed_at(doc, since),
    }
    # run 1's files are still there: runs append
    assert len([p for p in _tree(root) if p.endswith("run-1.parquet") or p.endswith("run-1.jsonl")]) == 3


def test_commit_with_no_files_still_stores_the_positions(tmp_path):
    store = _store(tmp_path)
    store.commit("run-1", [], {"0": (5, 100 * HOUR)}, HOUR)
    assert store.load() == {"0": {"sequence_number": 5, "watermark_s": 99 * HOUR}}


# ---------------------------------------------------------------------------------------------------
# recover

def test_recover_finishes_a_commit_killed_after_the_first_move_and_is_idempotent(out, monkeypatch):
    root, moves, expected = out
    old = {"0": {"sequence_number": 3, "watermark_s": 500_000}, "1": {"sequence_number": 9, "watermark_s": None}}
    store = _store(root)
    os.makedirs(store.root)
    with open(store.checkpoint_path, "w", encoding="utf-8") as fh:   # an earlier run's checkpoint
        json.dump({"partitions": old, "run_id": "run-0", "committed_at": "2024-01-01T00:00:00+00:00"}, fh)
    old_bytes = Path(store.checkpoint_path).read_bytes()

    moved = _crash_after_moves(monkeypatch, 1)
    since = _now()
    with pytest.raises(OSError, match="simulated crash"):
        store.commit("run-1", moves, {"0": (10, 1_000_000), "1": (4, 2_000_000)}, HOUR)
    monkeypatch.undo()
    assert moved == [[moves[0][0]]]

    # the state a killed process leaves: the intent, one file moved, the rest staged, the old checkpoint
    intent = _read(store.intent_path)
    assert intent == {
        "run_id": "run-1",
        "moves": [list(m) for m in moves],
        "checkpoint": {
            "partitions": {"0": {"sequence_number": 10, "watermark_s": 1_000_000 - HOUR},
                           "1": {"sequence_number": 9, "watermark_s": 2_000_000 - HOUR}},
            "run_id": "run-1",
            "committed_at": _committed_at(intent["checkpoint"], since),
        },
    }
    assert Path(moves[0][1]).read_bytes() == expected[moves[0][1]] and not os.path.exists(moves[0][0])
    for src, dst in moves[1:]:
        assert os.path.exists(src) and not os.path.exists(dst)
    assert Path(store.checkpoint_path).read_bytes() == old_bytes
    assert store.load() == old

    # the next start (a new process: a new store) finishes it
    fresh = _store(root)
    assert fresh.recover() is True
    for src, dst in moves:
        assert not os.path.exists(src)
        assert Path(dst).read_bytes() == expected[dst]
    assert _read(fresh.checkpoint_path) == intent["checkpoint"]
    assert not os.path.exists(fresh.intent_path)
    assert fresh.load() == intent["checkpoint"]["partitions"]

    # and a second recover finds nothing to do and changes nothing
    before = _tree(root)
    assert _store(root).recover() is False
    assert _tree(root) == before


def test_recover_when_the_kill_came_after_the_checkpoint_was_written(out):
    """Killed between writing checkpoint.json and deleting the intent: every src is gone, every dst there."""
    root, moves, expected = out
    store = _store(root)
    store.commit("run-1", moves, {"0": (10, 1_000_000)}, HOUR)
    checkpoint = _read(store.checkpoint_path)
    with open(store.intent_path, "w", encoding="utf-8") as fh:          # put the intent back
        json.dump({"run_id": "run-1", "moves": [list(m) for m in moves], "checkpoint": checkpoint}, fh)

    assert _store(root).recover() is True
    assert _read(store.checkpoint_path) == checkpoint
    assert not os.path.exists(store.intent_path)
    for _, dst in moves:
        assert Path(dst).read_bytes() == expected[dst]


def test_recover_replaces_a_half_copied_destination(out, monkeypatch):
    """On object stores a move is copy + delete: a kill between them leaves src and a (maybe partial) dst.
    The staged src is the truth: it replaces the dst."""
    root, moves, expected = out
    store = _store(root)
    _commit_killed_after(store, moves, monkeypatch, 1)
    Path(moves[1][1]).parent.mkdir(parents=True, exist_ok=True)
    Path(moves[1][1]).write_bytes(b"half a co")

    assert _store(root).recover() is True
    for src, dst in moves:
        assert not os.path.exists(src)
        assert Path(dst).read_bytes() == expected[dst]
    assert store.load() == {"0": {"sequence_number": 10, "watermark_s": 1_000_000 - HOUR}}


def test_recover_raises_when_a_file_is_neither_staged_nor_moved(out, monkeypatch):
    root, moves, _ = out
    store = _store(root)
    _commit_killed_after(store, moves, monkeypatch, 1)
    os.remove(moves[2][0])                               # lost: neither at src nor at dst
    intent_bytes = Path(store.intent_path).read_bytes()

    with pytest.raises(RuntimeError, match=r"commit of run run-1: .* is missing and was never moved"):
        _store(root).recover()
    # no checkpoint that would claim the lost file's events, and the intent stays for a later look
    assert not os.path.exists(store.checkpoint_path)
    assert store.load() == {}
    assert Path(store.intent_path).read_bytes() == intent_bytes


def test_recover_discards_an_intent_torn_by_a_kill_while_it_was_written(out, monkeypatch):
    """Killed in step 1. The intent is now written to a temporary name and renamed, so a torn intent comes
    only from older versions or a filesystem without atomic rename; moves start only after the intent was
    written, so nothing moved: the commit never began, and the run must restart from the old checkpoint."""
    root, moves, _ = out
    store = _store(root)
    store.commit("run-0", [], {"0": (3, 500_000)}, HOUR)
    old = store.load()
    _commit_killed_after(store, moves, monkeypatch, 0)
    whole = Path(store.intent_path).read_bytes()
    Path(store.intent_path).write_bytes(whole[: len(whole) // 2])   # what the kill left

    fresh = _store(root)
    assert fresh.recover() is False
    assert not os.path.exists(fresh.intent_path)
    assert fresh.load() == old
    for src, dst in moves:                               # untouched: run() deletes staging next
        assert os.path.exists(src) and not os.path.exists(dst)


# ---------------------------------------------------------------------------------------------------
# gold partials of windows a run left open

def _partial(starts, n):
    from transforms.windows import TS
    return pa.table({"window_start": pa.array(starts, TS), "window_end": pa.array([s + 3600 for s in starts], TS),
                     "n_reviews": pa.array(n, pa.int64())})


def test_gold_state_is_committed_with_the_checkpoint_and_reloaded_per_window(tmp_path):
    from beam_pipeline import io
    from transforms.windows import WindowSpec
    spec = WindowSpec(3600)
    root = str(tmp_path / "ckpt")
    layout = io.Layout(str(tmp_path / "out"), "run-1", ())
    store = CheckpointStore(root)
    moves = store.stage_gold_state(layout, {"reviews": _partial([0, 0, 3600], [1, 2, 3])}, spec)
    store.commit("run-1", moves, {"0": (5, 7200)}, 0,
                 gold_state={"window_size_s": 3600, "window_period_s": None, "files": [d for _, d in moves]})
    loaded = CheckpointStore(root).load_gold_state(spec)
    assert [(name, t["n_reviews"].to_pylist()) for name, t in loaded] == [("reviews", [1, 2]), ("reviews", [3])]
    assert CheckpointStore(root).load_gold_state(WindowSpec(7200)) == []   # other windows: not carried
    # the next commit supersedes it: the old state file goes
    layout2 = io.Layout(str(tmp_path / "out"), "run-2", ())
    moves2 = store.stage_gold_state(layout2, {"reviews": _partial([3600], [4])}, spec)
    store.commit("run-2", moves2, {"0": (9, 9000)}, 0,
                 gold_state={"window_size_s": 3600, "window_period_s": None, "files": [d for _, d in moves2]})
    assert not os.path.exists(moves[0][1]) and os.path.exists(moves2[0][1])
    assert [(n, t["n_reviews"].to_pylist()) for n, t in store.load_gold_state(spec)] == [("reviews", [4])]


def test_watermark_after_is_the_least_partition_watermark(tmp_path):
    store = CheckpointStore(str(tmp_path))
    assert store.watermark_after({"0": (3, 1000), "1": (4, 5000)}, 100) == 900
    assert store.watermark_after({"0": (3, 1000), "1": (4, None)}, 100) is None  # a partition without one
    assert store.watermark_after({}, 100) is None
