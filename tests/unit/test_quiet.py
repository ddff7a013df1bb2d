"""TensorFlow's start-up chatter (``beam_pipeline.quiet``, issue 21): the exact lines TensorFlow 2.21 prints
while it loads are dropped at the default level, every other line (a real error, Python's own output)
passes, in order."""
import os

import pytest

from beam_pipeline.quiet import chatter, stderr_filtered

# as TensorFlow 2.21 printed them on this machine (no GPU), with TF_CPP_MIN_LOG_LEVEL=2 already set
PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ONEDNN = (b"I0000 00:00:1796530887.173288    5770 port.cc:153] oneDNN custom operations are on. You may see slightly "
          b"different numerical results due to floating-point round-off errors from different computation orders. "
          b"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
CUDA = (b"I0000 00:00:1796530887.173633    5770 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
        b"will not be used.\n")
CUINIT = (b"E0000 00:00:1796530927.878867    6641 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          b"Failed call to cuInit: UNKNOWN ERROR (303)\n")
CPU = (b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
       b"appropriate compiler flags.\n")
ONEDNN_INT64 = (b"E0000 00:00:1796532248.241033   27676 util.cc:131] oneDNN supports DT_INT64 only on platforms "
                b"with AVX-512. Falling back to the default Eigen-based implementation if present.\n")
WARNING = b"W0000 00:00:1796530927.1    6641 some_kernel.cc:12] a warning\n"
REAL_ERROR = b"E0000 00:00:1796530927.1    6641 saved_model.cc:99] could not read the SavedModel\n"


@pytest.mark.parametrize("line, dropped_at", [
    (PREAMBLE, 2), (ONEDNN, 1), (CUDA, 1), (CPU, 1), (WARNING, 2), (CUINIT, 0), (ONEDNN_INT64, 0),
    (REAL_ERROR, None), (b"Traceback (most recent call last):\n", None), (b"error: --silver x: no such folder\n", None),
])
def test_chatter_by_level(line, dropped_at):
    for level in (0, 1, 2, 3):
        assert chatter(line, level) is (dropped_at is not None and level >= dropped_at), level


def test_the_filter_forwards_everything_else_in_order(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_filtered():
        for line in (PREAMBLE, ONEDNN, b"first\n", CUDA, CUINIT, REAL_ERROR):
            os.write(2, line)
        os.write(2, b"no newline at the end")
    assert capfd.readouterr().err == "first\n" + REAL_ERROR.decode() + "no newline at the end"
    os.write(2, ONEDNN)   # after the window nothing is filtered
    assert capfd.readouterr().err == ONEDNN.decode()


def test_a_crash_inside_the_filter_keeps_its_last_words():
    """The filter is a process of its own: when this one aborts mid-block, what it wrote is still printed."""
    import subprocess
    import sys
    code = ("import os\nfrom beam_pipeline.quiet import stderr_filtered\nwith stderr_filtered():\n"
            f"    os.write(2, {ONEDNN!r})\n"
            "    os.write(2, b'F0000 00:00:1.1   1 tensor.cc:7] Check failed: dims() == 2\\n')\n    os.abort()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == -6
    assert res.stderr == b"F0000 00:00:1.1   1 tensor.cc:7] Check failed: dims() == 2\n"
