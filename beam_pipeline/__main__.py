"""python -m beam_pipeline --source={adls,files,eventhub} --reviews=... --output=... [options]

Run with --help for every option (the job's own, then Beam's runner options).
"""
import logging
import os
import sys

from beam_pipeline.options import OptionsError, help_text


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(help_text())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # with --sentiment_model: TensorFlow's start-up chatter
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from beam_pipeline.pipeline import run
    try:
        summary = run(args)
    except OptionsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = all(summary[k]["reconciled"] for k in ("reviews", "products"))
    if not ok:
        print("error: the counts do not reconcile (see the run summary)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # Parquet/protobuf native code can crash at interpreter exit after the work is done
