"""Classification metrics for the sentiment model and its baselines: pure numpy, no TensorFlow.

Conventions (those of scikit-learn, so numbers can be checked against it elsewhere):

* labels are integer class ids ``0 .. n_classes - 1``; for the binary task 0 = negative, 1 = positive
  (``transforms.labels.polarity``) and ``scores`` are the probability (or any monotone score) of 1;
* a score at or above the threshold predicts 1;
* the confusion matrix has true classes as rows and predicted classes as columns;
* precision, recall and F1 of a class with an empty denominator are 0; macro-F1 averages the classes
  that occur in the labels or the predictions; balanced accuracy averages the recall of the classes
  that occur in the labels;
* ROC AUC is the Mann-Whitney statistic (ties count one half), NaN when a class is missing.

Every metric at a threshold is computed from confusion matrices (``_cm_metrics``), which may carry
leading batch dimensions: the point estimate, the threshold search (one matrix per candidate) and the
bootstrap (one per resample) share that one code path.

The bootstrap draws whole resamples of the evaluation rows (percentile intervals). It works on the rows
sorted by score, as multiplicity counts: a resample's AUC is the weighted Mann-Whitney statistic over
the runs of equal scores and its confusion matrix is four sums over the same runs, so no resample is
ever sorted and 1,000 resamples of 10,000 rows take about 0.3 s.
"""
import math

import numpy as np

CLASS_NAMES = ("negative", "positive")
METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1")
_THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
_TIE_TOLERANCE = 1e-12
_BOOTSTRAP_CELLS = 2_000_000   # multiplicities held at once (rows x resamples): ~16 MB as float64


# --------------------------------------------------------------------------------------------- inputs

def _labels(y_true, n_classes=2):
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.size and (not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y))):
        raise ValueError("labels must be integer class ids")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y


def _scored(y_true, scores):
    y = _labels(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{y.size} labels but scores of shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (no NaN or infinity)")
    return y, s


def _predict(scores, threshold):
    return (np.asarray(scores, dtype=np.float64) >= threshold).astype(np.int64)


# ------------------------------------------------------------------------------ confusion-based metrics

def _safe_div(num, den):
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _cm_metrics(cm):
    """Confusion matrices ``(..., k, k)`` -> dict of metric arrays of shape ``(...)`` (per-class ones
    ``(..., k)``)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    recall = _safe_div(tp, support)
    in_labels = support > 0
    in_either = in_labels | (predicted > 0)
    f1 = _safe_div(2 * tp, support + predicted)
    return {
        "precision": _safe_div(tp, predicted),
        "recall": recall,
        "f1": f1,
        "support": support,
        "accuracy": np.where(total > 0, _safe_div(tp.sum(axis=-1), total), np.nan),
        "balanced_accuracy": np.where(in_labels.any(axis=-1),
                                      _safe_div((recall * in_labels).sum(axis=-1), in_labels.sum(axis=-1)),
                                      np.nan),
        "macro_f1": np.where(in_either.any(axis=-1),
                             _safe_div((f1 * in_either).sum(axis=-1), in_either.sum(axis=-1)), np.nan),
    }


def confusion(y_true, y_pred, n_classes=2):
    """``(n_classes, n_classes)`` int64 counts, rows = true class, columns = predicted class."""
    y, p = _labels(y_true, n_classes), _labels(y_pred, n_classes)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} predictions")
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred, n_classes=2):
    return float(_cm_metrics(confusion(y_true, y_pred, n_classes))["accuracy"])


def balanced_accuracy(y_true, y_pred, n_classes=2):
    """Mean recall over the classes present in ``y_true``."""
    return float(_cm_metrics(confusion(y_true, y_pred, n_classes))["balanced_accuracy"])


def macro_f1(y_true, y_pred, n_classes=2):
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    return float(_cm_metrics(confusion(y_true, y_pred, n_classes))["macro_f1"])


def per_class(y_true, y_pred, n_classes=2):
    """One dict per class: ``class``, ``precision``, ``recall``, ``f1``, ``support``."""
    m = _cm_metrics(confusion(y_true, y_pred, n_classes))
    return [{"class": k, "precision": float(m["precision"][k]), "recall": float(m["recall"][k]),
             "f1": float(m["f1"][k]), "support": int(m["support"][k])} for k in range(n_classes)]


# -------------------------------------------------------------------------------------------- ROC AUC

def _score_groups(scores):
    """Ascending sort order of ``scores`` and the start of each run of equal scores in it."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _auc_from_groups(pos, neg):
    """Mann-Whitney AUC from per-group counts of positives and negatives, groups in ascending score
    order; leading batch dimensions allowed. NaN where a class has no weight."""
    neg_below = np.cumsum(neg, axis=-1) - neg
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=-1)
    return np.where((n_pos > 0) & (n_neg > 0), _safe_div(wins, n_pos * n_neg), np.nan)


