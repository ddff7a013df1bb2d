#!/usr/bin/env python3
"""make bench: the batch job against the plain pyarrow reference job, on the same generated input.

    .venv/bin/python bench/run_bench.py [--sizes 200k 1m] [--runs 3] [--warmup 1] [--work bench/work]

For each size:
1. generate the input with ../shared/bench/make_data.py (seed 42; 200k = 4 files, 1m = 8 files), once;
2. run the project's job once and check its silver, dead-letter and duplicate counts against the
   generator's manifest: no time is reported for a job that gets the counts wrong;
3. time it with ../shared/bench/bench.py, paired run by run with ../shared/bench/pyarrow_limit.py (the
   reference: parse, validate, cast, strip HTML, dedupe, silver Parquet, three gold tables), so the
   machine's drift cancels out in the ratio.

Writes bench/results/batch-<size>.json (bench.py's full record plus the checks) and bench/results/README.md
(the table the project README links), and prints the table. The project's job does more than the
reference (product metadata join, ten gold families, dead-letter files, staged publish), so the ratio
is a conservative figure. Speed is measured here, never asserted in tests.
"""
import argparse
import re
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
RESULTS = ROOT / "bench" / "results"
SIZES = {"20k": (20_000, 2), "200k": (200_000, 4), "1m": (1_000_000, 8)}


def sh(cmd, **kw):
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def job_cmd(data, out):
    return [sys.executable, "-m", "beam_pipeline", "--source=files", f"--reviews={data}/reviews/*.jsonl",
            f"--products={data}/metadata/products.jsonl", f"--output={out}", "--full_refresh"]
    # --full_refresh: every timed run reads everything (an incremental rerun would read nothing new)


def reference_cmd(data, out):
    return [sys.executable, SHARED_BENCH / "pyarrow_limit.py", "--input", data, "--output", out]


def check_counts(data, out):
    expected = json.loads((Path(data) / "manifest.json").read_text())["expected"]
    from beam_pipeline import tables
    loc = tables.Location(str(out))
    full = tables.last_summary(loc)
    summary = full["reviews"]
    got = {"records_in": summary["records_read"], "silver_rows": summary["silver_rows"],
           "dead": summary["dead_letters"], "duplicates_dropped": summary["duplicates_dropped"]}
    layout = {}
    for rel in (tables.SILVER_REVIEWS, tables.SILVER_PRODUCTS, tables.DEAD_LETTERS, "gold/reviews"):
        files, rows, median = tables.file_stats_of(loc, rel, tables.snapshot_versions(loc).get(rel))
        layout[rel] = {"files": files, "rows": rows, "median_rows_per_file": median}
    return {"expected": expected, "got": got, "equal": got == expected, "tables": layout,
            "commit_seconds": full.get("commit_seconds"), "shuffle_buckets": full.get("shuffle_buckets")}


def _files(check):
    t = (check.get("tables") or {}).get("silver/reviews")
    return f"{t['files']} ({t['median_rows_per_file']:,})" if t else "-"


def _secs(v):
    return f"{v:.2f} s" if v is not None else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="input sizes (default: all)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs (default 1)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"), help="inputs and outputs (default bench/work)")
    a = ap.parse_args(argv)
    if not SHARED_BENCH.is_dir():
        sys.exit(f"the reference harness is missing: {SHARED_BENCH} (../shared beside the checkout)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for size in a.sizes:
        n, files = SIZES[size]
        data, out = Path(a.work) / "data" / size, Path(a.work) / "out" / size
        if not (data / "manifest.json").exists():
            sh([sys.executable, SHARED_BENCH / "make_data.py", "--out", data, "--reviews", n, "--files", files,
                "--seed", 42])
        printed = sh(job_cmd(data, out / "job"), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True).stdout
        check = check_counts(data, out / "job")
        m = re.search(r"commit (\d+\.\d+) s", printed)
        check["commit_seconds"] = float(m.group(1)) if m else None   # gold merge + files + every table's commit
        print(f"{size}: counts {'match' if check['equal'] else 'DO NOT MATCH'} the manifest: {check['got']}; "
              f"tables {check['tables']}", flush=True)
        if not check["equal"]:
            sys.exit(f"{size}: the job's counts differ from the manifest; no time is reported")
        record_file = out / "bench.jsonl"
        record_file.unlink(missing_ok=True)
        sh([sys.executable, SHARED_BENCH / "bench.py", "-n", a.runs, "--warmup", a.warmup, "--json", record_file,
            "--label", f"beam job {size}", "--vs", " ".join(map(str, reference_cmd(data, out / "pyarrow"))),
            "--", *job_cmd(data, out / "job")], env=env)
        record = json.loads(record_file.read_text().splitlines()[-1])
        record["counts_check"] = check
        (RESULTS / f"batch-{size}.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = []
    for size in SIZES:  # every size measured so far, this run or an earlier one
        path = RESULTS / f"batch-{size}.json"
        if not path.exists():
            continue
        record, n = json.loads(path.read_text()), SIZES[size][0]
        ratio = record["ratio_a_over_b_wall"]["median"]
        rows.append({"size": size, "reviews": n, "job_wall": record["a"]["wall_s"]["median"],
                     "ref_wall": record["b"]["wall_s"]["median"], "ratio": ratio, "speed": 1 / ratio,
                     "job_rps": n / record["a"]["wall_s"]["median"], "job_peak": record["a"]["peak_mb"]["median"],
                     "ref_peak": record["b"]["peak_mb"]["median"], "job_cpu": record["a"]["cpu_s"]["median"],
                     "date": record["date_utc"], "check": record.get("counts_check", {})})
    lines = ["# Batch benchmark: the Beam job vs the plain pyarrow reference (same input, paired runs)", "",
             f"Machine: {os.cpu_count()} cores. Command: `make bench` (bench/run_bench.py). Input: "
             "../shared/bench/make_data.py --seed 42. Counts checked against the manifest before timing.", "",
             "| size | job wall (median) | pyarrow wall | job/pyarrow wall | speed vs pyarrow | reviews/s | "
             "job peak RSS | pyarrow peak RSS | job CPU s | silver files (median rows/file) | commit step | "
             "measured (UTC) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['job_wall']:.2f} s | {r['ref_wall']:.2f} s | {r['ratio']:.2f}x | "
                     f"{r['speed']:.2f}x | {r['job_rps']:,.0f} | {r['job_peak']:,.0f} MB | {r['ref_peak']:,.0f} MB | "
                     f"{r['job_cpu']:.1f} | {_files(r['check'])} | {_secs(r['check'].get('commit_seconds'))} | "
                     f"{r['date']} |")
    lines += ["", "Target at 1M: speed >= 0.5x the pyarrow reference (job/pyarrow wall <= 2.0), peak RSS < 2 GB.", ""]
    table = "\n".join(lines)
    readme = RESULTS / "README.md"
    old = readme.read_text() if readme.exists() else ""
    begin = old.find("<!-- stream-bench:begin -->")  # the streaming leg's section (bench/stream_bench.py) stays
    readme.write_text(table + ("\n" + old[begin:] if begin >= 0 else ""))
    print(table)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"bench finished in {time.time() - t0:.0f} s")
