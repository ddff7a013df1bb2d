"""Project-wide pytest configuration: hard exit after the run, local Azure stand-ins, shared data."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_AMAZON_DIR = REPO_ROOT.parent / "shared" / "data" / "amazon"
SHARED_AMAZON_2023_DIR = REPO_ROOT.parent / "shared" / "data" / "amazon2023"


# ------------------------------------------------------------------------------------------ hard exit
# Why: after a tf.Transform pipeline has run, CPython's interpreter teardown segfaults inside protobuf's
# upb extension (PyUpb_RepeatedContainer_Dealloc -> PyModule_GetState(NULL)), so pytest prints
# "N passed" and the process still exits 139. Separately, 20-40 % of processes that wrote Parquet
# through Beam abort at exit with "terminate called without an active exception" (rc 134). Both happen
# after all test work and reporting are done, so CI would fail green runs. We therefore remember the
# session, and once every other plugin has unconfigured (trylast), flush and os._exit() with pytest's
# own exit status, skipping the crashing finalization. Python atexit handlers are skipped too: if you
# run under `coverage run -m pytest` (which saves at atexit) or need a normal teardown to debug, set
# PYTEST_NO_HARD_EXIT=1. (pytest-cov saves in its own hooks and is unaffected.)
_hard_exit: dict = {"session": None, "status": None}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _hard_exit["session"] = session
    _hard_exit["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if os.environ.get("PYTEST_NO_HARD_EXIT") or _hard_exit["status"] is None:
        return  # opted out, or the session never ran (usage error, --help, ...): normal exit
    if hasattr(config, "workerinput"):
        return  # pytest-xdist worker: let execnet shut it down normally
    session = _hard_exit["session"]
    # sessionfinish hooks may still have changed it (pytest.exit(returncode=...)), so prefer the session's.
    status = int(getattr(session, "exitstatus", _hard_exit["status"]))
    capman = config.pluginmanager.get_plugin("capturemanager")
    if capman is not None:  # what pytest's own cleanup would do next: hand captured output back
        try:
            capman.stop_global_capturing()
        except Exception:  # noqa: BLE001 - never let the exit path fail
            pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(status)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end-to-end test that starts local services (Azurite via node_modules); "
                   "deselect with -m 'not e2e'")


# ------------------------------------------------------------------------------------------ Azurite
def start_azurite(location, port=None):
    """A started ``runners.local_stack.Azurite`` with its data under ``location`` (``port=None``: a free one;
    the same location and port: the same storage back after a stop). Skips when Azurite is not installed,
    unless E2E_REQUIRE_AZURITE=1 (CI), which makes that an error. The caller stops it."""
    from runners.local_stack import Azurite

    az = Azurite(location=location, port=port)
    try:
        az.start(timeout=60)
    except RuntimeError as exc:
        missing = "not installed" in str(exc) or "not on PATH" in str(exc)
        if missing and not os.environ.get("E2E_REQUIRE_AZURITE"):
            pytest.skip(str(exc))
        raise
    return az


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite blob service on a free loopback port, for the whole session.

    Yields ``runners.local_stack.Azurite`` (``.connection_string``, ``.blob_endpoint``, ``.port``).
    Changes no global state. Skips when Azurite is not installed (run ``npm install`` at the repo
    root), unless E2E_REQUIRE_AZURITE=1, which turns that into an error (for CI).
    """
    az = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield az
    finally:
        az.stop()


@pytest.fixture
def azurite_env(azurite, monkeypatch):
    """``azurite`` with AZURE_STORAGE_CONNECTION_STRING set for this test only (restored afterwards).

    Beam's azfs reads that variable whenever ``--azure_connection_string`` is not given.
    """
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    yield azurite


# ------------------------------------------------------------------------------------------ data
def _shared(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"needs {path.relative_to(REPO_ROOT.parent)} ({what}), absent on this machine (looked for {path})")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``<repo>/../shared/data/amazon`` (real Amazon reviews, not in the repository)."""
    return _shared(SHARED_AMAZON_DIR, "real reviews")


@pytest.fixture(scope="session")
def shared_data_2023_dir() -> Path:
    """``<repo>/../shared/data/amazon2023`` (real Amazon Reviews 2023 records, not in the repository)."""
    return _shared(SHARED_AMAZON_2023_DIR, "real Amazon Reviews 2023 records")