def roc_auc(y_true, scores):
    """Area under the ROC curve: the probability that a random positive scores above a random negative,
    ties counting one half (equal to the rank formula with average ranks). NaN if a class is missing."""
    y, s = _scored(y_true, scores)
    if y.size == 0:
        return math.nan
    order, starts = _score_groups(s)
    pos = np.add.reduceat(y[order].astype(np.float64), starts)
    size = np.diff(np.r_[starts, y.size]).astype(np.float64)
    return float(_auc_from_groups(pos, size - pos))


# ------------------------------------------------------------------------------------ threshold choice

def choose_threshold(y_true, scores, metric="macro_f1"):
    """The threshold that maximises ``metric`` (``macro_f1``, ``accuracy`` or ``balanced_accuracy``) on
    the given data, meant for a validation split. Candidates are the midpoints between consecutive
    distinct scores, so every distinct way of cutting the sorted scores is tried once; among equally
    good candidates the one closest to 0.5 wins, then the lower one. With fewer than two distinct
    scores there is no cut to choose and 0.5 is returned."""
    if metric not in _THRESHOLD_METRICS:
        raise ValueError(f"metric must be one of {_THRESHOLD_METRICS}, got {metric!r}")
    y, s = _scored(y_true, scores)
    order, starts = _score_groups(s)
    if starts.size < 2:
        return 0.5
    values = s[order][starts]                               # distinct scores, ascending
    pos = np.add.reduceat(y[order], starts)
    neg = np.diff(np.r_[starts, y.size]) - pos
    # cutting between group g and g + 1 predicts 1 for groups g + 1 .. end
    tp = np.cumsum(pos[::-1])[::-1][1:]
    fp = np.cumsum(neg[::-1])[::-1][1:]
    fn, tn = pos.sum() - tp, neg.sum() - fp
    cm = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)   # (candidates, 2, 2)
    value = _cm_metrics(cm)[metric]
    thresholds = (values[:-1] + values[1:]) / 2
    best = np.flatnonzero(value >= np.nanmax(value) - _TIE_TOLERANCE)
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


# ------------------------------------------------------------------------------------------ bootstrap

