"""python -m training: train, evaluate and export the sentiment model from the pipeline's silver reviews.

Either point it at silver review Parquet a batch run wrote (``--silver OUT/silver/reviews``), or give it
raw review files (``--reviews``): the batch job runs first (the same cleaning path as every other run, no
second one for training) and training reads the silver it wrote.
"""
import argparse
import logging
import os
import sys
import time

EXAMPLES = """\
examples
  # the real reviews in ../shared/data/amazon: batch job, then training, unseen-category evaluation
  python -m training --reviews='../shared/data/amazon/reviews/*.jsonl.gz' \\
      --products='../shared/data/amazon/metadata/*.jsonl.gz' --output=out/model
  # from an existing batch run's silver, categories from product main_cat, split by review-key hash
  python -m training --silver=out/batch/silver/reviews --category=main_cat --split=hash --output=out/model

features (training/features.py, chosen by cross-validation on non-test categories; bench/model_selection.py):
per review, sublinear tf-idf of words + bigrams + negation-scope terms (length 1), character 3-5-grams (0.5)
and the summary's own words + bigrams (0.3), each group with its own training-split vocabulary.

outputs (under --output): saved_model/ (serving_default: summary, review_text -> probability, label),
report.json, report.md, model_card.md; _work/ holds the TFRecords and the tf.Transform output.
exit status: 0 done, 2 invalid options or data."""


def build_parser():
    from beam_pipeline.cli import ArgumentParser
    from training.data import CATEGORY_SOURCES, SPLITS
    p = ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0],
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--silver", help="silver review Parquet root of a batch run (OUT/silver/reviews)")
    src.add_argument("--reviews", help="raw review JSON lines (path or glob, local or azfs://): the batch job "
                                       "runs first, into OUTPUT/pipeline, and training reads its silver")
    p.add_argument("--products", help="product metadata for that batch run (optional)")
    p.add_argument("--output", required=True, help="where the model, the report and the work files go")
    p.add_argument("--split", choices=SPLITS, default="category",
                   help="test split: 'category' (categories never seen in training; default), 'all' (no test split: the "
                        "final refit on every labelled review, judged by python -m training.loco), 'hash' (by a "
                        "hash of the review key), 'time' (the latest reviews). Never random per run")
    p.add_argument("--holdout_categories", default=None,
                   help="comma-separated test categories for --split=category. Default: the quarter of "
                        "categories with the smallest stable hash of their name")
    p.add_argument("--category", choices=CATEGORY_SOURCES, default="source",
                   help="a review's category: the stem of its source file ('source', the real data has one "
                        "file per category; default) or its product's main_cat")
    p.add_argument("--epochs", type=int, default=30, help="adam/sgd: most epochs; early stopping on validation AUC. Default 30")
    p.add_argument("--patience", type=int, default=3, help="early stopping: epochs (adam/sgd) or checks every 10 iterations "
                                                                "(lbfgs with --early_stopping=on) without a better "
                                                                "validation score. Default 3")
    p.add_argument("--batch_size", type=int, default=256, help="Default 256")
    p.add_argument("--optimizer", choices=("auto", "lbfgs", "adam", "sgd"), default="auto",
                   help="lbfgs: the whole training split as one batch, L-BFGS towards the minimum of the convex loss "
                        "(binary linear model only), validation AUC checked every 10 iterations; "
                        "adam or sgd: mini-batches of --batch_size for --epochs. auto (default): lbfgs for the "
                        "binary linear model, adam otherwise")
    p.add_argument("--early_stopping", choices=("auto", "on", "off"), default="auto",
                   help="keep the weights with the best validation score and stop after --patience checks without "
                        "a better one. auto (default): on for adam/sgd, off for lbfgs, which then fits to the "
                        "minimum of the L2-penalised loss and only reports the validation AUC every 10 "
                        "iterations: cross-validation over the non-test categories found early stopping on the "
                        "small validation categories cost 0.005 ROC AUC (bench/model_selection.py --study "
                        "procedure)")
    p.add_argument("--learning_rate", type=float, default=None, help="adam: default 0.003; sgd: default 8.0")
    p.add_argument("--max_iterations", type=int, default=500, help="lbfgs: most iterations. Default 500")
    p.add_argument("--l2", type=float, default=3e-6,
                   help="L2 penalty: the loss is the class-weighted mean log loss + l2/2 * |w|^2 over the term "
                        "weights. Default 3e-6 (chosen by leave-one-category-out cross-validation on the non-test "
                        "categories of the real data, bench/model_selection.py)")
    p.add_argument("--dim", type=int, default=1, help="1: logistic regression on tf-idf (default); >1: an "
                                                      "embedding bag of that size, then a logistic layer")
    p.add_argument("--validation", choices=("categories", "hash"), default="categories",
                   help="with --split=category: validation = other categories unseen in training (default; early "
                        "stopping and the threshold are judged on unseen categories, never on the test ones), or "
                        "a hash of the review key within the training categories")
    p.add_argument("--tfidf_norm", choices=("l2", "none"), default="l2",
                   help="scale each review's tf-idf weights to unit length (default l2)")
    p.add_argument("--classes", type=int, choices=(2, 3), default=2,
                   help="2: positive vs negative, 3-star reviews left out (default); 3: negative / neutral / "
                        "positive (softmax, early stopping on validation loss, no baselines; the graph's "
                        "--sentiment_model scoring takes binary models)")
    p.add_argument("--threshold_rule", choices=("cv-categories", "cv-pooled", "0.5"), default="cv-categories",
                   help="--split all: the threshold rule (training.loco): cv-categories (default) maximises the mean "
                        "per-category macro-F1 of out-of-category scores from --inner_folds groups of categories, "
                        "cv-pooled the pooled macro-F1 of the same scores, 0.5 fixed")
    p.add_argument("--inner_folds", type=int, default=2,
                   help="--split all: groups of categories for the threshold's out-of-category scores (default 2)")
    p.add_argument("--ensemble", choices=("nb", "none"), default=None,
                   help="--split all only: nb (default) exports the linear model plus a naive-Bayes-scaled twin on the same "
                        "terms, logits added (better on leave-one-category-out: docs/model.md); none: the linear "
                        "model alone")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--seed", type=int, default=0, help="random seed (shuffling, initialisation, bootstrap)")
    p.add_argument("--no_baselines", action="store_true", help="skip the two baselines (faster)")
    return p


