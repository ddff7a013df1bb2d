"""Local stand-ins for the Azure services the job talks to (for tests and ``make run``).

* Azurite's blob service, which Beam's ``azfs://`` filesystem and ``azure-storage-blob`` use unchanged.
  Azurite is the npm package pinned in ``package.json``; ``npm install`` at the repository root puts
  ``node_modules/.bin/azurite-blob`` in place.
* The local Event Hubs endpoint of ``runners.eventhubs_local`` (pure Python, plain AMQP, no auth),
  run as a detached ``python -m runners.eventhubs_local serve`` process, which the ``azure-eventhub``
  SDK (``beam_pipeline --source=eventhub``, ``runners.publish``) talks to unchanged.

Python API::

    from runners.local_stack import Azurite, upload_tree, download_tree, azfs_url, ensure_container

    with Azurite(location="/tmp/az") as az:             # free loopback port, waits until it serves
        upload_tree(az.connection_string, "reviews", "data/", prefix="raw")
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = az.connection_string  # what Beam's azfs reads
        path = azfs_url("reviews", "raw/part-0.json")   # azfs://devstoreaccount1/reviews/raw/part-0.json

    from runners.local_stack import EventHubsEndpoint, start_eventhubs, stop_eventhubs

    with EventHubsEndpoint("/tmp/eh") as eh:            # child process, free port, waits until it answers
        publish(eh.connection_string, files, partitions=4)          # runners.publish
    state, started = start_eventhubs()   # detached, recorded in .local/eventhubs.json; reused if running
    stop_eventhubs()

CLI (used by ``make run``; ``--help`` on every subcommand)::

    python -m runners.local_stack azurite start [--port 10000] [--location .local/azurite]
    python -m runners.local_stack azurite status | stop
    eval "$(python -m runners.local_stack azurite env)"
    python -m runners.local_stack upload --container reviews --prefix raw DIR

    python -m runners.local_stack eventhubs start [--port P] [--data-dir .local/eventhubs] [--hub reviews]
                                                 [--partitions 4]     # port: 5674, or a free one if taken
    python -m runners.local_stack eventhubs status | stop
    eval "$(python -m runners.local_stack eventhubs env)"   # export EVENTHUB_CONNECTION_STRING='...'

The Event Hubs connection string carries a placeholder key (``SharedAccessKey=local``): the endpoint
checks no credentials, so there is nothing to redact there.

The only credential here is Azurite's *public*, documented development account key (it is published in
Microsoft's Azurite documentation and is identical on every installation). It is still redacted in
everything this module prints or logs, except ``azurite env`` whose job is to print it.

Notes on the Beam side (apache-beam 2.77, ``apache_beam/io/azure/blobstorageio.py``):

* azfs builds a new ``BlobServiceClient`` for every operation from ``--azure_connection_string`` or,
  when that is unset, the ``AZURE_STORAGE_CONNECTION_STRING`` environment variable read at that moment.
* The account in ``azfs://<account>/...`` is ignored for I/O, but copy/rename (used by every ``Write*``
  finalize) builds ``https://<account>.blob.core.windows.net/...`` source URLs. Azurite resolves that
  by the host name, so the path's account must be ``devstoreaccount1``; Azurite must therefore NOT be
  started with ``--disableProductStyleUrl``.
* Container names must match ``[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]`` (no ``_``, no upper case).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account. PUBLIC: documented at
# https://learn.microsoft.com/azure/storage/common/storage-use-azurite#well-known-storage-account-and-key
# and the same on every Azurite installation. It is not a secret and grants nothing outside Azurite.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 10000
DEFAULT_LOCATION = REPO_ROOT / ".local" / "azurite"
DEFAULT_STATE_FILE = REPO_ROOT / ".local" / "azurite.json"
LOG_NAME = "azurite-blob.log"
STOP_GRACE_S = 5.0

# Beam 2.77's azfs path regex (blobstorageio.parse_azfs_path), container part.
_BEAM_CONTAINER_RE = re.compile(r"^[a-z0-9](?![a-z0-9-]*--[a-z0-9-]*)[a-z0-9-]{1,61}[a-z0-9]$")
_BEAM_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_KEY_RE = re.compile(r"(AccountKey=)[^;\s'\"]*", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- helpers
def redact(text: str) -> str:
    """Replace the value of every ``AccountKey=...`` in ``text`` with ``***``."""
    return _KEY_RE.sub(r"\1***", text)


def make_connection_string(host: str, port: int, account: str = AZURITE_ACCOUNT,
                           key: str = AZURITE_ACCOUNT_KEY) -> str:
    """Connection string for an Azurite blob endpoint (path-style URL: ``http://host:port/account``)."""
    return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://{host}:{port}/{account};")


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _blob_client(connection_string: str, **kwargs):
    from azure.storage.blob import BlobServiceClient  # imported lazily: the CLI's --help stays fast
    return BlobServiceClient.from_connection_string(connection_string, **kwargs)


def blob_service_ready(connection_string: str, timeout: float = 3.0) -> bool:
    """True if the blob service behind ``connection_string`` answers an authenticated request."""
    try:
        client = _blob_client(connection_string, retry_total=0,
                              connection_timeout=timeout, read_timeout=timeout)
        with client:
            client.get_service_properties()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready (yet)"
        return False


def _log_tail(path: Path, start: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = data.splitlines()[-lines:]
    return redact("\n".join(tail)) if tail else "(log is empty)"


def _check_azurite_installed() -> None:
    if not AZURITE_BIN.exists():
        raise RuntimeError(
            f"Azurite is not installed: {AZURITE_BIN} is missing. Run `npm install` in {REPO_ROOT} "
            "(it installs the azurite version pinned in package.json).")
    if shutil.which("node") is None:
        raise RuntimeError(f"`node` is not on PATH; {AZURITE_BIN} needs Node.js (>= 18) to run.")


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        pass
    try:  # no /proc (macOS)
        return subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True,
                              text=True, check=False).stdout
    except OSError:
        return ""


def _is_azurite_pid(pid: int) -> bool:
    return _pid_alive(pid) and "azurite" in _pid_cmdline(pid)


def _terminate_pid(pid: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM ``pid``, SIGKILL it if it is still alive after ``grace`` seconds (no child reaping)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.05)
    if _pid_alive(pid):
        raise RuntimeError(f"process {pid} survived SIGKILL")


# --------------------------------------------------------------------------------------------- Azurite
class Azurite:
    """An Azurite blob service on a loopback port, with its data and log under ``location``.

    ``port=None`` picks a free port. ``start()`` returns once the service answers a signed request.
    ``stop()`` is idempotent. Usable as a context manager. Nothing global (environment, Beam options)
    is changed; hand ``connection_string`` to whatever needs it.
    """

    def __init__(self, location: str | os.PathLike, host: str = DEFAULT_HOST, port: int | None = None):
        self.location = Path(location).resolve()
        self.host = host
        self._port = port
        self._proc: subprocess.Popen | None = None
        self._log_fh = None
        self._log_start = 0

    # -- properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("no port yet: start() picks one when port=None")
        return self._port

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return make_connection_string(self.host, self.port)

    @property
    def account(self) -> str:
        return AZURITE_ACCOUNT

    @property
    def log_path(self) -> Path:
        return self.location / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [str(AZURITE_BIN),
                "--blobHost", self.host,
                "--blobPort", str(self.port),
                "--location", str(self.location),
                "--skipApiVersionCheck",  # azure-storage-blob 12.31 sends API versions newer than 3.37 knows
                "--loose",                # ignore unsupported headers/params instead of failing
                "--silent",               # no access log
                "--disableTelemetry"]     # 3.37 collects telemetry by default; tests/CI must not phone home

    # -- lifecycle
    def start(self, timeout: float = 30, detached: bool = False) -> "Azurite":
        """Spawn Azurite and wait until it serves requests.

        ``detached=True`` starts it in its own session so it outlives this Python process and is not
        hit by the terminal's Ctrl-C (the CLI uses this). Raises RuntimeError if Azurite is missing,
        the port is taken, the process dies, or it is not ready within ``timeout`` seconds.
        """
        if self.running:
            return self
        _check_azurite_installed()
        if self._port is not None:
            if port_open(self.host, self._port):
                raise RuntimeError(f"port {self.host}:{self._port} is already in use by another process")
            self._spawn(timeout, detached)
            return self
        # Auto port: another process may grab the free port before Azurite binds it; retry then.
        for attempt in range(3):
            self._port = free_port(self.host)
            try:
                self._spawn(timeout, detached)
                return self
            except RuntimeError as exc:
                if "EADDRINUSE" not in str(exc) or attempt == 2:
                    self._port = None
                    raise
        return self

    def _spawn(self, timeout: float, detached: bool) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        self._log_start = self._log_fh.tell()
        self._log_fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: "
                           f"{shlex.join(self.command())}\n".encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                      stderr=subprocess.STDOUT, cwd=self.location,
                                      start_new_session=detached, close_fds=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"Azurite exited with rc={rc} during start-up (port {self.port}, location "
                    f"{self.location}). Log {self.log_path}:\n{_log_tail(self.log_path, self._log_start)}")
            if port_open(self.host, self.port) and blob_service_ready(self.connection_string):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Azurite did not become ready on {self.host}:{self.port} within {timeout:.0f} s. "
                    f"Log {self.log_path}:\n{_log_tail(self.log_path, self._log_start)}")
            time.sleep(0.1)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Terminate Azurite (SIGKILL after ``grace`` seconds). Safe to call repeatedly."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None

    def detach(self) -> None:
        """Forget the process without stopping it (after ``start(detached=True)``, for the CLI)."""
        if self._proc is not None:
            self._proc.returncode = 0  # keeps Popen.__del__ from warning about a running child
            self._proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "auto"
        return f"Azurite(location={str(self.location)!r}, host={self.host!r}, port={port}, pid={self.pid})"


