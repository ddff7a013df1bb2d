"""`make run`: the whole batch job end to end on the local stack, with embedded defaults.

    python -m runners.demo [--reviews 20000] [--seed 7] [--output out/batch] [--keep-azurite]

1. starts Azurite (the local Azure Blob / ADLS stand-in) on 127.0.0.1:10000, or reuses the running one;
2. generates synthetic reviews and product metadata with ~1 % dirty rows and ~1 % duplicates
   (runners.generate; no real data is shipped);
3. uploads them to the container ``amazon`` (blobs raw/reviews/..., raw/metadata/...);
4. runs the batch job from ``azfs://devstoreaccount1/amazon/raw/...`` on the DirectRunner's in-process
   FnApiRunner, writing silver, gold and dead letters to a local folder;
5. prints the run summary, checks it against the generator's manifest, and says where everything is.

Azurite keeps running afterwards (so the data can be inspected); `make stop` stops it.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

from runners import generate as gen
from runners import local_stack as stack

CONTAINER = "amazon"


def _azurite():
    """The connection string of the running Azurite; starts it (detached, idempotent) if needed."""
    if not stack.running_connection_string():
        rc = stack.main(["azurite", "start"])
        if rc:
            raise SystemExit(f"could not start Azurite (rc {rc}); see {stack.DEFAULT_LOCATION}")
    print(f"[1/5] Azurite running ({stack.redact(stack.running_connection_string())})")
    return stack.running_connection_string()


def _check(summary, manifest):
    """Compare the job's counts with what the generator injected."""
    problems = []
    for kind in ("reviews", "products"):
        got, want = summary[kind], manifest[kind]
        for key, wkey in (("records_read", "records_in"), ("silver_rows", "silver_rows"),
                          ("dead_letters", "dead"), ("duplicates_dropped", "duplicates")):
            if got[key] != want[wkey]:
                problems.append(f"{kind}.{key}: job {got[key]} != generator {want[wkey]}")
        got_reasons = {}
        for name, n in got["dead_letters_by_reason"].items():
            reason = name.split(".", 1)[1]
            got_reasons[reason] = got_reasons.get(reason, 0) + n
        if got_reasons != want["dead_by_reason"]:
            problems.append(f"{kind} dead letters by reason: job {got_reasons} != generator {want['dead_by_reason']}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--reviews", type=int, default=20000, help="number of review lines to generate (default 20000)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    ap.add_argument("--data", default=".local/demo/data", help="where the generated files go (default .local/demo/data)")
    ap.add_argument("--output", default="out/batch", help="job output root (default out/batch)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    cs = _azurite()
    manifest = gen.generate(a.data, a.reviews, files=4, seed=a.seed, gzip=True)
    print(f"[2/5] generated {a.reviews:,} reviews and {manifest['products']['records_in']:,} product lines "
          f"in {a.data} (manifest.json lists every injected defect)")
    stack.ensure_container(cs, CONTAINER)
    blobs = stack.upload_tree(cs, CONTAINER, a.data, prefix="raw")
    print(f"[3/5] uploaded {len(blobs)} blobs to {stack.azfs_url(CONTAINER, 'raw')}")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = cs  # the job reads credentials from the environment only
    from beam_pipeline.pipeline import run
    print("[4/5] running the batch job (DirectRunner / FnApiRunner) ...", flush=True)
    summary = run(["--source=adls",
                   f"--reviews={stack.azfs_url(CONTAINER, 'raw/reviews/*.jsonl.gz')}",
                   f"--products={stack.azfs_url(CONTAINER, 'raw/metadata/*.jsonl.gz')}",
                   f"--output={os.path.abspath(a.output)}"])
    problems = _check(summary, manifest)
    if problems:
        print("[5/5] MISMATCH against the generator's manifest:\n  " + "\n  ".join(problems))
        return 1
    print(f"[5/5] every count matches the generator's manifest ({Path(a.data) / 'manifest.json'}).")
    print(f"Open the outputs, e.g.:\n  .venv/bin/python -c \"import pyarrow.dataset as ds; "
          f"print(ds.dataset('{a.output}/silver/reviews', partitioning='hive').to_table().num_rows)\"\n"
          f"  .venv/bin/python -c \"import duckdb; print(duckdb.sql(\\\"select * from read_parquet("
          f"'{a.output}/gold/reviews_by_rating/*.parquet') where window_start is null\\\"))\"\nAzurite keeps running for inspection; `make stop` stops it.")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
