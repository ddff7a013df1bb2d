"""End-to-end checks of runners.local_stack: Azurite + Beam's azfs:// filesystem, and the CLI."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runners import local_stack
from runners.local_stack import (AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, Azurite, azfs_url, download_tree,
                                 ensure_container, free_port, upload_tree)

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]

TREE = {
    "raw/2024/part-0.json": b'{"rating": 5, "text": "great"}\n{"rating": 1, "text": "bad"}\n',
    "raw/2024/part-1.json": b'{"rating": 3, "text": "ok \xc3\xa9"}\n',
    "raw/2025/nested/part-2.json": b'{"rating": 4, "text": "fine"}\n',
    "raw/README.txt": b"not json\n",
}


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def beam_filesystems():
    """Beam's FileSystems with empty pipeline options; the previous options are restored afterwards.

    Without options, FileSystems hands ``None`` to BlobStorageFileSystem outside a pipeline run and
    BlobStorageIO fails on ``None.view_as``. With empty options it falls back to the env variable.
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    previous = FileSystems._pipeline_options
    FileSystems.set_options(PipelineOptions([]))
    try:
        yield FileSystems
    finally:
        FileSystems.set_options(previous)


# ------------------------------------------------------------------------------------- Python API
def test_upload_tree_then_match_and_read_with_beam_azfs(azurite_env, beam_filesystems, tmp_path):
    names = upload_tree(azurite_env.connection_string, "lsreviews", _write_tree(tmp_path, TREE),
                        prefix="landing")
    assert names == sorted(f"landing/{rel}" for rel in TREE)

    fs = beam_filesystems
    everything = fs.match([azfs_url("lsreviews", "**")])[0].metadata_list
    assert sorted(m.path for m in everything) == sorted(
        f"azfs://{AZURITE_ACCOUNT}/lsreviews/landing/{rel}" for rel in TREE)
    assert {m.path.split("/landing/", 1)[1]: m.size_in_bytes for m in everything} == {
        rel: len(data) for rel, data in TREE.items()}

    one_level = fs.match([azfs_url("lsreviews", "landing/raw/2024/*.json")])[0].metadata_list
    assert sorted(Path(m.path).name for m in one_level) == ["part-0.json", "part-1.json"]

    with fs.open(azfs_url("lsreviews", "landing/raw/2024/part-1.json")) as fh:
        assert fh.read() == TREE["raw/2024/part-1.json"]


def test_blob_storage_filesystem_built_directly(azurite_env, tmp_path):
    from apache_beam.io.azure.blobstoragefilesystem import BlobStorageFileSystem
    from apache_beam.options.pipeline_options import PipelineOptions

    upload_tree(azurite_env.connection_string, "lsdirect", _write_tree(tmp_path, TREE))
    fs = BlobStorageFileSystem(PipelineOptions([]))  # reads AZURE_STORAGE_CONNECTION_STRING per call
    with fs.open(azfs_url("lsdirect", "raw/2025/nested/part-2.json")) as fh:
        assert fh.read() == TREE["raw/2025/nested/part-2.json"]


def test_explicit_connection_string_option_without_env(azurite, tmp_path, monkeypatch):
    from apache_beam.io.azure.blobstoragefilesystem import BlobStorageFileSystem
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    upload_tree(azurite.connection_string, "lsoption", _write_tree(tmp_path, TREE))
    fs = BlobStorageFileSystem(PipelineOptions([f"--azure_connection_string={azurite.connection_string}"]))
    assert len(fs.match([azfs_url("lsoption", "raw/**")])[0].metadata_list) == len(TREE)