# --------------------------------------------------------------------------------------------- Event Hubs
EVENTHUBS_MODULE = "runners.eventhubs_local"
EVENTHUBS_DEFAULT_PORT = 5674
EVENTHUBS_DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "eventhubs"
EVENTHUBS_DEFAULT_STATE_FILE = REPO_ROOT / ".local" / "eventhubs.json"
EVENTHUBS_LOG_NAME = "eventhubs-local.log"
EVENTHUBS_HUB = "reviews"
EVENTHUBS_PARTITIONS = 4
EVENTHUBS_CONNECTION_ENV = "EVENTHUB_CONNECTION_STRING"  # what beam_pipeline and runners.publish read
_AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
_SERVE_ENDPOINT_RE = re.compile(rb"^Endpoint=sb://[^;\s]+?:(\d+);", re.MULTILINE)


def make_eventhubs_connection_string(host: str, port: int, hub: str = EVENTHUBS_HUB) -> str:
    """Connection string of a local Event Hubs endpoint (identical to ``LocalEventHubs.connection_string``).

    The key is a placeholder: the endpoint checks no credentials. ``UseDevelopmentEmulator=true`` makes
    the SDK speak plain AMQP (no TLS) to ``host:port``.
    """
    return (f"Endpoint=sb://{host}:{port};SharedAccessKeyName=local;SharedAccessKey=local;"
            f"UseDevelopmentEmulator=true;EntityPath={hub}")


