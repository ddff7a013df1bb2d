"""The Event Hubs source when the hub fails, at each phase of a streaming run (issue 21): before the job
connects (nothing listening on the port), during the read (the endpoint killed once the reader has emitted
events), and during the commit (killed while the run holds its claim). Storage gone during a streaming
commit is ``test_storage_down_during_a_streaming_commit`` (Azurite).

One scenario per module, against the local endpoint served from a child process (``runners.local_stack.
EventHubsEndpoint``) that the test kills with SIGKILL and starts again on its durable partition logs; every
run also reads a product file with bad lines:

  publish wave 1 -> run1, the hub killed while run1 holds its commit claim        exit 0, positions stored
  hub restarted, publish wave 2 -> run2, the hub killed once the reader has
      emitted events                                                              exit 3, nothing committed
  hub restarted -> run3                                                           exit 0, reads wave 2 only
  the CLI against a port with nothing listening (two credential forms), while
      ref, one clean run over the same hub, runs into another output             exit 3, one error line

The jobs run in-process through the CLI's ``main`` (exit status and stderr as the command gives them),
except the "nothing listening" runs, which are real ``python -m beam_pipeline`` processes: their whole
stderr is checked for a single error line and no traceback. Tables are read back with delta-rs / pyarrow.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from beam_pipeline.__main__ import main
from runners.generate import generate
from runners.local_stack import EventHubsEndpoint
from runners.publish import publish
from tests._waiting import wait_until
from tests.conftest import start_azurite
from tests.e2e import _outputs

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = "EVENTHUB_CONNECTION_STRING"
HUB = "reviews"
KEY = f"{HUB}/$Default"
PARTITIONS = 2
JOB_ARGS = ["--source=eventhub", "--max_out_of_orderness=3650d", "--window_size=3650d", "--stop_after_idle_s=1.5"]
BAD_PRODUCT_LINES = [b'{"title": "a product without asin"}', b'{"asin": "B000000BAD", "title": ', b"<html>503</html>"]
SECRET = "not-to-be-printed-7f3a"
LIMIT_S = 180                            # only keeps a hung job from hanging the suite


# ------------------------------------------------------------------------------------------ helpers
def _kill(eh: EventHubsEndpoint) -> None:
    """The endpoint dies (SIGKILL: no goodbye to its clients); its partition logs stay on disk."""
    os.kill(eh.pid, signal.SIGKILL)
    eh.stop()


def _job(out, run_id: str, eh: EventHubsEndpoint, *extra: str, pause: str | None = None, at_pause=None,
         hooks: Path | None = None):
    """``python -m beam_pipeline`` in-process (its ``main``) -> (exit status, stderr, pause reached). With
    ``pause``, the job stops at that test hook point (``beam_pipeline.testhooks``; its files in ``hooks``,
    default beside ``out``), ``at_pause()`` runs, the job goes on."""
    release = (hooks or Path(out).parent) / f"release-{run_id}"
    done = threading.Event()

    def watch():
        if wait_until(lambda: done.is_set() or Path(f"{release}.reached").exists(), LIMIT_S) and not done.is_set():
            at_pause()
        release.touch()

    env = {ENV: eh.connection_string}
    if pause:
        env.update(REVIEWS_TEST_PAUSE_AT=pause, REVIEWS_TEST_PAUSE_FILE=str(release))
    watcher = threading.Thread(target=watch, daemon=True) if pause else None
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        if watcher:
            watcher.start()
        try:
            with contextlib.redirect_stderr(err):
                rc = main([*JOB_ARGS, f"--output={out}", f"--run_id={run_id}", *extra])
        finally:
            done.set()
            if watcher:
                watcher.join(10)
    reached = Path(f"{release}.reached").exists() if pause else None
    return rc, err.getvalue(), reached


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> dict:
    """Every file under the output root -> its size (what a later run must not have changed)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _versions(out: Path) -> dict:
    from beam_pipeline import tables
    loc = tables.Location(str(out))
    return {rel: tables.table_version(loc, rel) for rel in tables.all_tables(loc)}


