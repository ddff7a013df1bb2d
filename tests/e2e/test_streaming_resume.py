"""Crash and resume of the streaming job: publish N events, run the job, kill it mid-run (SIGKILL), run it
again from the checkpoints, publish M more, run a third time: the union of the outputs holds every
published event exactly once.

The job runs as ``python -m beam_pipeline --source=eventhub`` in a subprocess against the local Event Hubs
endpoint (``runners.eventhubs_local``), each with its own ``--run_id`` (run1, run2, run3: file names start
with it). Run 1 is stopped by the test hook at "written" (every table file written, nothing committed:
no intent, no claim) and killed there (SIGKILL): asserted rc -9, its files present, no Delta log. Runs 2
and 3 then run to the end; run 2 must remove run 1's files and read from the beginning. A kill after the
claim (the next start finishes the commit, positions included) is covered per phase by
``tests/unit/test_checkpoints.py``. The scenario runs once per module; each test checks one part of it.

Expectations are computed independently of the job: the publisher's round robin is replayed over the input
lines, so every (partition, sequence number) has its known body. Every published event must be, exactly once
over all committed outputs, a silver row or a dead letter at that position, or else be a byte-identical
copy of a body that is in silver (a duplicate, counted in the runs' ``duplicates_dropped``). The totals are
also checked against the generator's manifests.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from runners.eventhubs_local import LocalEventHubs
from runners.generate import generate
from runners.publish import iter_events, publish
from tests._waiting import wait_until
from tests.e2e import _outputs

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = ["0", "1", "2", "3"]
HUB = "reviews"
KEY = f"{HUB}/$Default"
RUN_TIMEOUT_S = 120
COMMON_ARGS = ["--source=eventhub", "--max_out_of_orderness=3650d", "--stop_after_idle_s=3"]


# ------------------------------------------------------------------------------------------ helpers
def _published_events(files, stats, first_seq):
    """Replay runners.publish's round robin (line i -> partition i mod 4, the rr slot is used even when
    the line is rejected) -> {(partition, seq): body}. ``first_seq``: next sequence number per partition.
    Checked against the publisher's own counts so a wrong replay cannot go unnoticed."""
    nxt, events, rejected = dict(first_seq), {}, 0
    for i, body in enumerate(iter_events(files)):
        pid = PARTITIONS[i % len(PARTITIONS)]
        if len(body) > 1_000_000:          # over the 1 MiB message limit (with headers): rejected
            rejected += 1
            continue
        events[(pid, nxt[pid])] = body
        nxt[pid] += 1
    assert rejected == stats.rejected
    assert {p: nxt[p] - first_seq[p] for p in PARTITIONS} == stats.per_partition
    assert len(events) == stats.sent
    return events, nxt


