"""Benchmark of training.recommend on the real reviews: training time and per-reviewer lookup latency.

    .venv/bin/python bench/recommend_bench.py [--runs 3] [--out bench/results/recommend.json]

Measures (medians over --runs runs, each a fresh process-free repetition in this process):
  load_s     raw files -> interactions through the pipeline's parse/clean
  fit_s      fitting the shipped model on all interactions (kNN, ALS, content, trend)
  export_s   scoring top-10 for every reviewer + writing the Delta tables
  train_s    load + fit + export (what `python -m training.recommend train` does)
  lookup_ms  Recommender.recommend(reviewer) after Recommender.load: median and p99 over 2,000 reviewers
  history_ms Recommender.recommend_for_history(3 products): median over 500 calls
With ``--baseline REV`` (default: the last commit before the scoring speed-ups) it also times the CLI
``python -m training.recommend train`` of that revision against the working tree's, in subprocesses,
alternating (baseline, current) ``--runs`` times, so both see the same machine load: wall seconds, CPU
seconds (the process and its scoring workers) and the per-pair ratio, and checks that both exported the
same tables. ``--baseline none`` skips it.
Writes the JSON and a short Markdown next to it. Not a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


BASELINE = "2ead38f"   # training.recommend before the export-scoring speed-ups (issue 18, training time)


def _cli_train(code_dir: Path, reviews: str, products: str, out: str) -> dict:
    """One ``python -m training.recommend train`` run with ``training`` imported from ``code_dir``
    (transforms from this checkout): wall and CPU seconds (the process and its forked workers)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training.recommend", "train", f"--reviews={reviews}",
                    f"--products={products}", f"--output={out}"], cwd=code_dir, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def _same_tables(a: str, b: str) -> bool:
    import deltalake
    from beam_pipeline.tables import arrow_of
    for name in ("recommendations", "item_neighbours", "item_factors", "items"):
        ta, tb = (arrow_of(deltalake.DeltaTable(os.path.join(x, name))) for x in (a, b))
        keys = [(c, "ascending") for c in ("reviewer_id", "asin", "rank") if c in ta.column_names]
        if not ta.sort_by(keys).equals(tb.sort_by(keys)):
            return False
    return True