def test_write_with_beam_then_download_tree_and_read_parquet(azurite_env, beam_filesystems, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = beam_filesystems
    # Beam's azfs does not create containers (a write into a missing one fails at close, and the
    # half-closed stream then retries its upload from __del__ with the SDK's ~3 min backoff).
    ensure_container(azurite_env.connection_string, "lsout")
    ensure_container(azurite_env.connection_string, "lsout")  # idempotent
    table = pa.table({"asin": ["B01", "B02", "B03"], "rating": [5, 1, 3]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with fs.create(azfs_url("lsout", "silver/date=2024-01-01/part-0.parquet")) as fh:
        fh.write(buf.getvalue())
    with fs.create(azfs_url("lsout", "silver/_SUCCESS")) as fh:
        fh.write(b"")
    with fs.create(azfs_url("lsout", "silver2/other.txt")) as fh:  # same string prefix, other "directory"
        fh.write(b"x")

    got = download_tree(azurite_env.connection_string, "lsout", "silver", tmp_path / "dl")
    assert [p.relative_to(tmp_path / "dl").as_posix() for p in got] == [
        "_SUCCESS", "date=2024-01-01/part-0.parquet"]
    assert pq.read_table(tmp_path / "dl" / "date=2024-01-01" / "part-0.parquet").equals(table)


def test_properties_and_redaction(azurite):
    cs = azurite.connection_string
    assert cs == (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;")
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    assert AZURITE_ACCOUNT_KEY not in local_stack.redact(cs)
    assert "AccountKey=***;" in local_stack.redact(cs)
    assert AZURITE_ACCOUNT_KEY not in repr(azurite)
    assert azfs_url("reviews", "/raw/a.json") == "azfs://devstoreaccount1/reviews/raw/a.json"
    with pytest.raises(ValueError):
        azfs_url("bad_name", "x")


def test_start_stop_idempotent_and_context_manager(tmp_path):
    az = Azurite(location=tmp_path / "az")
    with az:
        pid = az.pid
        assert az.running and local_stack.port_open("127.0.0.1", az.port)
        assert az.start() is az  # already running: no second process
        assert az.pid == pid
    assert not az.running and not local_stack._pid_alive(pid)
    az.stop()  # idempotent
    assert (tmp_path / "az" / local_stack.LOG_NAME).exists()


def test_start_fails_clearly_when_port_taken(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        az = Azurite(location=tmp_path / "az", port=sock.getsockname()[1])
        with pytest.raises(RuntimeError, match="already in use"):
            az.start()
        assert az.pid is None


def test_missing_azurite_names_npm_install(tmp_path, monkeypatch):
    monkeypatch.setattr(local_stack, "AZURITE_BIN", tmp_path / "no" / "azurite-blob")
    with pytest.raises(RuntimeError, match="npm install"):
        Azurite(location=tmp_path / "az").start()


def _fake_azurite(tmp_path: Path, monkeypatch, body: str) -> None:
    fake = tmp_path / "bin" / "azurite-blob"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(local_stack, "AZURITE_BIN", fake)


def test_start_reports_log_tail_when_azurite_dies(tmp_path, monkeypatch):
    _fake_azurite(tmp_path, monkeypatch,
                  f"echo 'boom AccountKey={AZURITE_ACCOUNT_KEY};'; exit 3")
    az = Azurite(location=tmp_path / "az", port=free_port())
    with pytest.raises(RuntimeError, match=r"rc=3(.|\n)*boom AccountKey=\*\*\*") as exc:
        az.start(timeout=10)
    assert AZURITE_ACCOUNT_KEY not in str(exc.value)
    assert not az.running


def test_start_times_out_and_kills_the_process(tmp_path, monkeypatch):
    _fake_azurite(tmp_path, monkeypatch, "echo 'hanging'; exec sleep 60")
    az = Azurite(location=tmp_path / "az", port=free_port())
    with pytest.raises(RuntimeError, match=r"did not become ready(.|\n)*hanging"):
        az.start(timeout=1)
    assert not az.running and az.pid is None


# ------------------------------------------------------------------------------------- CLI
def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    return subprocess.run([sys.executable, "-m", "runners.local_stack", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_start_status_env_upload_stop_idempotent(tmp_path):
    port = free_port()
    state = tmp_path / "state" / "azurite.json"
    common = ["--state-file", str(state)]
    pid = None
    try:
        r = _cli("azurite", "start", "--port", str(port), "--location", str(tmp_path / "az"), *common)
        assert r.returncode == 0, r.stderr
        assert "started" in r.stdout
        recorded = json.loads(state.read_text())
        pid = recorded["pid"]
        assert recorded["port"] == port and recorded["location"] == str(tmp_path / "az")
        assert AZURITE_ACCOUNT_KEY not in state.read_text() + r.stdout + r.stderr
        assert local_stack._is_azurite_pid(pid)  # survived the CLI exiting

        r = _cli("azurite", "start", "--port", str(port), "--location", str(tmp_path / "az"), *common)
        assert r.returncode == 0, r.stderr
        assert "already running" in r.stdout
        assert json.loads(state.read_text())["pid"] == pid

        r = _cli("azurite", "status", *common)
        assert r.returncode == 0 and "running" in r.stdout and AZURITE_ACCOUNT_KEY not in r.stdout

        r = _cli("azurite", "env", *common)
        assert r.returncode == 0, r.stderr
        expected_cs = local_stack.make_connection_string("127.0.0.1", port)
        assert r.stdout.strip() == f"export AZURE_STORAGE_CONNECTION_STRING='{expected_cs}'"

        _write_tree(tmp_path / "data", TREE)
        r = _cli("upload", "--container", "lscli", "--prefix", "in", str(tmp_path / "data"), *common)
        assert r.returncode == 0, r.stderr
        assert f"uploaded {len(TREE)} file(s) to azfs://devstoreaccount1/lscli/in/" in r.stdout
        got = download_tree(expected_cs, "lscli", "in", tmp_path / "back")
        assert {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes() for p in got} == TREE

        r = _cli("azurite", "stop", *common)
        assert r.returncode == 0, r.stderr
        assert "stopped" in r.stdout
        assert not local_stack._pid_alive(pid)   # stop returns once the process is gone
        assert not state.exists()

        r = _cli("azurite", "stop", *common)
        assert r.returncode == 0 and "not running" in r.stdout
        r = _cli("azurite", "status", *common)
        assert r.returncode == 3 and "not running" in r.stdout
        r = _cli("azurite", "env", *common)
        assert r.returncode == 1 and not r.stdout
    finally:
        if state.exists():
            _cli("azurite", "stop", *common)
        if pid is not None and local_stack._is_azurite_pid(pid):
            local_stack._terminate_pid(pid)


def test_cli_start_fails_when_port_taken_by_other_program(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        r = _cli("azurite", "start", "--port", str(sock.getsockname()[1]),
                 "--location", str(tmp_path / "az"), "--state-file", str(tmp_path / "s.json"))
    assert r.returncode == 1
    assert "already in use" in r.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("argv", [
    [], ["azurite"], ["azurite", "start"], ["azurite", "stop"], ["azurite", "status"], ["azurite", "env"],
    ["upload"], ["eventhubs"], ["eventhubs", "start"], ["eventhubs", "stop"], ["eventhubs", "status"],
    ["eventhubs", "env"],
])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        local_stack.main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if argv == ["azurite", "start"]:
        assert all(opt in out for opt in ("--port", "--location", "--host", "--timeout", "--state-file"))
    if argv == ["upload"]:
        assert all(opt in out for opt in ("--container", "--prefix", "--connection-string", "DIR"))
    if argv == ["eventhubs", "start"]:
        assert all(opt in out for opt in ("--port", "--data-dir", "--hub", "--partitions", "--host", "--timeout",
                                          "--state-file"))


# ------------------------------------------------------------------------------------- Event Hubs endpoint
def _eh_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != local_stack.EVENTHUBS_CONNECTION_ENV}
    return subprocess.run([sys.executable, "-m", "runners.local_stack", "eventhubs", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_eventhubs_connection_string_is_the_endpoints_own(tmp_path):
    from runners.eventhubs_local import LocalEventHubs

    with LocalEventHubs(tmp_path / "eh", hub="reviews", partitions=2, fsync=False) as eh:
        assert local_stack.make_eventhubs_connection_string(eh.host, eh.port, "reviews") == eh.connection_string
        assert local_stack.amqp_ready(eh.host, eh.port)
    assert not local_stack.amqp_ready("127.0.0.1", eh.port, timeout=0.5)


def test_eventhubs_endpoint_process_start_stop_and_failure(tmp_path):
    ep = local_stack.EventHubsEndpoint(tmp_path / "eh", partitions=2)  # port None: the server binds a free one
    with ep:
        pid = ep.pid
        assert ep.running and local_stack.amqp_ready(ep.host, ep.port)
        assert ep.start() is ep and ep.pid == pid  # already running: no second process
        assert ep.connection_string.startswith(f"Endpoint=sb://127.0.0.1:{ep.port};")
    assert not ep.running and not local_stack._pid_alive(pid)  # stop() waits for the process
    ep.stop()  # idempotent
    assert (tmp_path / "eh" / local_stack.EVENTHUBS_LOG_NAME).exists()
    assert (tmp_path / "eh" / "reviews" / "hub.json").exists()
    # the data dir was created with 2 partitions: asking for 4 makes the server exit; its log says why
    with pytest.raises(RuntimeError, match=r"exited with rc=1(.|\n)*2 partitions, not 4"):
        local_stack.EventHubsEndpoint(tmp_path / "eh", partitions=4).start(timeout=30)


def test_eventhubs_default_port_taken_falls_back_to_a_free_one(tmp_path, monkeypatch):
    state = tmp_path / "eventhubs.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        monkeypatch.setattr(local_stack, "EVENTHUBS_DEFAULT_PORT", taken)
        try:
            recorded, started = local_stack.start_eventhubs(state, tmp_path / "eh", partitions=2)
            assert started and recorded["port"] != taken
            assert local_stack.amqp_ready("127.0.0.1", recorded["port"])
            assert local_stack.start_eventhubs(state, tmp_path / "eh", partitions=2) == (recorded, False)
        finally:
            print(local_stack.stop_eventhubs(state))
        # an explicit port that is taken is an error, not a fallback
        r = _eh_cli("start", "--port", str(taken), "--data-dir", str(tmp_path / "eh2"),
                    "--state-file", str(tmp_path / "s2.json"))
    assert r.returncode == 1 and "already in use" in r.stderr
    assert not (tmp_path / "s2.json").exists()


def test_cli_eventhubs_start_status_env_publish_stop_idempotent(tmp_path):
    from runners.publish import publish

    port = free_port()
    state = tmp_path / "state" / "eventhubs.json"
    data = tmp_path / "eh"
    common = ["--state-file", str(state)]
    pid = None
    try:
        r = _eh_cli("start", "--port", str(port), "--data-dir", str(data), *common)
        assert r.returncode == 0, r.stderr
        assert "started" in r.stdout and f"sb://127.0.0.1:{port}" in r.stdout
        recorded = json.loads(state.read_text())
        pid = recorded["pid"]
        assert (recorded["port"], recorded["data_dir"], recorded["hub"], recorded["partitions"]) == (
            port, str(data), "reviews", 4)
        assert recorded["log"] == str(data / local_stack.EVENTHUBS_LOG_NAME)
        assert local_stack._is_eventhubs_pid(pid)  # survived the CLI exiting
        assert local_stack.amqp_ready("127.0.0.1", port)

        r = _eh_cli("start", "--port", str(port), "--data-dir", str(data), *common)
        assert r.returncode == 0, r.stderr
        assert "already running" in r.stdout
        assert json.loads(state.read_text())["pid"] == pid
        r = _eh_cli("start", "--data-dir", str(data), *common)  # default port: reuses the running one too
        assert r.returncode == 0 and "already running" in r.stdout, r.stderr

        r = _eh_cli("start", "--data-dir", str(tmp_path / "other"), *common)  # other settings: refused
        assert r.returncode == 1 and "other settings" in r.stderr and "eventhubs stop" in r.stderr
        assert json.loads(state.read_text())["pid"] == pid

        r = _eh_cli("status", *common)
        assert r.returncode == 0 and r.stdout.startswith("running:") and str(port) in r.stdout
        r = _eh_cli("status", "--json", *common)
        assert r.returncode == 0 and json.loads(r.stdout)["running"] is True

        r = _eh_cli("env", *common)
        assert r.returncode == 0, r.stderr
        cs = local_stack.make_eventhubs_connection_string("127.0.0.1", port, "reviews")
        assert r.stdout.strip() == f"export {local_stack.EVENTHUBS_CONNECTION_ENV}='{cs}'"
        assert local_stack.running_eventhubs_connection_string(state) == cs

        # the real SDK reaches the hub through that string
        lines = tmp_path / "reviews.jsonl"
        lines.write_bytes(b"".join(b'{"asin": "B%02d", "overall": 5.0}\n' % i for i in range(6)))
        stats = publish(cs, [lines], partitions=4, progress=False)
        assert (stats.sent, stats.rejected, stats.per_partition) == (6, 0, {"0": 2, "1": 2, "2": 1, "3": 1})

        r = _eh_cli("stop", *common)
        assert r.returncode == 0, r.stderr
        assert "stopped" in r.stdout
        assert not local_stack._pid_alive(pid)   # stop returns once the process is gone
        assert not state.exists()
        assert sorted(p.name for p in (data / "reviews").glob("partition-*.log")) == [
            f"partition-{i}.log" for i in range(4)]  # data kept: a restart serves the events again

        r = _eh_cli("stop", *common)
        assert r.returncode == 0 and "not running" in r.stdout
        r = _eh_cli("status", *common)
        assert r.returncode == 3 and "not running" in r.stdout
        r = _eh_cli("env", *common)
        assert r.returncode == 1 and not r.stdout and "not running" in r.stderr
    finally:
        if state.exists():
            _eh_cli("stop", *common)
        if pid is not None and local_stack._is_eventhubs_pid(pid):
            local_stack._terminate_pid(pid)
