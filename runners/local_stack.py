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
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, TypeVar

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


# --------------------------------------------------------------------------------------------- child services
_S = TypeVar("_S", bound="_ChildService")


class _ChildService:
    """A server run as a child process on a loopback port, with its log (and data) under one directory.

    The lifecycle ``Azurite`` and ``EventHubsEndpoint`` share: ``start()`` appends a start line to the
    log, spawns ``command()`` with stdout and stderr going to that log and waits until ``_ready()`` says
    the server serves; a failed start stops the process and raises RuntimeError naming the service, with
    the log's tail. ``stop()`` (SIGTERM, SIGKILL after a grace period) is idempotent; ``detach()``
    forgets a ``start(detached=True)`` process without stopping it; usable as a context manager.
    Subclasses give the command line, the readiness check, the port handling and the names in messages.
    """

    _NAME = "the service"      # subject of the error messages: "<_NAME> exited with rc=..."
    _LOG_NAME = "service.log"  # the log file under ``_dir``
    _NO_PORT = "no port yet"   # the RuntimeError of ``port`` while none is known
    _EXIT_CONTEXT = "directory {0._dir}"  # in parentheses after "exited ... during start-up" ({0}: self)
    _READY_WHERE = ""                     # after "did not become ready" (e.g. " on {0.host}:{0.port}")

    def __init__(self, directory: str | os.PathLike, host: str, port: int | None):
        self._dir = Path(directory).resolve()
        self.host = host
        self._port = port
        self._proc: subprocess.Popen | None = None
        self._log_fh = None
        self._log_start = 0

    # -- what subclasses provide
    def command(self) -> list[str]:
        raise NotImplementedError

    def _start(self, timeout: float, detached: bool) -> None:
        """Check what can be checked up front, then ``_spawn``."""
        self._spawn(timeout, detached)

    def _ready(self) -> bool:
        """True once the server answers (called every 0.1 s while it starts)."""
        raise NotImplementedError

    def _popen_kwargs(self) -> dict:
        return {"cwd": self._dir}

    def _stopped(self) -> None:
        """Called at the end of every ``stop()``."""

    # -- properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(self._NO_PORT)
        return self._port

    @property
    def log_path(self) -> Path:
        return self._dir / self._LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle
    def start(self: _S, timeout: float = 30, detached: bool = False) -> _S:
        """Spawn the server and wait until it serves; returns ``self`` (at once if it already runs).

        ``detached=True`` starts it in its own session so it outlives this Python process and is not
        hit by the terminal's Ctrl-C (the CLI uses this). Raises RuntimeError if the port is taken, the
        process exits (its log tail is in the message) or it is not ready within ``timeout`` seconds.
        """
        if not self.running:
            self._start(timeout, detached)
        return self

    def _check_port_free(self, port: int) -> None:
        if port_open(self.host, port):
            raise RuntimeError(f"port {self.host}:{port} is already in use by another process")

    def _spawn(self, timeout: float, detached: bool) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        self._log_start = self._log_fh.tell()
        self._log_fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: "
                           f"{shlex.join(self.command())}\n".encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                      stderr=subprocess.STDOUT, start_new_session=detached, close_fds=True,
                                      **self._popen_kwargs())
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
                    f"{self._NAME} exited with rc={rc} during start-up ({self._EXIT_CONTEXT.format(self)}). "
                    f"Log {self.log_path}:\n{_log_tail(self.log_path, self._log_start)}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self._NAME} did not become ready{self._READY_WHERE.format(self)} within {timeout:.0f} s. "
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
            self._close_log()
            self._stopped()

    def detach(self) -> None:
        """Forget the process without stopping it (after ``start(detached=True)``, for the CLI)."""
        if self._proc is not None:
            self._proc.returncode = 0  # keeps Popen.__del__ from warning about a running child
            self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- Azurite
