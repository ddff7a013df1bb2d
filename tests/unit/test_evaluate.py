"""Unit tests for training.evaluate: metrics worked out by hand, and independent oracles (all pairs for
ROC AUC, every candidate threshold for the threshold search, explicit resamples for the bootstrap)."""
import json
import math

import numpy as np
import pytest

from training import evaluate as ev


def _pairwise_auc(y, s):
    """Oracle: the share of (positive, negative) pairs ordered right, ties one half."""
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def _toy_scores(n, seed, decimals=2):
    """Labels and noisy, rounded (hence tied) scores that separate them fairly well."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1).round(decimals)


# ---------------------------------------------------------------------------------------------------
# ROC AUC

@pytest.mark.parametrize("y, s, expected", [
    ([0, 0, 1, 1], [.1, .4, .35, .8], 0.75),            # one of four pairs misordered
    ([0, 0, 1, 1], [.1, .5, .5, .9], 0.875),            # one tied pair counts 1/2: (1 + .5 + 1 + 1) / 4
    ([0, 1, 0, 1], [.5, .5, .5, .5], 0.5),              # all tied
    ([0, 0, 1, 1, 1], [.1, .2, .3, .4, .5], 1.0),       # perfect
    ([0, 0, 1, 1, 1], [.5, .4, .3, .2, .1], 0.0),       # inverted
    ([1, 0], [3.0, -7.0], 1.0),                         # any real scores, not only probabilities
])
def test_roc_auc_by_hand(y, s, expected):
    assert ev.roc_auc(y, s) == pytest.approx(expected)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0], []])
def test_roc_auc_is_nan_without_both_classes(y):
    assert math.isnan(ev.roc_auc(y, [0.5] * len(y)))


def test_roc_auc_matches_all_pairs_and_ignores_order_and_monotone_maps():
    y, s = _toy_scores(700, seed=1)                     # rounding leaves many ties
    auc = ev.roc_auc(y, s)
    assert auc == pytest.approx(_pairwise_auc(y, s), abs=1e-12)
    perm = np.random.default_rng(2).permutation(y.size)
    assert ev.roc_auc(y[perm], s[perm]) == pytest.approx(auc, abs=1e-12)
    assert ev.roc_auc(y, np.exp(3 * s) - 5) == pytest.approx(auc, abs=1e-12)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="finite"):
        ev.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="scores of shape"):
        ev.roc_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0..1"):
        ev.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="integer"):
        ev.confusion([0, 0.5], [0, 1])


# ---------------------------------------------------------------------------------------------------
# Metrics at a threshold

# Hand example: 3 negatives, 5 positives. Confusion [[2, 1], [2, 3]].
#   negative: precision 2/4, recall 2/3, F1 2*2 / (3 + 4) = 4/7
#   positive: precision 3/4, recall 3/5, F1 2*3 / (5 + 4) = 2/3
Y_HAND = [0, 0, 0, 1, 1, 1, 1, 1]
P_HAND = [0, 0, 1, 1, 1, 1, 0, 0]


def test_confusion_and_metrics_by_hand():
    assert ev.confusion(Y_HAND, P_HAND).tolist() == [[2, 1], [2, 3]]
    assert ev.accuracy(Y_HAND, P_HAND) == pytest.approx(5 / 8)
    assert ev.balanced_accuracy(Y_HAND, P_HAND) == pytest.approx((2 / 3 + 3 / 5) / 2)
    assert ev.macro_f1(Y_HAND, P_HAND) == pytest.approx((4 / 7 + 2 / 3) / 2)
    neg, pos = ev.per_class(Y_HAND, P_HAND)
    assert neg == pytest.approx({"class": 0, "precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert pos == pytest.approx({"class": 1, "precision": 0.75, "recall": 0.6, "f1": 2 / 3, "support": 5})


def test_boolean_predictions_are_class_ids():
    assert ev.confusion(Y_HAND, np.array(P_HAND, dtype=bool)).tolist() == [[2, 1], [2, 3]]


def test_absent_classes_follow_the_conventions():
    # only positives, all predicted positive: the negative class is in neither, so it is not averaged
    assert ev.macro_f1([1, 1, 1], [1, 1, 1]) == 1.0
    assert ev.balanced_accuracy([1, 1, 1], [1, 1, 1]) == 1.0
    # negatives predicted where there are none: class 0 is in the predictions, F1 0, averaged in
    assert ev.macro_f1([1, 1, 1, 1], [0, 1, 1, 1]) == pytest.approx((0 + 6 / 7) / 2)
    # balanced accuracy only averages classes present in the labels
    assert ev.balanced_accuracy([1, 1, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.75)
    neg = ev.per_class([1, 1], [1, 1])[0]
    assert (neg["precision"], neg["recall"], neg["f1"], neg["support"]) == (0.0, 0.0, 0.0, 0)


def test_multiclass_confusion():
    cm = ev.confusion([0, 1, 2, 2, 1], [0, 2, 2, 1, 1], n_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert ev.accuracy([0, 1, 2, 2, 1], [0, 2, 2, 1, 1], n_classes=3) == pytest.approx(3 / 5)


# ---------------------------------------------------------------------------------------------------
# Threshold choice

def test_choose_threshold_toy_with_tie_break():
    y = [0, 0, 1, 0, 1, 1]
    s = [.1, .2, .3, .4, .6, .7]
    # midpoints .15 .25 .35 .5 .65; macro-F1 at .25 = (4/5 + 6/7) / 2 and at .5 = (6/7 + 4/5) / 2: tie,
    # .5 is closer to 0.5
    assert ev.choose_threshold(y, s) == pytest.approx(0.5)
    # accuracy: 5/6 at both .25 and .5 too
    assert ev.choose_threshold(y, s, metric="accuracy") == pytest.approx(0.5)
    # the same order in exact binary fractions, placed so that the two best cuts, 11/32 and 21/32, are
    # equally far from 0.5: the lower wins
    assert ev.choose_threshold(y, np.array([1, 2, 3, 4, 6, 7]) / 8 + 1 / 32) == 11 / 32


def test_choose_threshold_is_the_best_midpoint():
    y, s = _toy_scores(400, seed=3)
    values = np.unique(s)
    candidates = (values[:-1] + values[1:]) / 2
    for metric in ("macro_f1", "accuracy", "balanced_accuracy"):
        scores = np.array([getattr(ev, metric)(y, s >= t) for t in candidates])
        best = candidates[scores >= scores.max() - 1e-12]
        expected = best[np.argmin(np.abs(best - 0.5))]
        assert ev.choose_threshold(y, s, metric=metric) == pytest.approx(expected)


def test_choose_threshold_degenerate_and_bad_metric():
    assert ev.choose_threshold([0, 1, 1], [0.3, 0.3, 0.3]) == 0.5
    with pytest.raises(ValueError, match="metric"):
        ev.choose_threshold([0, 1], [0.1, 0.9], metric="roc_auc")


# ---------------------------------------------------------------------------------------------------
# Bootstrap

def test_bootstrap_is_deterministic_and_contains_the_point_estimate():
    y, s = _toy_scores(2000, seed=4)
    threshold = 0.5
    ci = ev.bootstrap_ci(y, s, threshold, n=300, seed=7)
    assert ci == ev.bootstrap_ci(y, s, threshold, n=300, seed=7)
    assert ci != ev.bootstrap_ci(y, s, threshold, n=300, seed=8)
    pred = s >= threshold
    points = {"roc_auc": ev.roc_auc(y, s), "accuracy": ev.accuracy(y, pred),
              "balanced_accuracy": ev.balanced_accuracy(y, pred), "macro_f1": ev.macro_f1(y, pred)}
    for metric, point in points.items():
        low, high = ci[metric]
        assert low < point < high
        assert high - low < 0.1                        # 2,000 rows: a few points wide


def test_bootstrap_equals_explicit_resamples():
    """The vectorised resamples are the rows (in stable score order) drawn with the seeded generator."""
    y, s = _toy_scores(300, seed=5)
    n, seed, threshold = 40, 11, 0.45
    values = ev._bootstrap_values(y, s, threshold, ev.METRICS, n, seed)
    order = np.argsort(s, kind="stable")
    draws = np.random.default_rng(seed).integers(0, y.size, size=(n, y.size))
    for metric in ev.METRICS:
        explicit = []
        for d in draws:
            yy, ss = y[order][d], s[order][d]
            explicit.append(ev.roc_auc(yy, ss) if metric == "roc_auc" else
                            getattr(ev, metric)(yy, ss >= threshold))
        np.testing.assert_allclose(values[metric], explicit, rtol=0, atol=1e-12)


def test_bootstrap_skips_undefined_resamples():
    # 1 positive in 30 rows: some resamples have no positive, AUC undefined there, left out
    y = np.zeros(30, dtype=int)
    y[0] = 1
    s = np.linspace(0, 1, 30)[::-1]
    low, high = ev.bootstrap_ci(y, s, 0.5, metrics=("roc_auc",), n=200)["roc_auc"]
    assert low == high == 1.0
    with pytest.raises(ValueError, match="unknown metrics"):
        ev.bootstrap_ci(y, s, 0.5, metrics=("auc",))


# ---------------------------------------------------------------------------------------------------
# Report and table

def test_report_is_json_ready_and_consistent():
    y, s = _toy_scores(500, seed=6)
    r = ev.report(y, s, 0.5, n_boot=200, seed=1)
    text = json.dumps(r, allow_nan=False)
    assert json.loads(text) == json.loads(json.dumps(r))
    assert r["n"] == 500
    assert r["label_counts"] == {"negative": int((y == 0).sum()), "positive": int((y == 1).sum())}
    assert r["predicted_counts"]["positive"] == int((s >= 0.5).sum())
    assert r["roc_auc"] == pytest.approx(ev.roc_auc(y, s))
    assert r["macro_f1"] == pytest.approx(ev.macro_f1(y, s >= 0.5))
    assert r["confusion_matrix"] == ev.confusion(y, s >= 0.5).tolist()
    assert [c["name"] for c in r["per_class"]] == ["negative", "positive"]
    assert r["ci"]["roc_auc"][0] < r["roc_auc"] < r["ci"]["roc_auc"][1]
    assert r["bootstrap"] == {"method": "percentile", "resamples": 200, "seed": 1, "level": 0.95}


def test_report_without_a_class_has_null_auc():
    r = ev.report([1, 1, 1], [0.2, 0.6, 0.9], 0.5, n_boot=50)
    json.dumps(r, allow_nan=False)
    assert r["roc_auc"] is None and r["ci"]["roc_auc"] == [None, None]


def test_markdown_table():
    y, s = _toy_scores(300, seed=8)
    good, poor = ev.report(y, s, 0.5, n_boot=100), ev.report(y, 1 - s, 0.5, n_boot=100)
    table = ev.markdown_table({"model": good, "inverted": poor})
    lines = table.strip().split("\n")
    assert len(lines) == 4
    assert lines[0] == ("| model | n | ROC AUC [95% CI] | accuracy | balanced accuracy | macro-F1 [95% CI] "
                        "| negative P / R | positive P / R |")
    assert lines[2].startswith(f"| model | 300 | {good['roc_auc']:.3f} [{good['ci']['roc_auc'][0]:.3f}, ")
    assert lines[3].startswith("| inverted |")
    assert ev.markdown_table([("model", good)]).count("\n") == 3
    with pytest.raises(ValueError):
        ev.markdown_table({})


def test_report_multiclass_hand_example():
    from training.evaluate import report_multiclass
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.7, .2, .1], [.3, .4, .3], [.2, .6, .2], [.1, .3, .6], [.1, .1, .8], [.2, .2, .6]])
    r = report_multiclass(y, proba, n_boot=200, seed=1)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    # one-vs-rest AUC of "negative": scores .7 .3 vs .2 .1 .1 .2 -> every negative above every other
    assert r["roc_auc_per_class"]["negative"] == 1.0
    assert r["label_counts"] == {"negative": 2, "neutral": 2, "positive": 2}
    lo, hi = r["ci"]["accuracy"]
    assert lo <= r["accuracy"] <= hi


def test_paired_auc_difference_is_the_difference_with_a_paired_interval():
    from training.evaluate import paired_auc_difference, roc_auc
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.5, 400)             # informative
    noisy = good + rng.normal(0, 2.0, 400)         # the same plus noise: worse on every resample
    d, (lo, hi) = paired_auc_difference(y, good, noisy, n=300, seed=1)
    assert d == pytest.approx(roc_auc(y, good) - roc_auc(y, noisy))
    assert 0 < lo <= d <= hi
    same, (slo, shi) = paired_auc_difference(y, good, good * 2 + 1, n=100)   # same order: no difference at all
    assert same == 0 and slo == 0 and shi == 0
