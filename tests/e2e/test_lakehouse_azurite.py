"""The Delta commit against Azurite when storage goes away: Azurite (a dedicated instance) stopped
after a run claimed its commit gives a clear error and no partial table; readers keep the previous run;
once storage is back, `python -m beam_pipeline.tables recover` (or the next run) finishes the commit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from runners.generate import generate
from runners.local_stack import azfs_url, ensure_container, upload_tree
from tests.conftest import start_azurite

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _argv(output, run_id, reviews):
    return ["--runner=FnApiRunner", "--source=adls", f"--reviews={azfs_url('landing', reviews)}",
            f"--products={azfs_url('landing', 'metadata/*.jsonl')}", f"--output={output}", f"--run_id={run_id}"]


def test_storage_down_during_the_commit(tmp_path, monkeypatch):
    location = tmp_path / "azurite"
    az = start_azurite(location)
    port = az.port
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)
    # the store is down on purpose: fail each table operation after one short retry, not 4 x 30 s
    monkeypatch.setenv("DELTA_MAX_RETRIES", "1")
    monkeypatch.setenv("DELTA_RETRY_TIMEOUT", "3s")
    try:
        data = tmp_path / "data"
        generate(str(data), 1500, files=2, seed=41)
        upload_tree(az.connection_string, "landing", data, prefix="")
        ensure_container(az.connection_string, "lake")
        output = azfs_url("lake", "tables")
        first = run(_argv(output, "up1", "reviews/part-00000-of-00002.jsonl"))
        loc = tables.Location(output)
        before = tables.read(loc, tables.SILVER_REVIEWS).num_rows
        assert before == first["reviews"]["silver_rows"]

        real_apply = tables._apply

        def storage_goes_down(*args, **kwargs):
            az.stop()
            return real_apply(*args, **kwargs)

        monkeypatch.setattr(tables, "_apply", storage_goes_down)
        with pytest.raises(tables.TableError) as err:
            run(_argv(output, "down2", "reviews/*.jsonl"))
        message = str(err.value)
        assert "stopped after its claim" in message and "recover" in message and "down2" in message
        monkeypatch.setattr(tables, "_apply", real_apply)
    finally:
        az.stop()

    az2 = start_azurite(location, port=port)   # the same storage, back again
    try:
        # readers of the last committed run still see run 1 only; no table holds part of run 2
        assert tables.read(loc, tables.SILVER_REVIEWS).num_rows == before
        assert tables.snapshot_versions(loc) == first["table_versions"]
        for rel, v in first["table_versions"].items():
            assert tables.table_version(loc, rel) == v, rel
        r = subprocess.run([sys.executable, "-m", "beam_pipeline.tables", "recover", output], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "finished 1 interrupted commits: down2" in r.stdout
        after = tables.read(loc, tables.SILVER_REVIEWS).num_rows
        committed = [e for e in tables.events(loc) if e["event"] == "committed"]
        assert [e["run_id"] for e in committed] == ["up1", "down2"]
        import json
        summary2 = json.loads(committed[-1]["summary"])
        assert after == before + summary2["reviews"]["silver_rows"]
        assert summary2["reviews"]["reconciled"]
    finally:
        az2.stop()