def amqp_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if ``host:port`` answers the AMQP 1.0 protocol header with its own, as the local endpoint does."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_AMQP_HEADER)
            got = b""
            while len(got) < len(_AMQP_HEADER):
                chunk = sock.recv(len(_AMQP_HEADER) - len(got))
                if not chunk:
                    break
                got += chunk
            return got == _AMQP_HEADER
    except OSError:
        return False


def _is_eventhubs_pid(pid: int) -> bool:
    return _pid_alive(pid) and EVENTHUBS_MODULE in _pid_cmdline(pid)


class EventHubsEndpoint:
    """The local Event Hubs endpoint (``python -m runners.eventhubs_local serve``) as a child process.

    Its partition logs and its log (``EVENTHUBS_LOG_NAME``) live under ``data_dir``. ``port=None``
    lets the server bind a free port itself (no race) and reads it back from its first output line.
    ``start()`` returns once the port answers the AMQP header; ``stop()`` (SIGTERM: the server closes
    its clients and logs) is idempotent. Usable as a context manager. For an in-process endpoint use
    ``runners.eventhubs_local.LocalEventHubs``; this class exists so that the endpoint can outlive the
    command that started it (``detached=True``, as the CLI does).
    """

    def __init__(self, data_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int | None = None,
                 hub: str = EVENTHUBS_HUB, partitions: int = EVENTHUBS_PARTITIONS):
        self.data_dir = Path(data_dir).resolve()
        self.host, self.hub, self.partitions = host, hub, int(partitions)
        self._requested_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log_fh = None
        self._log_start = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("no port yet: start() learns it from the server")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"sb://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return make_eventhubs_connection_string(self.host, self.port, self.hub)

    @property
    def log_path(self) -> Path:
        return self.data_dir / EVENTHUBS_LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [sys.executable, "-m", EVENTHUBS_MODULE, "serve", "--data-dir", str(self.data_dir),
                "--host", self.host, "--port", str(self._requested_port or 0), "--hub", self.hub,
                "--partitions", str(self.partitions)]

    def start(self, timeout: float = 30, detached: bool = False) -> "EventHubsEndpoint":
        """Spawn the server and wait until it answers AMQP. ``detached=True``: its own session, so it
        outlives this process and the terminal's Ctrl-C. RuntimeError if the port is taken, the server
        exits (its log tail is in the message) or it is not ready within ``timeout`` seconds."""
        if self.running:
            return self
        if self._requested_port and port_open(self.host, self._requested_port):
            raise RuntimeError(f"port {self.host}:{self._requested_port} is already in use by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        self._log_start = self._log_fh.tell()
        self._log_fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: "
                           f"{shlex.join(self.command())}\n".encode())
        self._log_fh.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(EVENTHUBS_CONNECTION_ENV, None)
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                      stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                                      start_new_session=detached, close_fds=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _served_port(self) -> int | None:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                match = _SERVE_ENDPOINT_RE.search(fh.read())
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"the Event Hubs endpoint exited with rc={rc} during start-up (data dir {self.data_dir}). "
                    f"Log {self.log_path}:\n{_log_tail(self.log_path, self._log_start)}")
            if self._port is None:
                self._port = self._served_port()
            if self._port is not None and amqp_ready(self.host, self._port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Event Hubs endpoint did not become ready within {timeout:.0f} s. "
                    f"Log {self.log_path}:\n{_log_tail(self.log_path, self._log_start)}")
            time.sleep(0.1)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the server (SIGKILL after ``grace`` seconds). Safe to call repeatedly."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
            if self._requested_port is None:
                self._port = None

    def detach(self) -> None:
        """Forget the process without stopping it (after ``start(detached=True)``, for the CLI)."""
        if self._proc is not None:
            self._proc.returncode = 0  # keeps Popen.__del__ from warning about a running child
            self._proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> "EventHubsEndpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else (self._requested_port or "auto")
        return (f"EventHubsEndpoint(data_dir={str(self.data_dir)!r}, host={self.host!r}, port={port}, "
                f"hub={self.hub!r}, partitions={self.partitions}, pid={self.pid})")


