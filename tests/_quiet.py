"""What a quiet run must not print (issue 21): TensorFlow's start-up chatter and the Beam warnings the
project fixes at their source."""
import re

TENSORFLOW_CHATTER = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "Could not find cuda drivers",
                      "cuInit", "cpu_feature_guard", "To enable the following instructions", "oneDNN supports")
BEAM_WARNINGS = ("may not be deterministic", "must have the same window")
_NATIVE_LOG_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ")   # absl's format, TensorFlow's C++ logs


def noise(stderr):
    """The lines of ``stderr`` that hold any of those strings, or are TensorFlow C++ log lines."""
    return [line for line in stderr.splitlines()
            if any(s in line for s in TENSORFLOW_CHATTER + BEAM_WARNINGS) or _NATIVE_LOG_LINE.match(line)]
