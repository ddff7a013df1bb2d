"""How the sentiment model's features and L2 were chosen: leave-one-category-out cross-validation over the
categories that are NOT the test categories (training + validation categories of ``--split=category``).

For each such category with at least 20 negative reviews: fit on the other non-test categories, score
ROC AUC on it. Feature sets (numpy twins of training.features, fitted on the fold's training rows only):

    word            the tf-idf baseline's features: tokens + bigrams, min df 2, sublinear tf, unit rows
    char            the same over the 3-5-character n-grams of each "<token>"
    word+char       both groups side by side, each at unit length
    word+0.5char    the character group scaled to 0.5 (what training.features does)

each with logistic regression (training.baselines, balanced class weights) over an L2 grid. The test
categories are never read. Prints the per-category table and the mean over categories, and writes them
to bench/results/model_selection.json.

``--study procedure`` instead runs each candidate of CANDIDATES the way training.train runs it: each fold
is split exactly as training.data splits the non-test categories with that category held out (so the
validation categories, used for early stopping, are chosen as in a real run), features are fitted on the
fold's training split only, and the fit is L-BFGS to the minimum or with early stopping on validation
AUC / log loss (training.lbfgs.fit_rows). Prints each candidate's held-out AUC per category, the mean and
the difference from the tf-idf baseline fitted the same way; writes model_selection_procedure.json.
Candidates include the negation-scope terms (``neg``: training.baselines.NegationTfidf), the summary's own
tokens + bigrams (``summary``), and, for comparison only, an ensemble with a naive-Bayes-scaled twin that
training.train does not build.

    python bench/model_selection.py --silver out/real/silver/reviews [--study procedure]
"""
import argparse
import collections
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training import data as data_mod  # noqa: E402
from training.baselines import Csr, LogisticRegression, NegationTfidf, TfidfBigramBaseline  # noqa: E402
from training.evaluate import roc_auc  # noqa: E402
from training.features import CHAR_NGRAMS  # noqa: E402

L2_GRID = (1e-3, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7)


class CharTfidf(TfidfBigramBaseline):
    """The tf-idf baseline's features over character n-grams of each "<token>" instead of words + bigrams
    (the numpy twin of training.features.char_terms)."""

    def _terms(self, tokens, doc):
        grams, rows = [], []
        for token, d in zip(tokens.to_pylist(), doc.tolist()):
            w = f"<{token}>"
            for n in CHAR_NGRAMS:
                grams.extend(w[j:j + n] for j in range(len(w) - n + 1))
                rows.extend([d] * max(0, len(w) - n + 1))
        return pa.array(grams, pa.string()), np.array(rows, dtype=np.int64)


class SummaryTfidf(TfidfBigramBaseline):
    """The tf-idf baseline's features of the summary alone (the numpy twin of the model's summary group)."""

    def fit_features(self, summary, review):
        return super().fit_features(summary, [""] * len(summary))

    def transform(self, summary, review):
        return super().transform(summary, [""] * len(summary))


def features(cls, fit_s, fit_r, held_s, held_r):
    """Unit-length sublinear tf-idf rows of the fold's training and held-out texts (vocabulary, min df 2,
    and idf from the training texts)."""
    f = cls().fit_features(fit_s, fit_r)
    return f.transform(fit_s, fit_r), f.transform(held_s, held_r)


def hstack(a, b, scale_b=1.0):
    la, lb = a.row_lengths, b.row_lengths
    rows = np.concatenate([np.repeat(np.arange(a.n_rows), la), np.repeat(np.arange(b.n_rows), lb)])
    cols = np.concatenate([a.indices, b.indices + a.n_cols])
    vals = np.concatenate([a.values, b.values * scale_b])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(a.n_rows + 1, np.int64)
    np.cumsum(la + lb, out=indptr[1:])
    return Csr(indptr, cols[order], vals[order], a.n_cols + b.n_cols)