class Azurite(_ChildService):
    """An Azurite blob service on a loopback port, with its data and log under ``location``.

    ``port=None`` picks a free port. ``start()`` returns once the service answers a signed request;
    it raises RuntimeError also when Azurite is not installed. ``stop()`` is idempotent. Usable as a
    context manager. Nothing global (environment, Beam options) is changed; hand ``connection_string``
    to whatever needs it.
    """

    _NAME = "Azurite"
    _LOG_NAME = LOG_NAME
    _NO_PORT = "no port yet: start() picks one when port=None"
    _EXIT_CONTEXT = "port {0.port}, location {0.location}"
    _READY_WHERE = " on {0.host}:{0.port}"

    def __init__(self, location: str | os.PathLike, host: str = DEFAULT_HOST, port: int | None = None):
        super().__init__(location, host, port)
        self.location = self._dir

    # -- properties
    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return make_connection_string(self.host, self.port)

    @property
    def account(self) -> str:
        return AZURITE_ACCOUNT

    def command(self) -> list[str]:
        return [str(AZURITE_BIN),
                "--blobHost", self.host,
                "--blobPort", str(self.port),
                "--location", str(self.location),
                "--skipApiVersionCheck",  # azure-storage-blob 12.31 sends API versions newer than 3.37 knows
                "--loose",                # ignore unsupported headers/params instead of failing
                "--silent",               # no access log
                "--disableTelemetry"]     # 3.37 collects telemetry by default; tests/CI must not phone home

    # -- lifecycle hooks
    def _start(self, timeout: float, detached: bool) -> None:
        _check_azurite_installed()
        if self._port is not None:
            self._check_port_free(self._port)
            self._spawn(timeout, detached)
            return
        # Auto port: another process may grab the free port before Azurite binds it; retry then.
        for attempt in range(3):
            self._port = free_port(self.host)
            try:
                self._spawn(timeout, detached)
                return
            except RuntimeError as exc:
                if "EADDRINUSE" not in str(exc) or attempt == 2:
                    self._port = None
                    raise

    def _ready(self) -> bool:
        return port_open(self.host, self.port) and blob_service_ready(self.connection_string)

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