def _resamples(rows, n, seed):
    """``n`` bootstrap resamples of ``rows`` rows as multiplicity matrices, in chunks of at most
    ``_BOOTSTRAP_CELLS`` cells: yields (index of the chunk's first resample, counts [chunk, rows])."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // rows)
    for lo in range(0, n, chunk):
        b = min(chunk, n - lo)
        draws = rng.integers(0, rows, size=(b, rows)) + (np.arange(b) * rows)[:, None]
        yield lo, np.bincount(draws.ravel(), minlength=b * rows).reshape(b, rows).astype(np.float64)


def _bootstrap_values(y, s, threshold, metrics, n, seed):
    """{metric: array of n resample values}. Rows are taken in (stable) score order and a resample is
    a vector of multiplicities; sums over runs of equal scores give each resample's positives and rows
    per score, hence its AUC and, since the threshold cuts between runs, its confusion matrix."""
    order, starts = _score_groups(s)
    y = y[order].astype(np.float64)
    cut = int(np.searchsorted(s[order][starts], threshold, side="left"))   # first run predicted 1
    out = {m: np.empty(n) for m in metrics}
    for lo, counts in _resamples(y.size, n, seed):
        b = counts.shape[0]
        pos = np.add.reduceat(counts * y, starts, axis=1)
        neg = np.add.reduceat(counts, starts, axis=1) - pos
        if "roc_auc" in out:
            out["roc_auc"][lo:lo + b] = _auc_from_groups(pos, neg)
        tp, fp = pos[:, cut:].sum(axis=1), neg[:, cut:].sum(axis=1)
        fn, tn = pos.sum(axis=1) - tp, neg.sum(axis=1) - fp
        cm_metrics = _cm_metrics(np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2))
        for m in out:
            if m != "roc_auc":
                out[m][lo:lo + b] = cm_metrics[m]
    return out


def bootstrap_ci(y_true, scores, threshold, metrics=METRICS, n=1000, seed=0, alpha=0.05):
    """Percentile bootstrap intervals: {metric: (low, high)} at level ``1 - alpha`` over ``n`` resamples
    of the rows (threshold fixed). Resamples where a metric is undefined (a class absent, for AUC) are
    left out of that metric's interval; (nan, nan) if none is defined."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    y, s = _scored(y_true, scores)
    if y.size == 0 or n < 1:
        return {m: (math.nan, math.nan) for m in metrics}
    values = _bootstrap_values(y, s, threshold, tuple(metrics), n, seed)
    out = {}
    for m in metrics:
        v = values[m][np.isfinite(values[m])]
        out[m] = tuple(float(q) for q in np.quantile(v, [alpha / 2, 1 - alpha / 2])) if v.size else (
            math.nan, math.nan)
    return out


def paired_auc_difference(y_true, scores_a, scores_b, n=1000, seed=0, alpha=0.05):
    """ROC AUC of ``scores_a`` minus that of ``scores_b`` on the same rows, with a paired percentile
    bootstrap interval: each resample of the rows scores both, so what the two have in common (which
    reviews are hard) cancels out. -> (difference, (low, high))."""
    y, a = _scored(y_true, scores_a)
    _, b = _scored(y_true, scores_b)
    if y.size == 0 or n < 1:
        return math.nan, (math.nan, math.nan)
    groups = [_score_groups(s) for s in (a, b)]
    diffs = np.empty(n)
    for lo, counts in _resamples(y.size, n, seed):
        k = counts.shape[0]
        aucs = []
        for order, starts in groups:
            c = counts[:, order]
            pos = np.add.reduceat(c * y[order], starts, axis=1)
            aucs.append(_auc_from_groups(pos, np.add.reduceat(c, starts, axis=1) - pos))
        diffs[lo:lo + k] = aucs[0] - aucs[1]
    v = diffs[np.isfinite(diffs)]
    interval = tuple(float(q) for q in np.quantile(v, [alpha / 2, 1 - alpha / 2])) if v.size else (math.nan,) * 2
    return roc_auc(y, a) - roc_auc(y, b), interval


# ---------------------------------------------------------------------------------------------- report

def _json_float(x):
    x = float(x)
    return None if math.isnan(x) else x


def report(y_true, scores, threshold, *, n_boot=1000, seed=0, alpha=0.05, class_names=CLASS_NAMES):
    """Everything about one binary scorer on one split, JSON-ready (NaN -> None)."""
    y, s = _scored(y_true, scores)
    pred = _predict(s, threshold)
    cm = confusion(y, pred)
    m = _cm_metrics(cm)
    classes = per_class(y, pred)
    for row in classes:
        row["name"] = class_names[row["class"]]
    ci = bootstrap_ci(y, s, threshold, n=n_boot, seed=seed, alpha=alpha)
    return {
        "n": int(y.size),
        "label_counts": {class_names[k]: int(c) for k, c in enumerate(cm.sum(axis=1))},
        "predicted_counts": {class_names[k]: int(c) for k, c in enumerate(cm.sum(axis=0))},
        "threshold": float(threshold),
        "roc_auc": _json_float(roc_auc(y, s)),
        "accuracy": _json_float(m["accuracy"]),
        "balanced_accuracy": _json_float(m["balanced_accuracy"]),
        "macro_f1": _json_float(m["macro_f1"]),
        "per_class": classes,
        "confusion_matrix": cm.tolist(),
        "ci": {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in ci.items()},
        "bootstrap": {"method": "percentile", "resamples": int(n_boot), "seed": int(seed),
                      "level": 1 - alpha},
    }