def _run_batch_job(args):
    from beam_pipeline.pipeline import run
    out = os.path.join(args.output, "pipeline")
    source = "adls" if args.reviews.startswith("azfs://") else "files"
    argv = ["--runner=FnApiRunner", f"--source={source}", f"--reviews={args.reviews}", f"--output={out}"]
    if args.products:
        argv.append(f"--products={args.products}")
    summary = run(argv)
    if not summary["reviews"]["reconciled"]:
        raise SystemExit("the batch run's counts do not reconcile; not training on it")
    return os.path.join(out, "silver", "reviews")


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "absl", "tensorflow", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        # tf.Transform's own words: "safe to ignore if ... the order in which they are invoked is
        # deterministic", which it is here (preprocessing_fn calls its analyzers in a fixed order); the
        # analyzers tft.experimental.idf adds inside itself cannot be named from outside
        handler.addFilter(lambda record: "cache key varies on repeated tracing" not in record.getMessage())
    from beam_pipeline import quiet
    from beam_pipeline.cli import fail, folder_problem
    problem = folder_problem(args.output, "--output")
    if problem:
        return fail(problem)
    if args.ensemble and args.split != "all":
        return fail(f"--ensemble applies to --split all only (the all-data refit), not to --split {args.split}")
    started = time.monotonic()

    def progress(message):
        print(f"[training {time.monotonic() - started:6.1f} s] {message}", flush=True)

    try:   # ValueError: the batch job's OptionsError and InputError too
        # TensorFlow prints notices while tf.Transform runs (an E line 'oneDNN supports DT_INT64 only on
        # platforms with AVX-512'): the same filter as at its import (beam_pipeline.quiet)
        with quiet.stderr_filtered():
            silver = args.silver or _run_batch_job(args)
            from training.train import train
            report = train(silver, args.output, split=args.split, category_source=args.category,
                           holdout=args.holdout_categories.split(",") if args.holdout_categories else None,
                           epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           l2=args.l2, dim=args.dim, patience=args.patience, seed=args.seed, n_boot=args.bootstrap,
                           baselines=not args.no_baselines, norm=args.tfidf_norm, validation=args.validation,
                           classes=args.classes, optimizer=args.optimizer,
                           max_iterations=args.max_iterations, threshold_rule=args.threshold_rule,
                           inner_folds=args.inner_folds, ensemble=args.ensemble or "nb",
                           early_stopping=None if args.early_stopping == "auto" else args.early_stopping == "on",
                           progress=progress)
    except ValueError as err:
        return fail(err)
    with open(os.path.join(args.output, "report.md"), encoding="utf-8") as fh:
        print(fh.read())
    print(f"model: {report['saved_model']}\nreport: {os.path.join(args.output, 'report.md')} (and report.json)")
    return 0


if __name__ == "__main__":
    from beam_pipeline import hard_exit
    hard_exit(main())
