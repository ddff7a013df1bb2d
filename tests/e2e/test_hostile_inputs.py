"""End to end, through the CLI (``python -m beam_pipeline``): user errors of issue 21 are one line on
stderr and exit code 2, before any work."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "beam_pipeline", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


@pytest.mark.parametrize("arg, hint", [("--windw_size=1h", "--window_size"), ("--outptu=x", "--output")])
def test_misspelt_option_exits_2_with_one_line(tmp_path, arg, hint):
    out = cli(f"--reviews={tmp_path}/*.json", f"--output={tmp_path}/out", arg)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: unknown option {arg} (did you mean {hint}?); python -m beam_pipeline --help "
                     f"lists them"]
    assert not os.path.exists(tmp_path / "out")


def test_hyphenated_option_is_accepted(tmp_path):
    # accepted, so the next problem reported is the real one: an invalid window size
    out = cli(f"--reviews={tmp_path}/*.json", f"--output={tmp_path}/out", "--window-size=oops")
    assert out.returncode == 2
    assert "not a duration: 'oops'" in out.stderr and "unknown option" not in out.stderr