def compare_with_baseline(rev: str, runs: int, reviews: str, products: str) -> dict:
    """Alternate baseline / current CLI training runs; medians, per-pair ratios, output equality."""
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "baseline"
        base_dir.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "training/__init__.py", "training/recommend"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_dir)], input=archive, check=True)
        for r in range(runs):
            outs = {k: str(Path(tmp) / f"{k}-{r}") for k in ("baseline", "current")}
            b = _cli_train(base_dir, reviews, products, outs["baseline"])
            c = _cli_train(REPO, reviews, products, outs["current"])
            same = _same_tables(outs["baseline"], outs["current"])
            pairs.append({"baseline": b, "current": c, "wall_ratio": round(b["wall_s"] / c["wall_s"], 2),
                          "cpu_ratio": round(b["cpu_s"] / c["cpu_s"], 2), "same_tables": same,
                          "load_average": round(os.getloadavg()[0], 2)})
            print(f"pair {r + 1}: {pairs[-1]}", file=sys.stderr, flush=True)
    med = lambda side, k: round(statistics.median(p[side][k] for p in pairs), 2)
    return {"baseline_rev": rev, "runs": runs,
            "baseline_wall_s": med("baseline", "wall_s"), "current_wall_s": med("current", "wall_s"),
            "baseline_cpu_s": med("baseline", "cpu_s"), "current_cpu_s": med("current", "cpu_s"),
            "wall_ratio_median": round(statistics.median(p["wall_ratio"] for p in pairs), 2),
            "cpu_ratio_median": round(statistics.median(p["cpu_ratio"] for p in pairs), 2),
            "same_tables_every_run": all(p["same_tables"] for p in pairs), "pairs": pairs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="repetitions (medians reported). Default 3")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "recommend.json"), help="JSON output path")
    p.add_argument("--workers", type=int, default=2, help="scoring processes for the export. Default 2")
    p.add_argument("--baseline", default=BASELINE,
                   help=f"git revision whose `train` CLI is timed against this checkout's ('none': skip). "
                        f"Default {BASELINE}")
    args = p.parse_args(argv)
    import numpy as np

    from training.recommend import data
    from training.recommend import evaluate as E
    from training.recommend import models as M
    from training.recommend.export import Recommender, export
    reviews = f"{SHARED}/amazon/reviews/*.jsonl.gz,{SHARED}/amazon2023/reviews/*.jsonl.gz"
    products = f"{SHARED}/amazon/metadata/*.jsonl.gz,{SHARED}/amazon2023/metadata/*.jsonl.gz"
    comparison = None
    if args.baseline != "none":
        comparison = compare_with_baseline(args.baseline, args.runs, reviews, products)
    runs = []
    lookup, lookup_p99, history = [], [], []
    for r in range(args.runs):
        t0 = time.perf_counter()
        inter, prods = data.load(reviews, products)
        enc = E.encode(inter)
        features, _ = M.item_features(enc.n_items, E.item_tokens(enc, prods))
        load_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as out:
            timings = export(enc, features, E.SHIPPED, dict(E.DEFAULTS), out, 10, args.workers)
            train_s = time.perf_counter() - t0
            rec = Recommender.load(out)
            rng = np.random.default_rng(r)
            ids = enc.users[rng.choice(enc.n_users, 2000, replace=False)].tolist()
            lat = []
            for rid in ids:
                a = time.perf_counter()
                rec.recommend(rid, 10)
                lat.append((time.perf_counter() - a) * 1000)
            hist = []
            for _ in range(500):
                h = enc.items[rng.choice(enc.n_items, 3, replace=False)].tolist()
                a = time.perf_counter()
                rec.recommend_for_history(h, 10)
                hist.append((time.perf_counter() - a) * 1000)
        runs.append({"load_s": load_s, "fit_s": timings["fit_s"],
                     "export_s": timings["score_s"] + timings["write_s"], "train_s": train_s})
        lookup.append(statistics.median(lat))
        lookup_p99.append(float(np.quantile(lat, 0.99)))
        history.append(statistics.median(hist))
        print(f"run {r + 1}: {runs[-1]} lookup median {lookup[-1]:.4f} ms", file=sys.stderr)
    med = {k: round(statistics.median(x[k] for x in runs), 2) for k in runs[0]}
    result = {"machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
              "runs": args.runs, "workers": args.workers, "reviewers": int(enc.n_users), "products": int(enc.n_items),
              "interactions": len(enc.user), **med,
              "lookup_ms_median": round(statistics.median(lookup), 4),
              "lookup_ms_p99": round(statistics.median(lookup_p99), 4),
              "history_ms_median": round(statistics.median(history), 4),
              "targets": {"train_s": 120, "lookup_ms": 10},
              "per_run": runs, "cli_vs_baseline": comparison}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    md = Path(args.out).with_suffix(".md")
    md.write_text(
        "# training.recommend benchmark\n\n"
        f"Real reviews ({result['interactions']:,} interactions, {result['reviewers']:,} reviewers, "
        f"{result['products']:,} products), medians of {args.runs} runs, {os.cpu_count()} CPUs, "
        f"{args.workers} scoring workers; load average at the end {result['machine']['load_average_at_end'][0]:.1f}.\n\n"
        "| step | median |\n|---|---:|\n"
        f"| load (parse + clean + interactions) | {med['load_s']} s |\n| fit | {med['fit_s']} s |\n"
        f"| export (top-10 for every reviewer + Delta tables) | {med['export_s']} s |\n"
        f"| **train total** (target < 120 s) | **{med['train_s']} s** |\n"
        f"| lookup, known reviewer (target < 10 ms) | {result['lookup_ms_median']} ms (p99 {result['lookup_ms_p99']} ms) |\n"
        f"| lookup, unknown reviewer from 3 products | {result['history_ms_median']} ms |\n"
        + ("" if comparison is None else (
            f"\n`python -m training.recommend train` (CLI, subprocesses), baseline `{comparison['baseline_rev']}` "
            f"and this checkout alternated, {comparison['runs']} pairs, medians:\n\n"
            "| | baseline | current | ratio (per pair, median) |\n|---|---:|---:|---:|\n"
            f"| wall | {comparison['baseline_wall_s']} s | {comparison['current_wall_s']} s | "
            f"{comparison['wall_ratio_median']}x |\n"
            f"| CPU (process + workers) | {comparison['baseline_cpu_s']} s | {comparison['current_cpu_s']} s | "
            f"{comparison['cpu_ratio_median']}x |\n\n"
            f"Exported tables identical in every pair: {comparison['same_tables_every_run']}. Load average "
            f"after each pair: {[p['load_average'] for p in comparison['pairs']]}.\n")))
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
