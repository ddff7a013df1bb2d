"""Durable per-partition checkpoints for the streaming job, committed together with its outputs.

A streaming run stages its files under ``OUTPUT/_staging/RUN_ID/`` and commits once every output that
holds its events is written:

1. write ``_commit.json`` (the intent): the files to move and the checkpoint they complete;
2. move the staged files into the tables (names carry the run id: runs append, never overwrite);
3. write ``checkpoint.json`` (per partition: last sequence number, watermark; and where the gold
   partials of the windows the run left open are), then delete the intent.

A run killed before step 1 leaves only staging, which the next start deletes: it reads again from the
old checkpoint, so nothing is lost and nothing counted twice. A run killed during steps 2-3 leaves the
intent, and the next start finishes it (moves are idempotent: a file already moved is skipped). Local
directories and ``azfs://`` both work (everything goes through Beam's ``FileSystems``); on Azure
Blob a move is copy + delete, which the intent makes safe to repeat.
"""
import datetime
import json
import logging
import os

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import coders, io

LOG = logging.getLogger("reviews")
CHECKPOINT_FILE, INTENT_FILE = "checkpoint.json", "_commit.json"
GOLD_STATE_DIR = "gold_state"


def _read_json(path):
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read())


def _write_json(obj, path):
    """Written under a temporary name and renamed: a kill mid-write never leaves half a file."""
    tmp = path + ".tmp"
    io.write_bytes(json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n", tmp)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class CheckpointStore:
    """Checkpoints of one hub and consumer group under ``root`` (a local path or azfs:// URL)."""

    def __init__(self, root):
        self.root = root
        self.checkpoint_path = io.join(root, CHECKPOINT_FILE)
        self.intent_path = io.join(root, INTENT_FILE)

    def load(self):
        """-> {partition: {"sequence_number": n, "watermark_s": w}} ({} before the first commit)."""
        saved = _read_json(self.checkpoint_path)
        return dict(saved["partitions"]) if saved else {}

    def recover(self):
        """Finish a commit that a killed run left half done. Returns True if there was one."""
        try:
            intent = _read_json(self.intent_path)
        except ValueError:  # cut short while written (older versions wrote in place): nothing was moved yet
            LOG.warning("discarding an unreadable commit intent %s: no file had been moved", self.intent_path)
            FileSystems.delete([self.intent_path])
            return False
        if intent is None:
            return False
        LOG.warning("finishing the commit of run %s, interrupted earlier", intent["run_id"])
        self._apply(intent)
        return True

    def merged_positions(self, positions, max_out_of_orderness_s):
        """The stored partitions updated with this run's ``{partition: (last seq, largest event time)}``:
        sequence numbers and watermarks never go backwards."""
        partitions = self.load()
        for pid, (last_seq, max_event_s) in positions.items():
            old = partitions.get(pid, {})
            watermark = None if max_event_s is None else max_event_s - max_out_of_orderness_s
            if old.get("watermark_s") is not None:
                watermark = old["watermark_s"] if watermark is None else max(watermark, old["watermark_s"])
            partitions[pid] = {"sequence_number": max(last_seq, old.get("sequence_number", -1)),
                               "watermark_s": watermark}
        return partitions

    def watermark_after(self, positions, max_out_of_orderness_s):
        """The hub's watermark once these positions are committed: the least partition watermark (None
        while a partition has none)."""
        marks = [v.get("watermark_s") for v in self.merged_positions(positions, max_out_of_orderness_s).values()]
        return None if not marks or any(m is None for m in marks) else min(marks)

    # -- gold partials of windows a run left open
    def stage_gold_state(self, layout, tables, spec):
        """Write ``{family: merged partials}`` to the run's staging; -> the moves that put them in place."""
        moves = []
        for name, table in sorted(tables.items()):
            rel = f"_gold_state/{name}.arrow"
            layout.write(lambda t, path: io.write_bytes(coders.table_to_bytes(t), path), table, rel)
            moves.append((layout.staged(rel), io.join(self.root, GOLD_STATE_DIR, layout.run_id, f"{name}.arrow")))
        return moves

    def load_gold_state(self, spec):
        """-> [(family, partial of one window)] the last commit left open, if it used the same windows."""
        saved = _read_json(self.checkpoint_path)
        record = (saved or {}).get("gold_state")
        if not record:
            return []
        if (record["window_size_s"], record["window_period_s"]) != (spec.size_s, spec.period_s):
            LOG.warning("the last run used other windows (%s s every %s s): its open windows' gold is not "
                        "carried over", record["window_size_s"], record["window_period_s"])
            return []
        out = []
        for path in record["files"]:
            name = path.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1][:-len(".arrow")]
            with FileSystems.open(path) as fh:
                table = coders.table_from_bytes(fh.read())
            starts = table["window_start"].cast(pa.int64()).to_numpy()
            for start in np.unique(starts):
                out.append((name, table.filter(pa.array(starts == start))))
        LOG.info("carrying over the gold of %d open (family, window) pairs from run %s", len(out), saved["run_id"])
        return out

    def commit(self, run_id, moves, positions, max_out_of_orderness_s, gold_state=None):
        """Move staged files (``[(src, dst)]``) into place and store the new positions
        (``{partition: (last sequence number, largest event time seen)}``) and the record of the gold
        partials left open (``gold_state``), atomically as described above."""
        partitions = self.merged_positions(positions, max_out_of_orderness_s)
        checkpoint = {"partitions": partitions, "run_id": run_id,
                      "committed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        if gold_state is not None:
            checkpoint["gold_state"] = gold_state
        intent = {"run_id": run_id, "moves": [list(m) for m in moves], "checkpoint": checkpoint}
        _write_json(intent, self.intent_path)
        self._apply(intent)

    def _apply(self, intent):
        for src, dst in intent["moves"]:
            if FileSystems.exists(src):
                io.ensure_parent(dst)
                if FileSystems.exists(dst):
                    FileSystems.delete([dst])  # a copy interrupted half way
                FileSystems.rename([src], [dst])
            elif not FileSystems.exists(dst):
                raise RuntimeError(f"commit of run {intent['run_id']}: {src} is missing and was never moved")
        _write_json(intent["checkpoint"], self.checkpoint_path)
        FileSystems.delete([self.intent_path])
        self._drop_old_gold_state(intent["run_id"])
        LOG.info("committed run %s: %d files, checkpoint %s", intent["run_id"], len(intent["moves"]),
                 ", ".join(f"{p}@{v['sequence_number']}" for p, v in sorted(intent["checkpoint"]["partitions"].items())))

    def _drop_old_gold_state(self, run_id):
        """Gold state of earlier commits is superseded by this one's (best effort; it is never read)."""
        root = io.join(self.root, GOLD_STATE_DIR)
        try:
            old = [m.path for r in FileSystems.match([io.join(root, "**")]) for m in r.metadata_list
                   if f"/{run_id}/" not in m.path.replace(os.sep, "/")]
        except Exception:  # noqa: BLE001 - nothing there
            return
        if old:
            FileSystems.delete(old)
