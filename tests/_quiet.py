"""What a quiet run must not print (issue 21): TensorFlow's start-up chatter and the Beam warnings the
project fixes at their source."""
TENSORFLOW_CHATTER = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "Could not find cuda drivers",
                      "cuInit", "cpu_feature_guard", "To enable the following instructions")
BEAM_WARNINGS = ("may not be deterministic", "must have the same window")


def noise(stderr):
    """The lines of ``stderr`` that hold any of those strings."""
    return [line for line in stderr.splitlines() if any(s in line for s in TENSORFLOW_CHATTER + BEAM_WARNINGS)]
