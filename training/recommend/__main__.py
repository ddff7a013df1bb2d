"""python -m training.recommend: train, evaluate and serve product recommendations from the reviews.

Subcommands:
  train      fit the shipped recommender on every interaction and export Delta tables under --output
  evaluate   the offline protocol (leave-last-out, full catalogue, bootstrap intervals) -> report.json/.md
  recommend  top-N for one reviewer (or a list of products) from the exported tables
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # implicit's advice: one BLAS thread, its own threads

EXAMPLES = """\
examples
  python -m training.recommend train --reviews='../shared/data/amazon/reviews/*.jsonl.gz,../shared/data/amazon2023/reviews/*.jsonl.gz' \\
      --products='../shared/data/amazon/metadata/*.jsonl.gz,../shared/data/amazon2023/metadata/*.jsonl.gz'
  python -m training.recommend evaluate --silver=out/batch/silver/reviews --report=out/recommendations/evaluation
  python -m training.recommend recommend --model=output/recommendations --reviewer=A2SUAM1J3GNN3B -n 10

exit status: 0 done, 2 invalid options, paths or data."""


def _sources(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input (exactly one of --reviews / --silver)")
    g.add_argument("--reviews", help="raw review JSON lines (2014/2018/2023 schemas): comma-separated paths or "
                                     "globs, .gz allowed; parsed and cleaned by the pipeline's own "
                                     "transforms.parse/transforms.clean; a file's stem is its category")
    g.add_argument("--silver", help="a silver review Delta table (a batch run's OUTPUT/silver/reviews); a sibling "
                                    "silver/products table, when present, adds product categories")
    g.add_argument("--products", help="product metadata JSON lines (comma-separated paths or globs), for the "
                                      "content model's brand and categories; optional")


def _model_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--knn-k", "--knn_k", dest="knn_k", type=int, default=100,
                   help="item-kNN: neighbours kept per product (cosine). Default 100")
    p.add_argument("--als-factors", "--als_factors", dest="als_factors", type=int, default=64,
                   help="ALS: latent factors. Default 64")
    p.add_argument("--als-iterations", "--als_iterations", dest="als_iterations", type=int, default=15,
                   help="ALS: alternating sweeps. Default 15")
    p.add_argument("--seed", type=int, default=0, help="seed for ALS, the random baseline and the bootstrap. Default 0")


def build_parser() -> argparse.ArgumentParser:
    from beam_pipeline.cli import ArgumentParser
    p = ArgumentParser(prog="python -m training.recommend", description=__doc__.split("\n\n")[0],
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,evaluate,recommend}")
    t = sub.add_parser("train", help="fit on all interactions and export the tables",
                       description="Fit the shipped hybrid (item-kNN on recency-weighted histories + ALS + content + "
                                   "recent popularity in the reviewer's categories) on EVERY interaction and write "
                                   "the Delta tables recommendations, item_neighbours, item_factors, items and "
                                   "model.json under --output.")
    _sources(t)
    t.add_argument("--output", default="output/recommendations",
                   help="folder of the exported tables (overwritten). Default output/recommendations")
    t.add_argument("--top", type=int, default=10, help="recommendations exported per reviewer. Default 10")
    t.add_argument("--tune", action="store_true",
                   help="re-choose the ALS alpha and hybrid weights on a validation split carved from the data "
                        "(each reviewer's strictly-latest interaction; ~2 minutes) instead of the shipped ones")
    t.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes that score the top-N lists (forked; 1 = in-process). Default: min(2, CPUs)")
    _model_opts(t)
    e = sub.add_parser("evaluate", help="offline evaluation with bootstrap intervals",
                       description="Leave-last-out evaluation: each reviewer's strictly-latest interaction is "
                                   "held out, models rank the full catalogue without the reviewer's training "
                                   "products, weights are tuned on a validation split of the training rows only. "
                                   "Reports Recall@10 / NDCG@10 with 95%% bootstrap intervals, overall and per "
                                   "category, for random, popularity, item-kNN, ALS, content and the shipped "
                                   "hybrid, and a paired bootstrap of shipped minus item-kNN.")
    _sources(e)
    e.add_argument("--report", default="output/recommendations/evaluation",
                   help="folder for report.json and report.md. Default output/recommendations/evaluation")
    e.add_argument("--n-boot", "--n_boot", dest="n_boot", type=int, default=1000,
                   help="bootstrap resamples. Default 1000")
    e.add_argument("--no-tune", "--no_tune", dest="no_tune", action="store_true",
                   help="skip validation tuning and evaluate the shipped configuration as is")
    _model_opts(e)
    r = sub.add_parser("recommend", help="top-N for a reviewer from the exported tables",
                       description="Load the exported tables once and print the top-N as JSON lines.")
    r.add_argument("--model", default="output/recommendations",
                   help="the folder `train` wrote. Default output/recommendations")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--reviewer", help="a reviewer_id: their exported list")
    who.add_argument("--history", help="comma-separated asins of an unknown reviewer: neighbours of those products")
    r.add_argument("-n", type=int, default=10, help="how many. Default 10")
    return p


def _check_positive(p, args, names):
    for n in names:
        v = getattr(args, n, None)
        if v is not None and v <= 0:
            p.error(f"--{n.replace('_', '-')} must be positive, got {v}")


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check_positive(p, args, ["knn_k", "als_factors", "als_iterations", "top", "n_boot", "n", "workers"])
    from training.recommend import data
    try:
        if args.command == "recommend":
            from training.recommend.export import Recommender
            t0 = time.perf_counter()
            rec = Recommender.load(args.model)
            t1 = time.perf_counter()
            rows = rec.recommend(args.reviewer, args.n) if args.reviewer else \
                rec.recommend_for_history([a for a in args.history.split(",") if a], args.n)
            t2 = time.perf_counter()
            if args.reviewer and not rows:
                data.log(f"reviewer {args.reviewer!r} is not in the exported tables; use --history for a new one")
            for row in rows:
                print(json.dumps(row))
            data.log(f"loaded in {t1 - t0:.2f}s, answered in {(t2 - t1) * 1000:.2f} ms")
            return 0
        from training.recommend import evaluate as E
        from training.recommend import models as M
        cfg = {**E.DEFAULTS, "knn_k": args.knn_k, "als_factors": args.als_factors,
               "als_iterations": args.als_iterations, "seed": args.seed}
        t0 = time.perf_counter()
        inter, products = data.load(args.reviews, args.products, args.silver)
        if inter.num_rows == 0:
            raise data.DataError("no interactions in the input")
        enc = E.encode(inter)
        features, vocab = M.item_features(enc.n_items, E.item_tokens(enc, products))
        data.log(f"content features: {len(vocab):,}")
        if args.command == "train":
            import numpy as np
            tuned = E.tune(enc, np.ones(len(enc.user), dtype=bool), features, cfg) if args.tune else E.SHIPPED
            from training.recommend.export import export
            timings = export(enc, features, tuned, cfg, args.output, args.top, args.workers)
            data.log(f"train done in {time.perf_counter() - t0:.1f}s (fit {timings['fit_s']:.1f}s, "
                     f"scoring {timings['score_s']:.1f}s, writing {timings['write_s']:.1f}s)")
            return 0
        cfg["n_boot"] = args.n_boot
        report = E.run(enc, features, cfg, tuned={**E.SHIPPED, "validation": {"reviewers": 0}} if args.no_tune else None)
        os.makedirs(args.report, exist_ok=True)
        with open(os.path.join(args.report, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(args.report, "report.md"), "w") as f:
            f.write(E.markdown(report))
        data.log(f"evaluation written to {args.report} in {time.perf_counter() - t0:.1f}s")
        return 0
    except data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
