"""The Beam side of the reviews job: options, sources and sinks, the graph, and ``run(argv)``."""
from beam_pipeline import quiet

quiet.install()   # TensorFlow's start-up chatter (--sentiment_model), whoever imports it first


def hard_exit(rc):
    """Flush and leave with ``rc`` without interpreter teardown: native code (Parquet, protobuf, TensorFlow,
    delta-rs) can crash the interpreter at exit after all the work is done, turning a success into 134/139.
    The command-line entry points end with this."""
    import os
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
