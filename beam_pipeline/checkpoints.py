"""Durable per-partition checkpoints for the streaming job, committed together with its outputs.

A streaming run stages its files under ``OUTPUT/_staging/RUN_ID/`` and commits once every output that
holds its events is written:

1. write ``_commit.json`` (the intent): the files to move and the checkpoint they complete;
2. move the staged files into the tables (names carry the run id: runs append, never overwrite);
3. write ``checkpoint.json`` (per partition: last sequence number, watermark), then delete the intent.

A run killed before step 1 leaves only staging, which the next start deletes: it reads again from the
old checkpoint, so nothing is lost and nothing counted twice. A run killed during steps 2-3 leaves the
intent, and the next start finishes it (moves are idempotent: a file already moved is skipped). Local
directories and ``azfs://`` both work (everything goes through Beam's ``FileSystems``); on Azure
Blob a move is copy + delete, which the intent makes safe to repeat.
"""
import datetime
import json
import logging

from apache_beam.io.filesystems import FileSystems

from beam_pipeline import io

LOG = logging.getLogger("reviews")
CHECKPOINT_FILE, INTENT_FILE = "checkpoint.json", "_commit.json"


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

    def commit(self, run_id, moves, positions, max_out_of_orderness_s):
        """Move staged files (``[(src, dst)]``) into place and store the new positions
        (``{partition: (last sequence number, largest event time seen)}``), atomically as described above."""
        partitions = self.load()
        for pid, (last_seq, max_event_s) in positions.items():
            old = partitions.get(pid, {})
            watermark = None if max_event_s is None else max_event_s - max_out_of_orderness_s
            if old.get("watermark_s") is not None:
                watermark = old["watermark_s"] if watermark is None else max(watermark, old["watermark_s"])
            partitions[pid] = {"sequence_number": max(last_seq, old.get("sequence_number", -1)),
                               "watermark_s": watermark}
        intent = {"run_id": run_id, "moves": [list(m) for m in moves], "checkpoint": {
            "partitions": partitions, "run_id": run_id,
            "committed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}}
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
        LOG.info("committed run %s: %d files, checkpoint %s", intent["run_id"], len(intent["moves"]),
                 ", ".join(f"{p}@{v['sequence_number']}" for p, v in sorted(intent["checkpoint"]["partitions"].items())))
