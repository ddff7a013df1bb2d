"""Storage (a dedicated Azurite) down when a batch run starts, or gone while it reads. At the start its inputs cannot be listed, so the CLI
says so in one line and exits 2 (inputs unusable, before any work: nothing was read or written); every table stays at the previous run's version; once storage is back, a rerun commits
and its tables equal those of a clean run over the same inputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from runners.generate import generate
from runners.local_stack import azfs_url, ensure_container, upload_tree
from tests._waiting import wait_until
from tests.conftest import start_azurite

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _argv(output, run_id, reviews="reviews/*.jsonl"):
    return ["--source=adls", f"--reviews={azfs_url('landing', reviews)}",
            f"--products={azfs_url('landing', 'metadata/*.jsonl')}", f"--output={output}", f"--run_id={run_id}"]


def _content(loc):
    out = {}
    for rel in (tables.SILVER_REVIEWS, tables.DEAD_LETTERS, "gold/reviews_by_rating"):
        t = tables.read(loc, rel)
        keep = [c for c in t.column_names if c not in ("run_id", "ingested_at")]
        out[rel] = sorted(map(repr, t.select(keep).to_pylist()))
    return out


def test_storage_down_from_the_start_one_line_exit_2_then_a_rerun_equals_a_clean_run(tmp_path, monkeypatch):
    location = tmp_path / "azurite"
    az = start_azurite(location)
    port = az.port
    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=az.connection_string, DELTA_MAX_RETRIES="1",
               DELTA_RETRY_TIMEOUT="3s")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)
    try:
        data = tmp_path / "data"
        generate(str(data), 1200, files=2, seed=43)
        upload_tree(az.connection_string, "landing", data, prefix="")
        ensure_container(az.connection_string, "lake")
        ensure_container(az.connection_string, "clean")
        output = azfs_url("lake", "tables")
        first = run(["--runner=FnApiRunner", *_argv(output, "up1", "reviews/part-00000-of-00002.jsonl")])
    finally:
        az.stop()

    res = subprocess.run([sys.executable, "-m", "beam_pipeline", *_argv(output, "down2")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert errors[0] == (f"error: --reviews {azfs_url('landing', 'reviews/*.jsonl')}: cannot list it (storage "
                         f"unreachable at 127.0.0.1:{port}: connection refused or timed out); nothing was read or "
                         "written"), errors[0]

    az2 = start_azurite(location, port=port)   # the same storage, back again
    try:
        loc = tables.Location(output)
        assert tables.snapshot_versions(loc) == first["table_versions"]
        again = run(["--runner=FnApiRunner", *_argv(output, "back3")])
        assert again["reviews"]["reconciled"] and again["products"]["reconciled"]
        clean = azfs_url("clean", "tables")
        run(["--runner=FnApiRunner", *_argv(clean, "clean1")])
        assert _content(loc) == _content(tables.Location(clean))
    finally:
        az2.stop()


def test_storage_down_during_the_read_one_line_exit_3_then_a_rerun_equals_a_clean_run(tmp_path, monkeypatch):
    """Inputs on a dedicated Azurite that stops once the run has read its first chunk (test hook
    ``reading``): one `error:` line naming the store, exit 3, no traceback; every table of the (local)
    output stays at the previous run's version; once storage is back a rerun equals a clean run."""
    location = tmp_path / "azurite"
    az = start_azurite(location)
    port = az.port
    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=az.connection_string,
               REVIEWS_TEST_PAUSE_AT="reading", REVIEWS_TEST_PAUSE_FILE=str(tmp_path / "go"))
    output, clean = tmp_path / "out", tmp_path / "clean"
    try:
        data = tmp_path / "data"
        generate(str(data), 1500, files=3, seed=44)
        upload_tree(az.connection_string, "landing", data, prefix="")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)
        first = run(["--runner=FnApiRunner", *_argv(str(output), "up1", "reviews/part-00000-of-00003.jsonl")])
        proc = subprocess.Popen([sys.executable, "-m", "beam_pipeline", *_argv(str(output), "mid2"), "--chunk_mb=1"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: (tmp_path / "go.reached").exists() or proc.poll() is not None, 300)
        assert (tmp_path / "go.reached").exists() and proc.poll() is None, proc.stderr.read()[-3000:]
    finally:
        az.stop()
    (tmp_path / "go").write_text("")
    _, stderr = proc.communicate(timeout=600)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 3, stderr[-3000:]
    assert "Traceback" not in stderr and errors == [(
        f"error: storage unreachable at 127.0.0.1:{port} while the run was reading its inputs or writing its "
        "files; nothing of this run was committed (every table is at its previous version): run it again once "
        "storage is back")], stderr[-3000:]
    loc = tables.Location(str(output))
    assert tables.snapshot_versions(loc) == first["table_versions"]

    az2 = start_azurite(location, port=port)
    try:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az2.connection_string)
        again = run(["--runner=FnApiRunner", *_argv(str(output), "back3")])
        assert again["reviews"]["reconciled"] and again["products"]["reconciled"]
        run(["--runner=FnApiRunner", *_argv(str(clean), "clean1")])
        assert _content(loc) == _content(tables.Location(str(clean)))
    finally:
        az2.stop()