# --------------------------------------------------------------------------------------------- blobs
def azfs_url(container: str, blob_path: str = "", account: str = AZURITE_ACCOUNT) -> str:
    """``azfs://<account>/<container>/<blob_path>``; rejects names Beam's azfs path regex would reject."""
    if not _BEAM_ACCOUNT_RE.match(account):
        raise ValueError(f"account {account!r} is not valid for Beam azfs ([a-z0-9]{{3,24}})")
    if not _BEAM_CONTAINER_RE.match(container):
        raise ValueError(f"container {container!r} is not valid for Beam azfs "
                         "(3-63 chars of a-z, 0-9 and single '-', starting and ending alphanumeric)")
    return f"azfs://{account}/{container}/{blob_path.lstrip('/')}"


def _dir_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _check_container_name(container: str) -> None:
    if not _BEAM_CONTAINER_RE.match(container):
        raise ValueError(f"invalid container name {container!r}: Azure (and Beam azfs) need 3-63 chars "
                         "of a-z, 0-9 and single '-', starting and ending alphanumeric")


def ensure_container(connection_string: str, container: str) -> None:
    """Create ``container`` if it does not exist. Beam's azfs ``create()``/``Write*`` do NOT create
    containers: writing into a missing one fails with ``ContainerNotFound`` at close."""
    from azure.core.exceptions import ResourceExistsError

    _check_container_name(container)
    with _blob_client(connection_string) as client:
        try:
            client.create_container(container)
        except ResourceExistsError:
            pass