def _checkpoint(out: Path) -> dict:
    from beam_pipeline import tables
    return tables.checkpoint(tables.Location(str(out)), KEY)


def _committed_runs(out: Path) -> list:
    from beam_pipeline import tables
    return [e["run_id"] for e in tables.events(tables.Location(str(out))) if e["event"] == "committed"]


def _summaries(out: Path) -> dict:
    from beam_pipeline import tables
    return {e["run_id"]: json.loads(e["summary"]) for e in tables.events(tables.Location(str(out)))
            if e["event"] == "committed"}


def _canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


# ------------------------------------------------------------------------------------------ the scenario
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub-faults")
    manifest = generate(tmp / "gen1", 240, files=1, seed=31)
    generate(tmp / "gen2", 240, files=1, seed=32)
    files1 = sorted(str(p) for p in (tmp / "gen1" / "reviews").glob("*.jsonl"))
    files2 = sorted(str(p) for p in (tmp / "gen2" / "reviews").glob("*.jsonl"))
    product_file = tmp / "products.jsonl"                         # the generated products and bad lines
    product_file.write_bytes(b"".join(p.read_bytes() for p in sorted((tmp / "gen1" / "metadata").glob("*.jsonl")))
                             + b"\n".join(BAD_PRODUCT_LINES) + b"\n")
    products = f"--products={product_file}"
    out, ref = tmp / "out", tmp / "ref"
    s = {"out": out, "ref": ref, "bad_products": manifest["products"]["dead"] + len(BAD_PRODUCT_LINES)}
    eh = EventHubsEndpoint(tmp / "eh", partitions=PARTITIONS, fsync=False).start()
    dead = []
    try:
        s["stats1"] = publish(eh.connection_string, files1, partitions=PARTITIONS, progress=False)

        # ---- during the commit: the hub dies while run1 holds its claim; the commit needs only storage
        s["rc1"], s["err1"], s["paused1"] = _job(out, "run1", eh, products, pause="claim",
                                                 at_pause=lambda: _kill(eh))
        s["hub_dead_after_run1"] = not eh.running
        s["checkpoint1"], s["versions1"], s["files1"] = _checkpoint(out), _versions(out), _files(out)

        # ---- during the read: the hub (back) dies once the reader has emitted events of wave 2
        eh.start()
        s["stats2"] = publish(eh.connection_string, files2, partitions=PARTITIONS, progress=False)
        s["port2"] = eh.port
        s["rc2"], s["err2"], s["paused2"] = _job(out, "run2", eh, products, pause="read",
                                                 at_pause=lambda: _kill(eh))
        s["checkpoint2"], s["versions2"], s["files2"] = _checkpoint(out), _versions(out), _files(out)

        # ---- the hub back: run3 completes
        eh.start()
        s["rc3"], s["err3"], _ = _job(out, "run3", eh, products)
        s["files3"] = _files(out)

        # ---- before connecting: the CLI against a port where nothing listens (a connection string, and
        # --event_hub_namespace), into out; meanwhile, a clean run over the same events into ref
        port = s["dead_port"] = _free_port()
        conn = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey={SECRET};" \
               f"UseDevelopmentEmulator=true;EntityPath={HUB}"
        cli = [sys.executable, "-m", "beam_pipeline", *JOB_ARGS, f"--output={out}", "--max_records=5"]
        no_conn = {k: v for k, v in os.environ.items() if k != ENV}
        for argv, env in (([*cli, "--run_id=dead1"], dict(no_conn, **{ENV: conn})),
                          ([*cli, "--run_id=dead2", f"--event_hub_namespace=127.0.0.1:{port}", f"--event_hub={HUB}"],
                           no_conn)):
            dead.append(subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
        s["rc_ref"], s["err_ref"], _ = _job(ref, "ref", eh, products)
        s["dead"] = [(p.wait(LIMIT_S), *p.communicate()) for p in dead]
        s["files_after_dead"] = _files(out)
    finally:
        for p in dead:
            if p.poll() is None:
                p.kill()
                p.wait()
        eh.stop()
    return s


# ------------------------------------------------------------------------------------------ the tests
def test_hub_gone_during_the_commit_the_run_commits_with_its_positions(scenario):
    s = scenario
    assert s["paused1"] and s["hub_dead_after_run1"]
    assert s["rc1"] == 0, s["err1"][-3000:]
    assert _committed_runs(s["out"])[0] == "run1"
    summary = _summaries(s["out"])["run1"]
    assert summary["reviews"]["records_read"] == summary["eventhub"]["events_read"] == s["stats1"].sent
    assert summary["reviews"]["reconciled"]
    assert {p: v["sequence_number"] for p, v in s["checkpoint1"].items()} == \
        {p: n - 1 for p, n in s["stats1"].per_partition.items()}


def test_nothing_listening_one_error_line_exit_3_outputs_untouched(scenario):
    s = scenario
    for (rc, stdout, stderr), run_id in zip(s["dead"], ("dead1", "dead2")):
        assert rc == 3, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr[-3000:]
        assert f"event hub sb://127.0.0.1:{s['dead_port']}/{HUB}: reading its partition ids failed after 3 " \
               "attempts (ConnectError" in errors[0]
        assert f"nothing of run {run_id} was committed" in errors[0]
        assert "Traceback" not in stderr and "Run summary" not in stdout
        assert SECRET not in stderr + stdout
    assert s["files_after_dead"] == s["files3"]                       # not a file written, moved or removed


def test_hub_killed_during_the_read_exit_3_nothing_committed(scenario):
    s = scenario
    assert s["paused2"], "the reader never emitted events of wave 2"
    assert s["rc2"] == 3, s["err2"][-3000:]
    errors = [line for line in s["err2"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1, s["err2"][-3000:]
    assert f"event hub sb://127.0.0.1:{s['port2']}/{HUB}: probing partition" in errors[0]
    assert "nothing of run run2 was committed" in errors[0]
    assert "Traceback" not in s["err2"]
    # tables, positions and files exactly as run1 left them
    assert s["versions2"] == s["versions1"]
    assert s["checkpoint2"] == s["checkpoint1"]
    assert s["files2"] == s["files1"]
    assert "run2" not in _committed_runs(s["out"])


def test_rerun_after_the_hub_is_back_equals_a_clean_run(scenario):
    s = scenario
    assert s["rc3"] == 0, s["err3"][-3000:]
    assert s["rc_ref"] == 0, s["err_ref"][-3000:]
    out, ref = s["out"], s["ref"]
    assert _committed_runs(out) == ["run1", "run3"]
    run1, run3 = _summaries(out)["run1"]["reviews"], _summaries(out)["run3"]["reviews"]
    assert _summaries(out)["run3"]["eventhub"]["events_read"] == s["stats2"].sent      # wave 2 only, once
    clean = _summaries(ref)["ref"]["reviews"]
    published = s["stats1"].sent + s["stats2"].sent
    assert clean["records_read"] == run1["records_read"] + run3["records_read"] == published
    for key in ("silver_rows", "dead_letters", "duplicates_dropped"):
        assert run1[key] + run3[key] == clean[key], key
    assert _checkpoint(out) == _checkpoint(ref)
    # every table a reader sees (silver, dead letters, gold, state, insights) equals the clean run's
    from beam_pipeline import tables
    rels = sorted(rel for rel in tables.snapshot_versions(tables.Location(str(ref)))
                  if not rel.startswith(("_pipeline/", "gold_changelog/")))
    assert rels == sorted(rel for rel in tables.snapshot_versions(tables.Location(str(out)))
                          if not rel.startswith(("_pipeline/", "gold_changelog/")))
    assert "silver/reviews" in rels and "dead_letters" in rels
    for rel in rels:
        got, want = _outputs.table(out, rel).to_pylist(), _outputs.table(ref, rel).to_pylist()
        for row in got + want:
            row.pop("run_id", None)
            if rel == "silver/reviews":   # of two copies of a review, the one kept depends on arrival order
                row.pop("source_position")
                row.pop("source")
        assert _canonical(got) == _canonical(want), rel
    rows = _outputs.silver_reviews(out).num_rows
    review_letters = [d for d in _outputs.dead_letters(out) if d["record_type"] == "review"]
    assert rows + len(review_letters) + run1["duplicates_dropped"] + run3["duplicates_dropped"] == published


def test_product_dead_letters_are_recorded_once_over_streaming_runs(scenario):
    """run1 and run3 both read the same product file (the join needs it): its bad lines are dead letters
    once (issue 21: 50 for 10 bad lines after five runs), and run3's summary says it skipped them."""
    s = scenario
    letters = [d for d in _outputs.dead_letters(s["out"]) if d["record_type"] == "product"]
    bad = s["bad_products"]
    assert bad > 0 and len(letters) == bad
    assert len({(d["source"], d["source_position"]) for d in letters}) == bad
    summaries = _summaries(s["out"])
    assert summaries["run1"]["products"]["dead_letters"] == summaries["run3"]["products"]["dead_letters"] == bad
    assert summaries["run1"]["products"].get("dead_letters_recorded_earlier") == 0
    assert summaries["run3"]["products"]["dead_letters_recorded_earlier"] == bad
    assert summaries["run3"]["products"]["reconciled"]


def test_storage_down_during_a_streaming_commit(tmp_path, monkeypatch):
    """The streaming commit path when storage goes away (the batch one: test_lakehouse_azurite.py): the
    output on Azurite, Azurite stopped while the run holds its claim -> exit 3, one error line, readers
    still see nothing committed; with storage back, recovery finishes the commit from its intent,
    positions and run summary included."""
    from beam_pipeline import tables
    from runners.local_stack import azfs_url, ensure_container

    location = tmp_path / "azurite"
    az = start_azurite(location)
    port = az.port
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)
    monkeypatch.setenv("DELTA_MAX_RETRIES", "1")          # the store is down on purpose: fail fast
    monkeypatch.setenv("DELTA_RETRY_TIMEOUT", "3s")
    generate(tmp_path / "gen", 120, files=1, seed=33)
    eh = EventHubsEndpoint(tmp_path / "eh", partitions=PARTITIONS, fsync=False).start()
    try:
        stats = publish(eh.connection_string, sorted(str(p) for p in (tmp_path / "gen" / "reviews").glob("*.jsonl")),
                        partitions=PARTITIONS, progress=False)
        ensure_container(az.connection_string, "lake")
        output = azfs_url("lake", "stream")
        rc, err, paused = _job(output, "down1", eh, "--insights=false", pause="claim", at_pause=az.stop, hooks=tmp_path)
    finally:
        eh.stop()
        az.stop()
    assert paused
    assert rc == 3, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the commit of run down1 stopped after its claim" in errors[0], err[-3000:]

    az2 = start_azurite(location, port=port)                # the same storage, back again
    try:
        loc = tables.Location(output)
        assert [e["run_id"] for e in tables.events(loc) if e["event"] == "committed"] == []
        assert tables.checkpoint(loc, KEY) == {}
        assert tables.recover(loc) == ["down1"]
        committed = [e for e in tables.events(loc) if e["event"] == "committed"]
        assert [e["run_id"] for e in committed] == ["down1"]
        summary = json.loads(committed[0]["summary"])["reviews"]
        assert summary["reconciled"] and summary["records_read"] == stats.sent
        assert tables.read(loc, tables.SILVER_REVIEWS).num_rows == summary["silver_rows"]
        assert {p: v["sequence_number"] for p, v in tables.checkpoint(loc, KEY).items()} == \
            {p: n - 1 for p, n in stats.per_partition.items()}
    finally:
        az2.stop()