def _fmt(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _with_ci(r, metric):
    lo, hi = r["ci"].get(metric, (None, None))
    return f"{_fmt(r[metric])} [{_fmt(lo)}, {_fmt(hi)}]"


def markdown_table(named_reports):
    """Markdown comparison of ``report`` dicts: ``{name: report}`` or ``[(name, report), ...]``, one
    row per model in the given order."""
    items = list(named_reports.items() if isinstance(named_reports, dict) else named_reports)
    if not items:
        raise ValueError("no reports to tabulate")
    first = items[0][1]
    level = f"{round(100 * first['bootstrap']['level'])}% CI"
    names = [c["name"] for c in first["per_class"]]
    header = (["model", "n", f"ROC AUC [{level}]", "accuracy", "balanced accuracy", f"macro-F1 [{level}]"]
              + [f"{name} P / R" for name in names])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in items:
        cells = [name, f"{r['n']:,}", _with_ci(r, "roc_auc"), _fmt(r["accuracy"]),
                 _fmt(r["balanced_accuracy"]), _with_ci(r, "macro_f1")]
        cells += [f"{_fmt(c['precision'])} / {_fmt(c['recall'])}" for c in r["per_class"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_multiclass(y_true, proba, *, class_names=("negative", "neutral", "positive"), n_boot=1000, seed=0,
                      alpha=0.05):
    """A k-class scorer (``proba``: [n, k] class probabilities; prediction = the most probable class):
    one-vs-rest ROC AUC per class and their mean, accuracy, balanced accuracy, macro-F1, per-class
    precision/recall, confusion matrix, label counts, and percentile bootstrap intervals of the headline
    metrics. JSON-ready."""
    y = _labels(y_true, len(class_names))
    proba = np.asarray(proba, dtype=np.float64)
    k = len(class_names)
    pred = proba.argmax(axis=1)
    cm = confusion(y, pred, k)
    m = _cm_metrics(cm)
    classes = per_class(y, pred, k)
    for row in classes:
        row["name"] = class_names[row["class"]]

    def ovr_auc(idx):
        aucs = [roc_auc((y[idx] == c).astype(np.int64), proba[idx, c]) for c in range(k)]
        return float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")

    rng = np.random.default_rng(seed)
    boot = {"roc_auc_ovr": [], "accuracy": [], "macro_f1": []}
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        bcm = confusion(y[idx], pred[idx], k)
        bm = _cm_metrics(bcm)
        boot["roc_auc_ovr"].append(ovr_auc(idx))
        boot["accuracy"].append(bm["accuracy"])
        boot["macro_f1"].append(bm["macro_f1"])
    ci = {name: [_json_float(np.nanpercentile(v, 100 * alpha / 2)), _json_float(np.nanpercentile(v, 100 * (1 - alpha / 2)))]
          for name, v in boot.items()}
    every = np.arange(y.size)
    return {
        "n": int(y.size),
        "label_counts": {class_names[c]: int(n) for c, n in enumerate(cm.sum(axis=1))},
        "predicted_counts": {class_names[c]: int(n) for c, n in enumerate(cm.sum(axis=0))},
        "roc_auc_ovr": _json_float(ovr_auc(every)),
        "roc_auc_per_class": {class_names[c]: _json_float(roc_auc((y == c).astype(np.int64), proba[:, c]))
                              for c in range(k)},
        "accuracy": _json_float(m["accuracy"]),
        "balanced_accuracy": _json_float(m["balanced_accuracy"]),
        "macro_f1": _json_float(m["macro_f1"]),
        "per_class": classes,
        "confusion_matrix": cm.tolist(),
        "ci": ci,
        "bootstrap": {"method": "percentile", "resamples": int(n_boot), "seed": int(seed), "level": 1 - alpha},
    }