def upload_tree(connection_string: str, container: str, local_dir: str | os.PathLike,
                prefix: str = "") -> list[str]:
    """Upload every file under ``local_dir`` to ``container``, as ``<prefix>/<relative path>``.

    Creates the container if missing and overwrites existing blobs. Returns the blob names, sorted.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    ensure_container(connection_string, container)
    base = _dir_prefix(prefix)
    names: list[str] = []
    with _blob_client(connection_string) as client:
        cc = client.get_container_client(container)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = base + path.relative_to(root).as_posix()
            with open(path, "rb") as fh:
                cc.upload_blob(name, fh, overwrite=True)
            names.append(name)
    return names


def download_tree(connection_string: str, container: str, prefix: str,
                  local_dir: str | os.PathLike) -> list[Path]:
    """Download every blob under the "directory" ``prefix`` into ``local_dir``, keeping the layout.

    ``prefix`` is treated as a directory (``out/silver`` matches ``out/silver/...`` but not
    ``out/silver2``); the local paths are relative to it, so ``upload_tree(..., prefix=P)`` followed
    by ``download_tree(..., P, d)`` reproduces the tree. Returns the written paths, sorted.
    """
    root = Path(local_dir).resolve()
    base = _dir_prefix(prefix)
    written: list[Path] = []
    with _blob_client(connection_string) as client:
        cc = client.get_container_client(container)
        for blob in cc.list_blobs(name_starts_with=base or None):
            rel = blob.name[len(base):]
            if not rel or rel.endswith("/"):
                continue  # directory markers
            target = (root / rel).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"blob name {blob.name!r} escapes {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                cc.download_blob(blob.name).readinto(fh)
            written.append(target)
    return sorted(written)


# --------------------------------------------------------------------------------------------- state
def read_state(state_file: Path) -> dict | None:
    try:
        return json.loads(Path(state_file).read_text())
    except (OSError, ValueError):
        return None


def _write_state(state_file: Path, state: dict) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_file)


def _state_running(state: dict | None) -> bool:
    """True if the recorded Azurite process is alive and its port serves blob requests."""
    if not state or "pid" not in state or "port" not in state:
        return False
    host = state.get("host", DEFAULT_HOST)
    return (_is_azurite_pid(int(state["pid"])) and port_open(host, int(state["port"]))
            and blob_service_ready(make_connection_string(host, int(state["port"]))))


def running_connection_string(state_file: Path = DEFAULT_STATE_FILE) -> str | None:
    """Connection string of the CLI-started Azurite recorded in ``state_file``, if it is running."""
    state = read_state(state_file)
    if not _state_running(state):
        return None
    return make_connection_string(state.get("host", DEFAULT_HOST), int(state["port"]))


def _eventhubs_state_running(state: dict | None) -> bool:
    """True if the recorded endpoint process is alive and its port answers AMQP."""
    if not state or "pid" not in state or "port" not in state:
        return False
    return (_is_eventhubs_pid(int(state["pid"]))
            and amqp_ready(state.get("host", DEFAULT_HOST), int(state["port"])))


def running_eventhubs_connection_string(state_file: Path = EVENTHUBS_DEFAULT_STATE_FILE) -> str | None:
    """Connection string of the CLI-started Event Hubs endpoint recorded in ``state_file``, if it runs."""
    state = read_state(state_file)
    if not _eventhubs_state_running(state):
        return None
    return make_eventhubs_connection_string(state.get("host", DEFAULT_HOST), int(state["port"]),
                                           state.get("hub", EVENTHUBS_HUB))


def start_eventhubs(state_file: Path = EVENTHUBS_DEFAULT_STATE_FILE,
                    data_dir: str | os.PathLike = EVENTHUBS_DEFAULT_DATA_DIR, host: str = DEFAULT_HOST,
                    port: int | None = None, hub: str = EVENTHUBS_HUB, partitions: int = EVENTHUBS_PARTITIONS,
                    timeout: float = 30.0) -> tuple[dict, bool]:
    """Start the local Event Hubs endpoint detached and record it in ``state_file``, or reuse the
    recorded one if it runs with the same data dir, hub and partitions. Returns ``(state, started)``.

    ``port``: None = ``EVENTHUBS_DEFAULT_PORT`` if free, else a free port; 0 = a free port; N = exactly N
    (RuntimeError if taken). RuntimeError also when the recorded endpoint differs from what is asked for
    or cannot be started.
    """
    state_file, data_dir = Path(state_file).resolve(), Path(data_dir).resolve()
    state = read_state(state_file)
    if state is not None:
        if _eventhubs_state_running(state):
            wanted = {"data_dir": str(data_dir), "hub": hub, "partitions": int(partitions)}
            if port:
                wanted["port"] = int(port)
            differs = [f"{k} {state.get(k)!r} (asked for {v!r})" for k, v in wanted.items() if state.get(k) != v]
            if differs:
                raise RuntimeError(f"the Event Hubs endpoint recorded in {state_file} runs with other settings: "
                                   f"{', '.join(differs)}; run `eventhubs stop` first")
            return state, False
        if _is_eventhubs_pid(int(state.get("pid", 0) or 0)):
            raise RuntimeError(f"recorded Event Hubs endpoint pid {state['pid']} is alive but does not answer on "
                               f"port {state.get('port')}; run `eventhubs stop` first")
        state_file.unlink(missing_ok=True)  # stale
    auto = port is None
    if auto:
        port = 0 if port_open(host, EVENTHUBS_DEFAULT_PORT) else EVENTHUBS_DEFAULT_PORT
    endpoint = EventHubsEndpoint(data_dir, host=host, port=port or None, hub=hub, partitions=partitions)
    try:
        endpoint.start(timeout=timeout, detached=True)
    except RuntimeError as exc:
        if not (auto and port and "already in use" in str(exc).lower()):
            raise
        # the default port was taken between the check and the bind: let the server pick one
        endpoint = EventHubsEndpoint(data_dir, host=host, port=None, hub=hub, partitions=partitions)
        endpoint.start(timeout=timeout, detached=True)
    state = {"pid": endpoint.pid, "host": endpoint.host, "port": endpoint.port, "data_dir": str(endpoint.data_dir),
             "hub": endpoint.hub, "partitions": endpoint.partitions, "log": str(endpoint.log_path),
             "endpoint": endpoint.endpoint, "connection_string": endpoint.connection_string,
             "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        _write_state(state_file, state)
    except OSError as exc:
        endpoint.stop()
        raise RuntimeError(f"could not write state file {state_file}: {exc}; endpoint stopped") from exc
    endpoint.detach()
    return state, True


def stop_eventhubs(state_file: Path = EVENTHUBS_DEFAULT_STATE_FILE, grace: float = STOP_GRACE_S) -> str:
    """Stop the endpoint recorded in ``state_file`` and remove the file; returns what happened (one line).
    Idempotent. RuntimeError if the process survives SIGKILL."""
    state_file = Path(state_file).resolve()
    state = read_state(state_file)
    if state is None:
        return "not running (no state file)"
    pid = int(state.get("pid", 0) or 0)
    if pid and _is_eventhubs_pid(pid):
        _terminate_pid(pid, grace=grace)
        message = f"stopped: pid={pid} port={state.get('port')}"
    elif pid and _pid_alive(pid):
        message = f"not running: pid {pid} now belongs to another program (left alone); stale state removed"
    else:
        message = "not running (stale state removed)"
    state_file.unlink(missing_ok=True)
    return message


# --------------------------------------------------------------------------------------------- CLI
def _err(msg: str) -> None:
    print(redact(msg), file=sys.stderr)


def _describe(state: dict) -> str:
    host = state.get("host", DEFAULT_HOST)
    return (f"pid={state['pid']} blob_endpoint=http://{host}:{state['port']}/{AZURITE_ACCOUNT} "
            f"location={state.get('location')}")


def _cmd_start(args) -> int:
    state_file = Path(args.state_file).resolve()
    state = read_state(state_file)
    if state is not None:
        if _state_running(state):
            if args.port not in (0, int(state["port"])):
                _err(f"Azurite is already running on another port ({_describe(state)}); "
                     f"run `azurite stop` first (state file {state_file})")
                return 1
            print(f"already running: {_describe(state)}")
            return 0
        if _is_azurite_pid(int(state.get("pid", 0) or 0)):
            _err(f"recorded Azurite pid {state['pid']} is alive but not serving on port "
                 f"{state.get('port')}; run `azurite stop` first")
            return 1
        state_file.unlink(missing_ok=True)  # stale
    if args.port and port_open(args.host, args.port):
        _err(f"port {args.host}:{args.port} is already in use by another process (not the Azurite "
             f"recorded in {state_file}); stop it or pass --port")
        return 1
    az = Azurite(location=args.location, host=args.host, port=args.port or None)
    try:
        az.start(timeout=args.timeout, detached=True)
    except (RuntimeError, OSError) as exc:
        _err(f"failed to start Azurite: {exc}")
        return 1
    state = {"pid": az.pid, "host": az.host, "port": az.port, "location": str(az.location),
             "log": str(az.log_path), "account": AZURITE_ACCOUNT, "blob_endpoint": az.blob_endpoint,
             "connection_string": redact(az.connection_string),
             "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        _write_state(state_file, state)
    except OSError as exc:
        az.stop()
        _err(f"could not write state file {state_file}: {exc}; Azurite stopped")
        return 1
    az.detach()
    print(f"started: {_describe(state)}")
    print(f"log: {state['log']}  state: {state_file}")
    return 0


def _cmd_stop(args) -> int:
    state_file = Path(args.state_file).resolve()
    state = read_state(state_file)
    if state is None:
        print("not running (no state file)")
        return 0
    pid = int(state.get("pid", 0) or 0)
    if pid and _is_azurite_pid(pid):
        try:
            _terminate_pid(pid, grace=args.grace)
        except RuntimeError as exc:
            _err(f"could not stop Azurite pid {pid}: {exc}")
            return 1
        print(f"stopped: pid={pid} port={state.get('port')}")
    elif pid and _pid_alive(pid):
        print(f"not running: pid {pid} now belongs to another program (left alone); stale state removed")
    else:
        print("not running (stale state removed)")
    state_file.unlink(missing_ok=True)
    return 0


def _cmd_status(args) -> int:
    state_file = Path(args.state_file).resolve()
    state = read_state(state_file)
    running = _state_running(state)
    if args.json:
        out = dict(state or {}, running=running, state_file=str(state_file))
        print(json.dumps(out, indent=2))
    elif running:
        print(f"running: {_describe(state)}")
    elif state is None:
        print(f"not running (no state file {state_file})")
    else:
        print(f"not running (stale state file {state_file}: pid={state.get('pid')} port={state.get('port')})")
    return 0 if running else 3


def _cmd_env(args) -> int:
    cs = running_connection_string(Path(args.state_file).resolve())
    if cs is None:
        _err("Azurite is not running; start it with `python -m runners.local_stack azurite start`")
        return 1
    # The one place the (public, well-known) dev key is printed: this output is meant for `eval`.
    print(f"export AZURE_STORAGE_CONNECTION_STRING={shlex.quote(cs)}")
    return 0


def _cmd_upload(args) -> int:
    cs = (args.connection_string or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
          or running_connection_string(Path(args.state_file).resolve()))
    if not cs:
        _err("no connection string: pass --connection-string, set AZURE_STORAGE_CONNECTION_STRING, "
             "or start Azurite with `python -m runners.local_stack azurite start`")
        return 1
    try:
        names = upload_tree(cs, args.container, args.dir, prefix=args.prefix)
    except Exception as exc:  # noqa: BLE001 - report any SDK/IO failure as one line
        _err(f"upload failed: {type(exc).__name__}: {exc}")
        return 1
    account = re.search(r"AccountName=([^;]+)", cs)
    where = f"{args.container}/{_dir_prefix(args.prefix)}"
    try:
        where = azfs_url(args.container, _dir_prefix(args.prefix),
                         account.group(1) if account else AZURITE_ACCOUNT)
    except ValueError:
        pass
    print(f"uploaded {len(names)} file(s) to {where}")
    if args.verbose:
        for name in names:
            print(f"  {name}")
    return 0


def _describe_eventhubs(state: dict) -> str:
    return (f"pid={state['pid']} endpoint=sb://{state.get('host', DEFAULT_HOST)}:{state['port']} "
            f"hub={state.get('hub')} partitions={state.get('partitions')} data_dir={state.get('data_dir')}")


def _cmd_eh_start(args) -> int:
    state_file = Path(args.state_file).resolve()
    try:
        state, started = start_eventhubs(state_file, args.data_dir, host=args.host, port=args.port, hub=args.hub,
                                         partitions=args.partitions, timeout=args.timeout)
    except (RuntimeError, OSError) as exc:
        _err(f"failed to start the Event Hubs endpoint: {exc}")
        return 1
    if not started:
        print(f"already running: {_describe_eventhubs(state)}")
        return 0
    print(f"started: {_describe_eventhubs(state)}")
    print(f"log: {state['log']}  state: {state_file}")
    return 0


def _cmd_eh_stop(args) -> int:
    try:
        print(stop_eventhubs(Path(args.state_file), grace=args.grace))
    except RuntimeError as exc:
        _err(f"could not stop the Event Hubs endpoint: {exc}")
        return 1
    return 0


def _cmd_eh_status(args) -> int:
    state_file = Path(args.state_file).resolve()
    state = read_state(state_file)
    running = _eventhubs_state_running(state)
    if args.json:
        print(json.dumps(dict(state or {}, running=running, state_file=str(state_file)), indent=2))
    elif running:
        print(f"running: {_describe_eventhubs(state)}")
    elif state is None:
        print(f"not running (no state file {state_file})")
    else:
        print(f"not running (stale state file {state_file}: pid={state.get('pid')} port={state.get('port')})")
    return 0 if running else 3


def _cmd_eh_env(args) -> int:
    cs = running_eventhubs_connection_string(Path(args.state_file).resolve())
    if cs is None:
        _err("the Event Hubs endpoint is not running; start it with `python -m runners.local_stack eventhubs start`")
        return 1
    print(f"export {EVENTHUBS_CONNECTION_ENV}={shlex.quote(cs)}")
    return 0


def _eventhubs_port(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a TCP port 0-65535, got {text!r}")
    return port


def _add_eventhubs_parser(sub, fmt) -> None:
    eh = sub.add_parser("eventhubs", help="manage a detached local Event Hubs endpoint", formatter_class=fmt,
                        description="Manage a detached local Event Hubs endpoint (runners.eventhubs_local: "
                                    "plain AMQP, no authentication, durable partition logs). Its pid and port "
                                    "are recorded in a state file so later commands can find it.")
    eh_sub = eh.add_subparsers(dest="action", required=True, metavar="{start,stop,status,env}")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-file", default=str(EVENTHUBS_DEFAULT_STATE_FILE), metavar="PATH",
                       help="JSON file recording the running endpoint (pid, port, data dir); relative paths are "
                            "resolved against the current directory")

    p = eh_sub.add_parser(
        "start", parents=[state], formatter_class=fmt, help="start the endpoint in the background",
        description="Start the endpoint in the background (its own session, so it outlives this command) "
                    "and wait until it answers AMQP. Idempotent: if the recorded endpoint runs with the same "
                    "data dir, hub and partitions, prints 'already running' and exits 0.")
    p.add_argument("--port", type=_eventhubs_port, default="auto",
                   help=f"TCP port. 'auto': {EVENTHUBS_DEFAULT_PORT}, or a free port when that one is taken; "
                        "0: a free port; N: exactly N (an error if it is taken)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (keep it loopback: no auth)")
    p.add_argument("--data-dir", "--location", dest="data_dir", default=str(EVENTHUBS_DEFAULT_DATA_DIR),
                   metavar="DIR", help=f"directory for the partition logs and the server log ({EVENTHUBS_LOG_NAME}); "
                                       "events sent earlier are served again. Relative paths are resolved "
                                       "against the current directory")
    p.add_argument("--hub", default=EVENTHUBS_HUB, help="event hub name (the connection string's EntityPath)")
    p.add_argument("--partitions", type=int, default=EVENTHUBS_PARTITIONS,
                   help="partition count; must match what the data dir was created with")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the endpoint to answer before giving up")
    p.set_defaults(func=_cmd_eh_start)

    p = eh_sub.add_parser(
        "stop", parents=[state], formatter_class=fmt, help="stop the recorded endpoint",
        description="Stop the endpoint recorded in the state file (SIGTERM, then SIGKILL after the grace "
                    "period) and remove the state file. Its data dir is kept. Idempotent: exits 0 if "
                    "nothing runs.")
    p.add_argument("--grace", type=float, default=STOP_GRACE_S, metavar="SECONDS",
                   help="seconds to wait after SIGTERM before SIGKILL")
    p.set_defaults(func=_cmd_eh_stop)

    p = eh_sub.add_parser(
        "status", parents=[state], formatter_class=fmt, help="report whether the endpoint is running",
        description="Report whether the recorded endpoint is running and answering AMQP. "
                    "Exit status: 0 running, 3 not running.")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.set_defaults(func=_cmd_eh_status)

    p = eh_sub.add_parser(
        "env", parents=[state], formatter_class=fmt,
        help=f"print `export {EVENTHUBS_CONNECTION_ENV}=...` for the running endpoint",
        description=f"Print a shell `export {EVENTHUBS_CONNECTION_ENV}='...'` line for the running endpoint, "
                    f"for `eval \"$(python -m runners.local_stack eventhubs env)\"` (what beam_pipeline "
                    "--source=eventhub and runners.publish read). The key in it is a placeholder: the "
                    "endpoint checks none. Exits 1 if the endpoint is not running.")
    p.set_defaults(func=_cmd_eh_env)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m runners.local_stack", formatter_class=fmt,
        description="Start, stop and inspect local stand-ins for Azure services (Azurite blob, a local "
                    "Event Hubs endpoint), and upload local files to Azurite.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{azurite,eventhubs,upload}")

    az = sub.add_parser("azurite", help="manage a detached Azurite blob service", formatter_class=fmt,
                        description="Manage a detached Azurite blob service. Its pid and port are "
                                    "recorded in a state file so later commands can find it.")
    az_sub = az.add_subparsers(dest="action", required=True, metavar="{start,stop,status,env}")

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-file", default=str(DEFAULT_STATE_FILE), metavar="PATH",
                       help="JSON file recording the running instance (pid, port, location); relative "
                            "paths are resolved against the current directory")

    p = az_sub.add_parser(
        "start", parents=[state], formatter_class=fmt, help="start Azurite in the background",
        description="Start Azurite blob in the background (its own session, so it outlives this "
                    "command) and wait until it serves requests. Idempotent: if the recorded instance "
                    "is running, prints 'already running' and exits 0. Fails if the port is taken "
                    "by another program.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="TCP port for the blob endpoint; 0 picks a free port")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (keep it loopback)")
    p.add_argument("--location", default=str(DEFAULT_LOCATION), metavar="DIR",
                   help=f"directory for Azurite's data and its log ({LOG_NAME}); relative paths are "
                        "resolved against the current directory")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for Azurite to serve requests before giving up")
    p.set_defaults(func=_cmd_start)

    p = az_sub.add_parser(
        "stop", parents=[state], formatter_class=fmt, help="stop the recorded Azurite",
        description="Stop the Azurite recorded in the state file (SIGTERM, then SIGKILL after the "
                    "grace period) and remove the state file. Idempotent: exits 0 if nothing runs.")
    p.add_argument("--grace", type=float, default=STOP_GRACE_S, metavar="SECONDS",
                   help="seconds to wait after SIGTERM before SIGKILL")
    p.set_defaults(func=_cmd_stop)

    p = az_sub.add_parser(
        "status", parents=[state], formatter_class=fmt, help="report whether Azurite is running",
        description="Report whether the recorded Azurite is running and serving requests. "
                    "Exit status: 0 running, 3 not running. The account key is redacted.")
    p.add_argument("--json", action="store_true", help="print the state as JSON (key redacted)")
    p.set_defaults(func=_cmd_status)

    p = az_sub.add_parser(
        "env", parents=[state], formatter_class=fmt,
        help="print `export AZURE_STORAGE_CONNECTION_STRING=...` for the running Azurite",
        description="Print a shell `export AZURE_STORAGE_CONNECTION_STRING='...'` line for the "
                    "running Azurite, for `eval \"$(python -m runners.local_stack azurite env)\"`. "
                    "It contains Azurite's public development key. Exits 1 if Azurite is not running.")
    p.set_defaults(func=_cmd_env)

    _add_eventhubs_parser(sub, fmt)

    p = sub.add_parser(
        "upload", parents=[state], formatter_class=fmt, help="upload a local directory tree",
        description="Upload every file under DIR to a blob container as <prefix>/<relative path>, "
                    "creating the container if needed and overwriting existing blobs. The connection "
                    "string comes from --connection-string, else $AZURE_STORAGE_CONNECTION_STRING, "
                    "else the running Azurite in --state-file.")
    p.add_argument("dir", metavar="DIR", help="local directory to upload")
    p.add_argument("--container", required=True,
                   help="target container (for Beam azfs: 3-63 chars, lower-case letters, digits, '-')")
    p.add_argument("--prefix", default="", help="blob name prefix (a 'directory'; may be empty)")
    p.add_argument("--connection-string", default=None, metavar="CS",
                   help="storage connection string (avoid on shared machines: visible in `ps`)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every uploaded blob name")
    p.set_defaults(func=_cmd_upload)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