class EventHubsEndpoint(_ChildService):
    """The local Event Hubs endpoint (``python -m runners.eventhubs_local serve``) as a child process.

    Its partition logs and its log (``EVENTHUBS_LOG_NAME``) live under ``data_dir``. ``port=None``
    lets the server bind a free port itself (no race) and reads it back from its first output line.
    ``start()`` returns once the port answers the AMQP header; ``stop()`` (SIGTERM: the server closes
    its clients and logs) is idempotent. Usable as a context manager. For an in-process endpoint use
    ``runners.eventhubs_local.LocalEventHubs``; this class serves from another process (as a real hub is:
    an in-process endpoint shares the GIL with the clients it serves), and can outlive the command that
    started it (``detached=True``, as the CLI does). ``fsync=False`` for throwaway data (tests, benchmarks).
    """

    _NAME = "the Event Hubs endpoint"
    _LOG_NAME = EVENTHUBS_LOG_NAME
    _NO_PORT = "no port yet: start() learns it from the server"
    _EXIT_CONTEXT = "data dir {0.data_dir}"

    def __init__(self, data_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int | None = None,
                 hub: str = EVENTHUBS_HUB, partitions: int = EVENTHUBS_PARTITIONS, fsync: bool = True):
        super().__init__(data_dir, host, None)  # the port is known once the server has bound it
        self.data_dir = self._dir
        self.hub, self.partitions, self.fsync = hub, int(partitions), fsync
        self._requested_port = port

    @property
    def endpoint(self) -> str:
        return f"sb://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return make_eventhubs_connection_string(self.host, self.port, self.hub)

    def command(self) -> list[str]:
        return [sys.executable, "-m", EVENTHUBS_MODULE, "serve", "--data-dir", str(self.data_dir),
                "--host", self.host, "--port", str(self._requested_port or 0), "--hub", self.hub,
                "--partitions", str(self.partitions)] + ([] if self.fsync else ["--no-fsync"])

    # -- lifecycle hooks
    def _start(self, timeout: float, detached: bool) -> None:
        if self._requested_port:
            self._check_port_free(self._requested_port)
        self._spawn(timeout, detached)

    def _popen_kwargs(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(EVENTHUBS_CONNECTION_ENV, None)
        return {"cwd": REPO_ROOT, "env": env}

    def _served_port(self) -> int | None:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                match = _SERVE_ENDPOINT_RE.search(fh.read())
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def _ready(self) -> bool:
        if self._port is None:
            self._port = self._served_port()
        return self._port is not None and amqp_ready(self.host, self._port)

    def _stopped(self) -> None:
        if self._requested_port is None:
            self._port = None

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
# A CLI-started service is recorded in a JSON state file ({"pid", "host", "port", ...}); the helpers
# below take the per-service parts (how to recognise its pid, how to probe its port) as arguments.
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


def _recorded_running(state: dict | None, is_pid: Callable[[int], bool],
                      ready: Callable[[str, int], bool]) -> bool:
    """True if ``state`` records a pid that ``is_pid`` recognises and ``ready(host, port)`` holds."""
    if not state or "pid" not in state or "port" not in state:
        return False
    return is_pid(int(state["pid"])) and ready(state.get("host", DEFAULT_HOST), int(state["port"]))


def _running_state(state_file: Path, state_running: Callable[[dict | None], bool]) -> dict | None:
    """The state recorded in ``state_file`` if ``state_running`` says that service runs, else None."""
    state = read_state(state_file)
    return state if state_running(state) else None


def _clear_stale_state(state_file: Path, state: dict, is_pid: Callable[[int], bool], what: str,
                       not_serving: str, command: str) -> None:
    """Before a start, for a recorded process that does not serve: RuntimeError if it is still alive
    (``recorded <what> pid N is alive but <not_serving> on port P; run `<command> stop` first``), else
    remove the stale state file."""
    if is_pid(int(state.get("pid", 0) or 0)):
        raise RuntimeError(f"recorded {what} pid {state['pid']} is alive but {not_serving} on port "
                           f"{state.get('port')}; run `{command} stop` first")
    state_file.unlink(missing_ok=True)


def _record_started(service: _ChildService, state_file: Path, state: dict, what: str) -> None:
    """Write ``state`` for a service started with ``detached=True``, then detach from it. If the state
    file cannot be written, stop the service and raise RuntimeError (``...; <what> stopped``)."""
    try:
        _write_state(state_file, state)
    except OSError as exc:
        service.stop()
        raise RuntimeError(f"could not write state file {state_file}: {exc}; {what} stopped") from exc
    service.detach()


def _stop_recorded(state_file: Path, is_pid: Callable[[int], bool], grace: float) -> str:
    """Stop the process recorded in ``state_file`` if ``is_pid`` recognises it, remove the file and
    return what happened (one line). RuntimeError (file kept) if the process survives SIGKILL."""
    state_file = Path(state_file).resolve()
    state = read_state(state_file)
    if state is None:
        return "not running (no state file)"
    pid = int(state.get("pid", 0) or 0)
    if pid and is_pid(pid):
        _terminate_pid(pid, grace=grace)
        message = f"stopped: pid={pid} port={state.get('port')}"
    elif pid and _pid_alive(pid):
        message = f"not running: pid {pid} now belongs to another program (left alone); stale state removed"
    else:
        message = "not running (stale state removed)"
    state_file.unlink(missing_ok=True)
    return message


def _azurite_serving(host: str, port: int) -> bool:
    return port_open(host, port) and blob_service_ready(make_connection_string(host, port))


def _state_running(state: dict | None) -> bool:
    """True if the recorded Azurite process is alive and its port serves blob requests."""
    return _recorded_running(state, _is_azurite_pid, _azurite_serving)


def running_connection_string(state_file: Path = DEFAULT_STATE_FILE) -> str | None:
    """Connection string of the CLI-started Azurite recorded in ``state_file``, if it is running."""
    state = _running_state(state_file, _state_running)
    return None if state is None else make_connection_string(state.get("host", DEFAULT_HOST), int(state["port"]))


def _eventhubs_state_running(state: dict | None) -> bool:
    """True if the recorded endpoint process is alive and its port answers AMQP."""
    return _recorded_running(state, _is_eventhubs_pid, amqp_ready)


def running_eventhubs_connection_string(state_file: Path = EVENTHUBS_DEFAULT_STATE_FILE) -> str | None:
    """Connection string of the CLI-started Event Hubs endpoint recorded in ``state_file``, if it runs."""
    state = _running_state(state_file, _eventhubs_state_running)
    return None if state is None else make_eventhubs_connection_string(
        state.get("host", DEFAULT_HOST), int(state["port"]), state.get("hub", EVENTHUBS_HUB))


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
        _clear_stale_state(state_file, state, _is_eventhubs_pid, "Event Hubs endpoint", "does not answer",
                           "eventhubs")
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
    _record_started(endpoint, state_file, state, "endpoint")
    return state, True


def stop_eventhubs(state_file: Path = EVENTHUBS_DEFAULT_STATE_FILE, grace: float = STOP_GRACE_S) -> str:
    """Stop the endpoint recorded in ``state_file`` and remove the file; returns what happened (one line).
    Idempotent. RuntimeError if the process survives SIGKILL."""
    return _stop_recorded(state_file, _is_eventhubs_pid, grace)


# --------------------------------------------------------------------------------------------- CLI
def _err(msg: str) -> None:
    print(redact(msg), file=sys.stderr)


# The stop, status and env subcommands are the same for both services; these take the per-service parts.
def _cli_stop(args, is_pid: Callable[[int], bool], failure: str) -> int:
    """``failure`` prefixes the error when the process survives SIGKILL; ``{pid}`` in it is the pid."""
    state_file = Path(args.state_file).resolve()
    pid = int((read_state(state_file) or {}).get("pid", 0) or 0)
    try:
        print(_stop_recorded(state_file, is_pid, args.grace))
    except RuntimeError as exc:
        _err(f"{failure.format(pid=pid)}: {exc}")
        return 1
    return 0


def _cli_status(args, state_running: Callable[[dict | None], bool], describe: Callable[[dict], str]) -> int:
    state_file = Path(args.state_file).resolve()
    state = read_state(state_file)
    running = state_running(state)
    if args.json:
        print(json.dumps(dict(state or {}, running=running, state_file=str(state_file)), indent=2))
    elif running:
        print(f"running: {describe(state)}")
    elif state is None:
        print(f"not running (no state file {state_file})")
    else:
        print(f"not running (stale state file {state_file}: pid={state.get('pid')} port={state.get('port')})")
    return 0 if running else 3


def _cli_env(args, running_cs: Callable[[Path], str | None], variable: str, what: str, command: str) -> int:
    cs = running_cs(Path(args.state_file).resolve())
    if cs is None:
        _err(f"{what} is not running; start it with `python -m runners.local_stack {command} start`")
        return 1
    print(f"export {variable}={shlex.quote(cs)}")
    return 0


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
        try:
            _clear_stale_state(state_file, state, _is_azurite_pid, "Azurite", "not serving", "azurite")
        except RuntimeError as exc:
            _err(str(exc))
            return 1
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
        _record_started(az, state_file, state, "Azurite")
    except RuntimeError as exc:
        _err(str(exc))
        return 1
    print(f"started: {_describe(state)}")
    print(f"log: {state['log']}  state: {state_file}")
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


def _add_service_parser(sub, fmt, name: str, help: str, description: str, state_default: Path,
                        state_help: str):
    """The ``<name> {start,stop,status,env}`` parser; returns its subparsers and the ``--state-file``
    parent parser that every subcommand takes."""
    service = sub.add_parser(name, help=help, formatter_class=fmt, description=description)
    service_sub = service.add_subparsers(dest="action", required=True, metavar="{start,stop,status,env}")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-file", default=str(state_default), metavar="PATH", help=state_help)
    return service_sub, state


def _add_stop_status_env(service_sub, state, fmt, texts: dict[str, tuple[str, str]], json_help: str,
                         handlers: dict) -> None:
    """The ``stop``, ``status`` and ``env`` subcommands; ``texts[action]`` is its (help, description)."""
    for action in ("stop", "status", "env"):
        help_, description = texts[action]
        p = service_sub.add_parser(action, parents=[state], formatter_class=fmt, help=help_,
                                   description=description)
        if action == "stop":
            p.add_argument("--grace", type=float, default=STOP_GRACE_S, metavar="SECONDS",
                           help="seconds to wait after SIGTERM before SIGKILL")
        elif action == "status":
            p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(func=handlers[action])


def _add_eventhubs_parser(sub, fmt) -> None:
    eh_sub, state = _add_service_parser(
        sub, fmt, "eventhubs", help="manage a detached local Event Hubs endpoint",
        description="Manage a detached local Event Hubs endpoint (runners.eventhubs_local: "
                    "plain AMQP, no authentication, durable partition logs). Its pid and port "
                    "are recorded in a state file so later commands can find it.",
        state_default=EVENTHUBS_DEFAULT_STATE_FILE,
        state_help="JSON file recording the running endpoint (pid, port, data dir); relative paths are "
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

    _add_stop_status_env(eh_sub, state, fmt, {
        "stop": ("stop the recorded endpoint",
                 "Stop the endpoint recorded in the state file (SIGTERM, then SIGKILL after the grace "
                 "period) and remove the state file. Its data dir is kept. Idempotent: exits 0 if "
                 "nothing runs."),
        "status": ("report whether the endpoint is running",
                   "Report whether the recorded endpoint is running and answering AMQP. "
                   "Exit status: 0 running, 3 not running."),
        "env": (f"print `export {EVENTHUBS_CONNECTION_ENV}=...` for the running endpoint",
                f"Print a shell `export {EVENTHUBS_CONNECTION_ENV}='...'` line for the running endpoint, "
                f"for `eval \"$(python -m runners.local_stack eventhubs env)\"` (what beam_pipeline "
                "--source=eventhub and runners.publish read). The key in it is a placeholder: the "
                "endpoint checks none. Exits 1 if the endpoint is not running."),
    }, json_help="print the state as JSON",
        handlers={"stop": partial(_cli_stop, is_pid=_is_eventhubs_pid,
                                  failure="could not stop the Event Hubs endpoint"),
                  "status": partial(_cli_status, state_running=_eventhubs_state_running,
                                    describe=_describe_eventhubs),
                  "env": partial(_cli_env, running_cs=running_eventhubs_connection_string,
                                 variable=EVENTHUBS_CONNECTION_ENV, what="the Event Hubs endpoint",
                                 command="eventhubs")})


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    from beam_pipeline.cli import ArgumentParser
    parser = ArgumentParser(
        prog="python -m runners.local_stack", formatter_class=fmt,
        description="Start, stop and inspect local stand-ins for Azure services (Azurite blob, a local "
                    "Event Hubs endpoint), and upload local files to Azurite.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{azurite,eventhubs,upload}")

    az_sub, state = _add_service_parser(
        sub, fmt, "azurite", help="manage a detached Azurite blob service",
        description="Manage a detached Azurite blob service. Its pid and port are "
                    "recorded in a state file so later commands can find it.",
        state_default=DEFAULT_STATE_FILE,
        state_help="JSON file recording the running instance (pid, port, location); relative "
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

    _add_stop_status_env(az_sub, state, fmt, {
        "stop": ("stop the recorded Azurite",
                 "Stop the Azurite recorded in the state file (SIGTERM, then SIGKILL after the "
                 "grace period) and remove the state file. Idempotent: exits 0 if nothing runs."),
        "status": ("report whether Azurite is running",
                   "Report whether the recorded Azurite is running and serving requests. "
                   "Exit status: 0 running, 3 not running. The account key is redacted."),
        "env": ("print `export AZURE_STORAGE_CONNECTION_STRING=...` for the running Azurite",
                "Print a shell `export AZURE_STORAGE_CONNECTION_STRING='...'` line for the "
                "running Azurite, for `eval \"$(python -m runners.local_stack azurite env)\"`. "
                "It contains Azurite's public development key. Exits 1 if Azurite is not running."),
    }, json_help="print the state as JSON (key redacted)",
        handlers={"stop": partial(_cli_stop, is_pid=_is_azurite_pid, failure="could not stop Azurite pid {pid}"),
                  "status": partial(_cli_status, state_running=_state_running, describe=_describe),
                  # the one place the (public, well-known) dev key is printed: `env` output is meant for `eval`
                  "env": partial(_cli_env, running_cs=running_connection_string,
                                 variable="AZURE_STORAGE_CONNECTION_STRING", what="Azurite", command="azurite")})

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