def _job(out, run_id, window, env, log):
    cmd = [sys.executable, "-m", "beam_pipeline", *COMMON_ARGS, f"--output={out}", f"--window_size={window}",
           f"--run_id={run_id}"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _run_to_end(out, run_id, window, env, logs):
    log_path = logs / f"{run_id}.log"
    with open(log_path, "wb") as log:
        proc = _job(out, run_id, window, env, log)
        try:
            rc = proc.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{run_id} did not finish in {RUN_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
    text = log_path.read_text(errors="replace")
    assert rc == 0, f"{run_id} exited {rc}:\n{text[-4000:]}"
    return text


def _files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def _position(source, position):
    m = re.fullmatch(rf"eventhub:{HUB}/(\d+)", source or "")
    assert m, source
    return m.group(1), int(position)


def _summary(out):
    return _outputs.run_summary(out)


def _checkpoint(out):
    from beam_pipeline import tables
    loc = tables.Location(str(out))
    last = [e for e in tables.events(loc) if e["event"] == "committed" and e["checkpoint_key"] == KEY][-1]
    return {"run_id": last["run_id"], "partitions": tables.checkpoint(loc, KEY)}


def _outputs_by_run(out):
    """{run id: ([silver (partition, seq, row)], [dead letter (partition, seq, letter)])} of the committed
    tables (a silver row's run: the run id its file's name starts with)."""
    from beam_pipeline import tables
    loc = tables.Location(str(out))
    runs: dict = {}
    silver = tables.open_table(loc, tables.SILVER_REVIEWS, tables.snapshot_versions(loc)[tables.SILVER_REVIEWS])
    for uri in silver.file_uris():
        run_id = Path(uri).name.split("-", 1)[0]
        for row in ds.dataset(uri, format="parquet").to_table().to_pylist():
            runs.setdefault(run_id, ([], []))[0].append((*_position(row["source"], row["source_position"]), row))
    for letter in tables.read(loc, tables.DEAD_LETTERS).to_pylist():
        assert letter["record_type"] == "review", letter
        runs.setdefault(letter["run_id"], ([], []))[1].append((*_position(letter["source"], letter["source_position"]),
                                                               letter))
    return runs


# ------------------------------------------------------------------------------------------ the scenario
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Publish, run 1 killed, run 2, publish more, run 3 (once for the module); returns what the tests check.

    Preconditions of the scenario itself are asserted here: run 1 really died of SIGKILL, before its
    commit had begun, with files staged; runs 2 and 3 exit 0."""
    tmp = tmp_path_factory.mktemp("resume")
    manifests = (generate(tmp / "gen1", 3000, files=2, seed=7), generate(tmp / "gen2", 400, files=1, seed=8))
    files1 = sorted(str(p) for p in (tmp / "gen1" / "reviews").glob("*.jsonl"))
    files2 = sorted(str(p) for p in (tmp / "gen2" / "reviews").glob("*.jsonl"))
    out, logs = tmp / "out", tmp / "logs"
    logs.mkdir()
    s = {"out": out, "manifests": manifests}

    eh = LocalEventHubs(tmp / "eh", hub=HUB, partitions=len(PARTITIONS), fsync=False).start()
    proc = None
    try:
        env = dict(os.environ, EVENTHUB_CONNECTION_STRING=eh.connection_string)
        s["stats1"] = publish(eh.connection_string, files1, partitions=len(PARTITIONS), progress=False)
        s["events1"], s["next_seq1"] = _published_events(files1, s["stats1"], {p: 0 for p in PARTITIONS})

        # ---- run 1: killed (SIGKILL) with every file written, before its commit
        log1 = logs / "run1.log"
        release = tmp / "release-run1"
        with open(log1, "wb") as log:
            proc = _job(out, "run1", "7d", dict(env, REVIEWS_TEST_PAUSE_AT="written",
                                                REVIEWS_TEST_PAUSE_FILE=str(release)), log)
            reached = wait_until(lambda: proc.poll() is not None or Path(f"{release}.reached").exists(),
                                 RUN_TIMEOUT_S)
            assert proc.poll() is None, f"run 1 ended before it could be killed:\n{log1.read_text()[-4000:]}"
            assert reached, f"run 1 never reached its commit:\n{log1.read_text()[-4000:]}"
            os.kill(proc.pid, signal.SIGKILL)
            s["rc1"] = proc.wait(30)
            proc = None
        assert s["rc1"] == -signal.SIGKILL
        s["log1"] = log1.read_text(errors="replace")
        s["after_kill"] = _files(out)

        # ---- run 2: starts over (no checkpoint yet), drops run 1's staging, commits
        s["log2"] = _run_to_end(out, "run2", "365d", env, logs)
        s["summary2"], s["checkpoint2"], s["after_run2"] = _summary(out), _checkpoint(out), _files(out)

        # ---- run 3: M more events; resumes from the checkpoint
        s["stats2"] = publish(eh.connection_string, files2, partitions=len(PARTITIONS), progress=False)
        s["events2"], s["next_seq2"] = _published_events(files2, s["stats2"], s["next_seq1"])
        s["log3"] = _run_to_end(out, "run3", "365d", env, logs)
        s["summary3"], s["checkpoint3"], s["after_run3"] = _summary(out), _checkpoint(out), _files(out)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        eh.stop()
    s["runs"] = _outputs_by_run(out)
    return s


# ------------------------------------------------------------------------------------------ the tests
def test_run1_was_killed_with_its_files_written_before_its_commit(scenario):
    s = scenario
    assert s["rc1"] == -signal.SIGKILL
    assert all(f"partition {p}: reading from sequence number 0" in s["log1"] for p in PARTITIONS), s["log1"][-4000:]
    assert "committed run" not in s["log1"] and "Run summary" not in s["log1"]
    written = [f for f in s["after_kill"] if f.endswith(".parquet")]
    assert any(f.startswith("silver/reviews/run1-") for f in written), s["after_kill"][:20]
    assert all(Path(f).name.startswith("run1-") for f in written)
    assert [f for f in s["after_kill"] if "_delta_log" in f or "_intents" in f] == []   # no table, no commit


def test_run2_started_over_and_dropped_the_killed_runs_staging(scenario):
    s = scenario
    assert all(f"partition {p}: reading from sequence number 0" in s["log2"] for p in PARTITIONS), s["log2"][-4000:]
    assert "finishing the commit" not in s["log2"]                      # nothing was half committed
    for files in (s["after_run2"], s["after_run3"]):
        assert [f for f in files if "run1" in f] == []                  # its files were removed as orphans
    summary = s["summary2"]
    assert summary["eventhub"]["events_read"] == summary["reviews"]["records_read"] == s["stats1"].sent
    assert summary["reviews"]["reconciled"]
    checkpoint = s["checkpoint2"]
    assert checkpoint["run_id"] == "run2"
    assert {p: v["sequence_number"] for p, v in checkpoint["partitions"].items()} == \
        {p: s["next_seq1"][p] - 1 for p in PARTITIONS}
    assert all(v["watermark_s"] is not None for v in checkpoint["partitions"].values())


def test_run3_read_only_the_new_events_and_the_checkpoints_advanced(scenario):
    s = scenario
    for p in PARTITIONS:
        start = s["checkpoint2"]["partitions"][p]["sequence_number"] + 1
        assert f"partition {p}: reading from sequence number {start}" in s["log3"], s["log3"][-4000:]
    summary = s["summary3"]
    assert summary["eventhub"]["events_read"] == summary["reviews"]["records_read"] == s["stats2"].sent
    assert summary["reviews"]["reconciled"]
    checkpoint = s["checkpoint3"]
    assert checkpoint["run_id"] == "run3"
    assert {p: v["sequence_number"] for p, v in checkpoint["partitions"].items()} == \
        {p: s["next_seq2"][p] - 1 for p in PARTITIONS}
    for p in PARTITIONS:                                                # never backwards
        assert checkpoint["partitions"][p]["watermark_s"] >= s["checkpoint2"]["partitions"][p]["watermark_s"]
    assert [f for f in s["after_run3"] if "_intents/" in f or "_staged/" in f] == []
    # every row / dead letter of run 3 comes after run 2's checkpoint
    for pid, seq, _ in s["runs"]["run3"][0] + s["runs"]["run3"][1]:
        assert seq > s["checkpoint2"]["partitions"][pid]["sequence_number"], (pid, seq)


def test_union_of_the_outputs_holds_every_event_exactly_once(scenario):
    s = scenario
    runs, events1, events2 = s["runs"], s["events1"], s["events2"]
    assert sorted(runs) == ["run2", "run3"]
    published = {**events1, **events2}
    assert len(published) == len(events1) + len(events2)
    seen = Counter()
    for run_id, events in (("run2", events1), ("run3", events2)):
        silver, dead = runs[run_id]
        for pid, seq, row in silver:
            assert (pid, seq) in events, (run_id, pid, seq)                 # read by this run, not another
            body = json.loads(events[(pid, seq)])
            assert (row["reviewer_id"], row["asin"]) == (body["reviewerID"], body["asin"]), (pid, seq)
        for pid, seq, letter in dead:
            assert (pid, seq) in events, (run_id, pid, seq)
            assert letter["payload_bytes"] == len(events[(pid, seq)]), (pid, seq, letter)
        seen.update((pid, seq) for pid, seq, _ in silver)
        seen.update((pid, seq) for pid, seq, _ in dead)
    twice = [k for k, n in seen.items() if n > 1]
    assert twice == [], f"events written more than once: {twice[:20]}"

    silver_bodies = {published[(p, q)] for run in runs.values() for p, q, _ in run[0]}
    missing = [k for k in published if k not in seen]
    not_duplicates = [k for k in missing if published[k] not in silver_bodies]
    assert not_duplicates == [], f"events lost (not in silver, not dead letters, not duplicates): {not_duplicates[:20]}"
    # the same counts three ways: the outputs, the runs' summaries, the generator's manifests
    summary2, summary3 = s["summary2"]["reviews"], s["summary3"]["reviews"]
    n_silver = sum(len(r[0]) for r in runs.values())
    n_dead = sum(len(r[1]) for r in runs.values())
    n_dups = summary2["duplicates_dropped"] + summary3["duplicates_dropped"]
    assert len(missing) == n_dups
    assert len(published) == n_silver + n_dead + n_dups
    assert (len(runs["run2"][0]), len(runs["run3"][0])) == (summary2["silver_rows"], summary3["silver_rows"])
    assert (len(runs["run2"][1]), len(runs["run3"][1])) == (summary2["dead_letters"], summary3["dead_letters"])
    first, second = s["manifests"]
    assert n_silver == first["reviews"]["silver_rows"] + second["reviews"]["silver_rows"]
    assert n_dups == first["reviews"]["duplicates"] + second["reviews"]["duplicates"]
    assert n_dead == first["reviews"]["dead"] + second["reviews"]["dead"] - s["stats1"].rejected - s["stats2"].rejected


def test_gold_window_value_covers_the_rows_of_every_run(scenario):
    """gold/reviews holds one row per window (its current value, whatever run wrote it) and its n_reviews
    is the number of silver rows (of all runs) whose review time falls in the window; the all-time row
    counts them all."""
    out = scenario["out"]
    gold = _outputs.gold(out, "reviews").to_pylist()
    times = [row["unix_review_time"] for run in scenario["runs"].values() for _, _, row in run[0]]
    windows = [r for r in gold if r["window_start"] is not None]
    assert len({r["window_start"] for r in windows}) == len(windows) > 0
    problems = []
    for row in windows:
        lo, hi = row["window_start"].timestamp(), row["window_end"].timestamp()
        expected = sum(1 for t in times if lo <= t < hi)
        if row["n_reviews"] != expected:
            problems.append((row["window_start"].date().isoformat(), expected, row["n_reviews"]))
    assert problems == [], f"(window, silver rows, gold n_reviews): {problems}"
    assert sum(r["n_reviews"] for r in windows) == len(times)
