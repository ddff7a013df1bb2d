"""Benchmark of training.recommend on the real reviews: training time and per-reviewer lookup latency.

    .venv/bin/python bench/recommend_bench.py [--runs 3] [--out bench/results/recommend.json]

Measures (medians over --runs runs, each a fresh process-free repetition in this process):
  load_s     raw files -> interactions through the pipeline's parse/clean
  fit_s      fitting the shipped model on all interactions (kNN, ALS, content, trend)
  export_s   scoring top-10 for every reviewer + writing the Delta tables
  train_s    load + fit + export (what `python -m training.recommend train` does)
  lookup_ms  Recommender.recommend(reviewer) after Recommender.load: median and p99 over 2,000 reviewers
  history_ms Recommender.recommend_for_history(3 products): median over 500 calls
Writes the JSON and a short Markdown next to it. Not a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="repetitions (medians reported). Default 3")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "recommend.json"), help="JSON output path")
    p.add_argument("--workers", type=int, default=2, help="scoring processes for the export. Default 2")
    args = p.parse_args(argv)
    import numpy as np

    from training.recommend import data
    from training.recommend import evaluate as E
    from training.recommend import models as M
    from training.recommend.export import Recommender, export
    reviews = f"{SHARED}/amazon/reviews/*.jsonl.gz,{SHARED}/amazon2023/reviews/*.jsonl.gz"
    products = f"{SHARED}/amazon/metadata/*.jsonl.gz,{SHARED}/amazon2023/metadata/*.jsonl.gz"
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
              "per_run": runs}
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
        f"| lookup, unknown reviewer from 3 products | {result['history_ms_median']} ms |\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
