"""How well calibrated the leave-one-category-out probabilities are (issue 20 item 4, "calibration").

Reads the folds a ``python -m training.loco`` run saved (``OUTPUT/folds/<category>.npz``: each procedure's
P(positive) of its held-out category and its threshold) and the same real data the run read (for the labels,
in the same row order), and reports per procedure, per held-out category and across folds:

    brier        mean (p - y)^2
    ece          expected calibration error: 10 equal-width bins of p, sum over bins of
                 (rows in bin / rows) * |mean p - positive rate| in the bin
    mean_p       mean predicted P(positive); positive_rate the category's true share (calibration in the large)
    macro_f1     at the procedure's own threshold (chosen in the fold, without the held-out labels), and
    best_macro_f1  at the best threshold for the held-out category itself (``evaluate.choose_threshold`` on
                 its labels: an oracle no procedure can use, the ceiling of any threshold or calibration rule)

Why this is measured and not tuned: a calibration map (Platt, isotonic) is monotone, so it leaves every
ROC AUC unchanged, and when it is fitted on the same inner-fold scores the threshold rule reads, the rule
picks the same decisions, so macro-F1 is unchanged too; the issue's judged figures cannot move. What it
changes is what a probability means, which a reader of the scored silver table may care about. The
oracle columns bound what any threshold rule could add: the gap between two procedures' best macro-F1 is
the part of a macro-F1 difference that comes from the ranking, not from where the cut is made.

    .venv/bin/python bench/loco_calibration.py --loco out/loco      # writes bench/results/loco_calibration.{json,md}
"""
import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training import evaluate, loco  # noqa: E402

PROCEDURES = (loco.EXPORTED_PROCEDURE, loco.LINEAR_PROCEDURE, "baseline/refit/cv-categories")


def calibration(y, p, bins=10):
    """-> {brier, ece, mean_p, positive_rate} of labels ``y`` (0/1) and probabilities ``p``."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    edge = np.minimum((p * bins).astype(np.int64), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = edge == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return {"brier": float(np.mean((p - y) ** 2)), "ece": float(ece), "mean_p": float(p.mean()),
            "positive_rate": float(y.mean())}


def threshold_headroom(y, p, threshold):
    """-> {macro_f1 at ``threshold``, best_macro_f1 at the held-out labels' own best threshold}."""
    macro = lambda t: float(evaluate.macro_f1(y, (p >= t).astype(np.int64)))  # noqa: E731
    return {"macro_f1": macro(threshold), "best_macro_f1": macro(evaluate.choose_threshold(y, p))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loco", required=True, help="a training.loco OUTPUT folder (its folds/ are read)")
    ap.add_argument("--data", nargs="+", default=list(loco.DEFAULT_FOLDERS), help="the folders that run read")
    ap.add_argument("--output", default=os.path.join(REPO, "bench", "results", "loco_calibration"),
                    help="path prefix of the .json and .md written (default bench/results/loco_calibration)")
    args = ap.parse_args(argv)
    folds_dir = os.path.join(args.loco, "folds")
    names = sorted(f[:-4] for f in os.listdir(folds_dir) if f.endswith(".npz")) if os.path.isdir(folds_dir) else []
    if not names:
        print(f"error: no saved folds under {folds_dir}", file=sys.stderr)
        return 2
    reviews = loco.read_folders(args.data)
    per = {}
    for cat in names:
        with np.load(os.path.join(folds_dir, f"{cat}.npz")) as z:
            saved = {k.split("|")[0]: z[k] for k in z.files}
            thresholds = {k.split("|")[0]: float(k.split("|")[1]) for k in z.files}
        y = reviews.label[reviews.category == cat]
        per[cat] = {}
        for proc in PROCEDURES:
            if proc in saved:
                if saved[proc].shape != y.shape:
                    print(f"error: {cat}: {saved[proc].size} saved scores, {y.size} reviews in the data: not the "
                          "data that run read", file=sys.stderr)
                    return 2
                per[cat][proc] = {**calibration(y, saved[proc]), **threshold_headroom(y, saved[proc], thresholds[proc])}
    procs = [p for p in PROCEDURES if all(p in per[c] for c in names)]
    summary = {p: {m: loco.across_folds([per[c][p][m] for c in names]) for m in ("brier", "ece", "macro_f1", "best_macro_f1")}
               for p in procs}
    with open(args.output + ".json", "w", encoding="utf-8") as fh:
        json.dump({"folds": names, "per_category": per, "across_folds": summary}, fh, indent=1, sort_keys=True)
    lines = ["# Calibration of the leave-one-category-out probabilities", "",
             f"From `{folds_dir}` ({len(names)} folds); `bench/loco_calibration.py` (what and why: its docstring).", "",
             "| procedure | mean Brier [95 % over folds] | mean ECE [95 % over folds] |", "|---|---:|---:|"]
    for p in procs:
        b, e = summary[p]["brier"], summary[p]["ece"]
        lines.append(f"| {p} | {b[0]:.4f} [{b[1][0]:.4f}, {b[1][1]:.4f}] | {e[0]:.4f} [{e[1][0]:.4f}, {e[1][1]:.4f}] |")
    lines += ["", "| held-out category | positive rate | " + " | ".join(f"{p} mean p / ECE" for p in procs) + " |",
              "|---|---:|" + "---:|" * len(procs)]
    for c in names:
        cells = [f"{per[c][p]['mean_p']:.3f} / {per[c][p]['ece']:.4f}" for p in procs]
        lines.append(f"| {c} | {per[c][procs[0]]['positive_rate']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Threshold headroom: mean macro-F1 over the folds at each procedure's own threshold and at each held-out "
              "category's best threshold (chosen on its labels: an oracle, the ceiling of any threshold or calibration "
              "rule) [95 % over folds]:", "",
              "| procedure | macro-F1, own threshold | macro-F1, best threshold (oracle) |", "|---|---:|---:|"]
    for p in procs:
        a, b = summary[p]["macro_f1"], summary[p]["best_macro_f1"]
        lines.append(f"| {p} | {a[0]:.4f} [{a[1][0]:.4f}, {a[1][1]:.4f}] | {b[0]:.4f} [{b[1][0]:.4f}, {b[1][1]:.4f}] |")
    if len(procs) > 1 and procs[-1].startswith("baseline"):
        base = procs[-1]
        for p in procs[:-1]:
            d = lambda m: np.mean([per[c][p][m] - per[c][base][m] for c in names])  # noqa: E731
            lines.append(f"\n`{p}` minus `{base}`: {d('macro_f1'):+.4f} at the procedures' own thresholds, "
                         f"{d('best_macro_f1'):+.4f} with both at their oracle thresholds.")
    with open(args.output + ".md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
