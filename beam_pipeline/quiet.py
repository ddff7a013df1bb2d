"""TensorFlow's start-up chatter, held back where it starts (issue 21), whoever imports TensorFlow first.

TensorFlow 2.21's C++ libraries log while they load, before absl's logging is initialised, and absl then
writes every message to stderr whatever ``TF_CPP_MIN_LOG_LEVEL`` says: "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom operations are on", "cudart_stub.cc
... Could not find cuda drivers", and at the first device lookup "failed call to cuInit" (an E line on any
machine without a GPU). So the variable, however early it is set, cannot silence them.

``install()`` (called when ``beam_pipeline`` or ``training`` is imported) adds an import hook: the first
``import tensorflow`` and the GPU lookup run with the process's stderr (file descriptor 2) passed through
a filter process (``forward``), which drops exactly those lines (``chatter``) and forwards every other one as it comes. After
that window TensorFlow's own logging applies ``TF_CPP_MIN_LOG_LEVEL`` (2 unless set: errors only). With the
variable set to 0 nothing is dropped but the two E lines that report no error, so a debugging run still sees
everything. Scoring loads a SavedModel and makes its first call in the same kind of window
(``beam_pipeline.scoring.load_model``): the trainer's model otherwise prints "oneDNN supports DT_INT64 only
on platforms with AVX-512. Falling back to ..." as an E line.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys

_PREAMBLE = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*")
_ABSL_LINE = re.compile(rb"([IWE])\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] (.*)", re.DOTALL)
# E lines that report no error: no GPU on this machine; a oneDNN kernel falling back to Eigen's
_NOT_ERRORS = re.compile(rb"failed call to cuInit|oneDNN supports \w+ only on platforms with")
_CPU_FEATURES = re.compile(rb"To enable the following instructions: .* rebuild TensorFlow with the appropriate "
                           rb"compiler flags\.\s*")


def chatter(line, level):
    """Is ``line`` (bytes) start-up chatter to drop at ``TF_CPP_MIN_LOG_LEVEL`` ``level``? INFO lines from
    level 1, WARNING lines and absl's preamble from 2, and the two E lines that are no error (``_NOT_ERRORS``)
    always; other errors never."""
    m = _ABSL_LINE.fullmatch(line)
    if m:
        severity = m.group(1)
        return (severity == b"I" and level >= 1) or (severity == b"W" and level >= 2) or \
            (severity == b"E" and bool(_NOT_ERRORS.match(m.group(2))))
    return (level >= 2 and bool(_PREAMBLE.fullmatch(line))) or (level >= 1 and bool(_CPU_FEATURES.fullmatch(line)))


def _level():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def forward(level, source=0, out=1):
    """The filter process's loop: lines of ``source`` -> ``out``, less ``chatter``, each as it comes."""
    with os.fdopen(source, "rb", closefd=False) as lines:
        for line in lines:
            if not chatter(line, level):
                os.write(out, line)


_FILTER = "import sys; sys.path.insert(0, sys.argv[1]); from beam_pipeline.quiet import forward; forward(int(sys.argv[2]))"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def stderr_filtered():
    """File descriptor 2 through ``chatter`` while the block runs; every other line is forwarded as it comes.
    The filter is a small process of its own, not a thread: should this process die in the block (an abort,
    a crash), the filter still reads to the end of the pipe, so the crash's last words are printed."""
    import subprocess
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    original = os.dup(2)
    try:
        child = subprocess.Popen([sys.executable, "-I", "-c", _FILTER, _ROOT, str(_level())], stdin=read_end,
                                 stdout=original, stderr=original, close_fds=True)
    finally:
        os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)     # the pipe's last write end closes: the filter forwards what is left and ends
        os.close(original)
        try:
            child.wait(timeout=10)   # its lines come before anything printed after the block
        except subprocess.TimeoutExpired:   # a process started in the block still holds the pipe
            pass


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):   # get_resource_reader, is_package, ...: the real loader's
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with stderr_filtered():
            self.loader.exec_module(module)
            module.config.list_physical_devices("GPU")   # the cuInit attempt, inside the window


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()   # once: the package's own imports, and any later one, go the usual way
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install():
    """Hold back TensorFlow's start-up chatter in this process (idempotent; nothing when it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


def uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Hook)]