# the procedure study: candidate (feature set, fit) pairs run the way training.train runs them
# name -> (class, tf-idf options). "sub": (1 + ln tf) x idf over up to 200k terms (the baseline's rule,
# training.features now); "raw": tf as is over up to 100k terms, near the features of fdedcb6 (those came
# from tft.tfidf, counted occurrences rather than documents and had an out-of-vocabulary bucket)
FEATURES = {
    "word/sub": (TfidfBigramBaseline, {}),
    "char/sub": (CharTfidf, {}),
    "word/raw": (TfidfBigramBaseline, {"sublinear_tf": False, "max_features": 100_000}),
    "char/raw": (CharTfidf, {"sublinear_tf": False, "max_features": 100_000}),
    "neg/sub": (NegationTfidf, {}),            # word/sub + the negation-scope terms
    "summary/sub": (SummaryTfidf, {}),
}
CANDIDATES = {  # name -> (feature groups with their scale, L2, fit: "converged" | early stopping on "auc"/"loss")
    "baseline: word/sub L2 1e-6, converged": ((("word/sub", 1.0),), 1e-6, "converged"),
    "model as of fdedcb6: word+0.5char raw, 3e-6, early stop": ((("word/raw", 1.0), ("char/raw", 0.5)), 3e-6, "auc"),
    "word+0.5char raw, 3e-6, converged": ((("word/raw", 1.0), ("char/raw", 0.5)), 3e-6, "converged"),
    "word+0.5char sub, 3e-6, early stop": ((("word/sub", 1.0), ("char/sub", 0.5)), 3e-6, "auc"),
    "word+0.5char sub, 3e-6, converged": ((("word/sub", 1.0), ("char/sub", 0.5)), 3e-6, "converged"),
    "neg+0.5char sub, 3e-6, converged": ((("neg/sub", 1.0), ("char/sub", 0.5)), 3e-6, "converged"),
    "word+0.5char+0.3summary sub, 3e-6, converged": ((("word/sub", 1.0), ("char/sub", 0.5), ("summary/sub", 0.3)),
                                                    3e-6, "converged"),
    "neg+0.5char+0.3summary sub, 3e-6, converged": ((("neg/sub", 1.0), ("char/sub", 0.5), ("summary/sub", 0.3)),
                                                   3e-6, "converged"),
    "... + NB-scaled twin at 1e-5, logits summed (not built)": ((("neg/sub", 1.0), ("char/sub", 0.5),
                                                                ("summary/sub", 0.3)), 3e-6, "converged+nb"),
    "neg+0.5char+0.5summary sub, 3e-6, converged": ((("neg/sub", 1.0), ("char/sub", 0.5), ("summary/sub", 0.5)),
                                                   3e-6, "converged"),
    "word+0.5char sub, 3e-6, early stop on val loss": ((("word/sub", 1.0), ("char/sub", 0.5)), 3e-6, "loss"),
    **{f"nb(word/sub)+0.5 nb(char/sub), {l2:g}, converged": ((("word/sub/nb", 1.0), ("char/sub/nb", 0.5)), l2,
                                                             "converged") for l2 in (1e-5, 3e-6, 1e-6)},
    **{f"nb(word/sub), {l2:g}, converged": ((("word/sub/nb", 1.0),), l2, "converged") for l2 in (1e-5, 3e-6, 1e-6)},
}


def nb_scaled(rows, r):
    """Rows with each term's weight times its naive-Bayes log-count ratio ``r``, back to unit length."""
    return Csr(rows.indptr, rows.indices, rows.values * r[rows.indices], rows.n_cols).unit_rows()


def nb_ratio(rows, y, alpha=1.0):
    """Wang & Manning's log-count ratio over document frequencies: log((p / |p|_1) / (q / |q|_1)), p and q the
    positive and negative reviews' document counts per term plus ``alpha``."""
    present = Csr(rows.indptr, rows.indices, (rows.values > 0).astype(np.float64), rows.n_cols)
    p, q = present.tdot((y == 1).astype(np.float64)) + alpha, present.tdot((y == 0).astype(np.float64)) + alpha
    return np.log((p / p.sum()) / (q / q.sum()))


def procedure_study(table, test_categories, min_negatives, out):
    """Leave-one-category-out over the non-test categories, each fold split exactly as ``training.data``
    splits with that category held out (so the validation categories, used for early stopping, are
    chosen as in a real run), each candidate fitted on the fold's training split only."""
    from training import lbfgs
    cats_all = data_mod.category_of(table)
    dev_table = table.filter(pa.array(~np.isin(cats_all, list(test_categories))))
    results, iterations = collections.defaultdict(dict), collections.defaultdict(dict)
    started = time.monotonic()
    for cat in sorted(set(data_mod.category_of(dev_table))):
        ex = data_mod.examples(dev_table, holdout=[cat])
        tr, va, te = ex.take("train"), ex.take("validation"), ex.take("test")
        if (te.label == 0).sum() < min_negatives:
            print(f"{cat}: skipped ({(te.label == 0).sum()} negatives)", flush=True)
            continue
        feats = {}
        for name, (cls, kw) in FEATURES.items():
            f = cls(**kw).fit_features(tr.summary, tr.review_text)
            feats[name] = [f.transform(e.summary, e.review_text) for e in (tr, va, te)]
        for name in ("word/sub", "char/sub", "neg/sub", "summary/sub"):
            r = nb_ratio(feats[name][0], tr.label)
            feats[name + "/nb"] = [nb_scaled(x, r) for x in feats[name]]
        counts = np.bincount(tr.label, minlength=2)
        weight = (tr.label.size / (2.0 * counts))[tr.label]
        for cand, (groups, l2, fit) in CANDIDATES.items():
            xs = [feats[groups[0][0]][i] for i in range(3)]
            for g, scale in groups[1:]:
                xs = [hstack(xs[i], feats[g][i], scale) for i in range(3)]
            theta, summary = lbfgs.fit_rows(xs[0], tr.label, weight, xs[1], va.label, l2, max_iter=500,
                                            early_stopping=not fit.startswith("converged"),
                                            monitor="auc" if fit.startswith("converged") else fit,
                                            progress=lambda _: None)
            score = xs[2].dot(theta[:-1]) + theta[-1]
            if fit == "converged+nb":  # an ensemble: plus the logit of the same groups naive-Bayes scaled
                nb = [feats[groups[0][0] + "/nb"][i] for i in (0, 2)]
                for g, scale in groups[1:]:
                    nb = [hstack(nb[i], feats[g + "/nb"][j], scale) for i, j in ((0, 0), (1, 2))]
                score = score + LogisticRegression(1e-5, 500).fit(nb[0], tr.label, weight).decision_function(nb[1])
            results[cand][cat] = roc_auc(te.label, score)
            iterations[cand][cat] = (summary["best_iteration"], summary["iterations"])
        print(f"{cat} ({len(te):,} reviews, {(te.label == 0).sum()} negative; validation "
              f"{', '.join(sorted(set(va.category)))}) [{time.monotonic() - started:.0f} s]", flush=True)
        for cand in CANDIDATES:
            print(f"  {cand:62s} {results[cand][cat]:.4f}  best iteration {iterations[cand][cat][0]} of "
                  f"{iterations[cand][cat][1]}", flush=True)
    base = next(iter(CANDIDATES))
    print("\nmean ROC AUC over the held-out categories, and against the baseline (mean difference, "
          "categories better / worse):")
    summary = {}
    for cand in CANDIDATES:
        d = np.array([results[cand][c] - results[base][c] for c in results[base]])
        summary[cand] = {"mean_auc": round(float(np.mean(list(results[cand].values()))), 5),
                         "mean_difference": round(float(d.mean()), 5), "better": int((d > 0).sum()),
                         "worse": int((d < 0).sum())}
        print(f"  {cand:62s} {summary[cand]['mean_auc']:.4f}  {d.mean():+.4f}  {(d > 0).sum()}/{(d < 0).sum()}")
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"summary": summary, "per_category": {k: {c: round(a, 5) for c, a in v.items()}
                                                        for k, v in results.items()},
                   "iterations": iterations}, fh, indent=1)
    print(f"written {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--silver", required=True, help="silver review Parquet of a batch run over the real data")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "model_selection.json"))
    p.add_argument("--min_negatives", type=int, default=20)
    p.add_argument("--study", choices=("grid", "procedure"), default="grid",
                   help="grid: feature sets x L2 grid, converged fits; procedure: the candidates in CANDIDATES "
                        "fitted as training.train fits them (validation categories, early stopping)")
    args = p.parse_args(argv)
    table = data_mod.read_silver(args.silver)
    ex = data_mod.examples(table)
    if args.study == "procedure":
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        return procedure_study(table, sorted(set(ex.take("test").category)), args.min_negatives,
                               args.out.replace(".json", "_procedure.json"))
    dev = ex.split != "test"                                       # the test categories are never read
    s, r, y, c = ex.summary[dev], ex.review_text[dev], ex.label[dev], ex.category[dev]
    results = collections.defaultdict(dict)
    started = time.monotonic()
    for cat in sorted(set(c)):
        held = c == cat
        if (y[held] == 0).sum() < args.min_negatives:
            print(f"{cat}: skipped ({(y[held] == 0).sum()} negatives)", flush=True)
            continue
        fit = ~held
        w = features(TfidfBigramBaseline, s[fit], r[fit], s[held], r[held])
        k = features(CharTfidf, s[fit], r[fit], s[held], r[held])
        sets = {"word": w, "char": k, "word+char": [hstack(w[i], k[i]) for i in (0, 1)],
                "word+0.5char": [hstack(w[i], k[i], 0.5) for i in (0, 1)]}
        counts = np.bincount(y[fit], minlength=2)
        weight = (y[fit].size / (2.0 * counts))[y[fit]]
        for name, (x_fit, x_held) in sets.items():
            start = None
            for l2 in sorted(L2_GRID, reverse=True):
                m = LogisticRegression(l2, 500).fit(x_fit, y[fit], weight, start=start)
                start = np.append(m.coef_, m.intercept_)
                results[f"{name} l2={l2:g}"][cat] = roc_auc(y[held], m.decision_function(x_held))
        print(f"{cat} ({held.sum():,} reviews, {(y[held] == 0).sum()} negative): best "
              + max(((k_, v[cat]) for k_, v in results.items()), key=lambda kv: kv[1])[0]
              + f" [{time.monotonic() - started:.0f} s]", flush=True)
    table = sorted(((k_, float(np.mean(list(v.values()))), v) for k_, v in results.items()), key=lambda t: -t[1])
    print("\nmean ROC AUC over the held-out categories:")
    for k_, mean, _ in table:
        print(f"  {k_:28s} {mean:.4f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"categories": sorted({cat for _, _, v in table for cat in v}),
                   "mean_auc": {k_: round(m, 5) for k_, m, _ in table},
                   "per_category": {k_: {cat: round(a, 5) for cat, a in v.items()} for k_, _, v in table}}, fh, indent=1)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
