"""The binary linear classifier fitted by full-batch L-BFGS (training.lbfgs): its Keras weights are the
baselines' logistic regression fitted on the same sparse rows, and the linear model's output kernel does
not train (a trainable one would undo the L2 penalty on the term weights)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the training extra (tensorflow, tensorflow-transform) is not installed")

from training import lbfgs  # noqa: E402
from training.baselines import LogisticRegression  # noqa: E402
from training.model import build_classifier  # noqa: E402

SIZES = {"word": 6, "char": 4}


def _batch(rows):
    """rows: list of {group: {id: weight}} -> features dict of SparseTensors [n, k]."""
    out = {}
    for group in SIZES:
        idx, ids, vals = [], [], []
        for r, row in enumerate(rows):
            for k, (i, w) in enumerate(sorted(row.get(group, {}).items())):
                idx.append([r, k])
                ids.append(i)
                vals.append(w)
        width = max([len(row.get(group, {})) for row in rows] + [1])
        shape = [len(rows), width]
        out[f"{group}_ids"] = tf.SparseTensor(np.array(idx, np.int64).reshape(-1, 2), np.array(ids, np.int64), shape)
        out[f"{group}_weights"] = tf.SparseTensor(np.array(idx, np.int64).reshape(-1, 2), np.array(vals, np.float32),
                                                  shape)
    return out


ROWS = [{"word": {0: 1.0, 2: 0.5}, "char": {1: 0.5}}, {"word": {1: 1.0}, "char": {0: 0.5, 3: 0.2}},
        {"word": {0: 0.7, 3: 0.7}}, {"word": {1: 0.6, 4: 0.8}, "char": {2: 0.5}},
        {"word": {2: 1.0}, "char": {1: 0.3}}, {"char": {0: 0.5}}, {"word": {0: 0.2, 1: 0.9}, "char": {3: 0.4}}]
LABELS = np.array([1, 0, 1, 0, 1, 0, 0])


def test_csr_puts_the_groups_side_by_side():
    x = lbfgs.to_csr(_batch(ROWS), SIZES)
    dense = x.toarray()
    assert dense.shape == (7, 10)
    assert dense[0].tolist() == [1.0, 0, 0.5, 0, 0, 0, 0, 0.5, 0, 0]
    assert dense[5].tolist() == [0, 0, 0, 0, 0, 0, 0.5, 0, 0, 0]


def test_linear_model_trains_term_tables_and_bias_only():
    model = build_classifier({"word": 6, "char": 4}, l2=1e-3)
    assert not model.get_layer("logit").kernel.trainable
    assert sorted(tuple(v.shape) for v in model.trainable_variables) == [(1,), (4, 1), (6, 1)]


def test_keras_weights_equal_the_numpy_logistic_regression():
    l2 = 1e-2
    model = build_classifier(SIZES, l2=l2 / 2)
    features, y = _batch(ROWS), tf.constant(LABELS)
    weights = {0: 7 / (2 * 4), 1: 7 / (2 * 3)}
    out = lbfgs.fit(model, (features, y), (features, y), weights, check_every=1000, progress=lambda m: None)
    want = LogisticRegression(l2, 500).fit(lbfgs.to_csr(features, SIZES), LABELS,
                                           np.array([weights[int(c)] for c in LABELS]))
    got = np.concatenate([model.get_layer("word_terms").table.numpy().ravel(),
                          model.get_layer("char_terms").table.numpy().ravel()])
    np.testing.assert_allclose(got, want.coef_, atol=1e-5)
    assert model.get_layer("logit").bias.numpy()[0] == pytest.approx(want.intercept_, abs=1e-5)
    assert out["iterations"] == want.n_iter_
    probs = model(features, training=False).numpy().ravel()
    np.testing.assert_allclose(probs, want.predict_proba(lbfgs.to_csr(features, SIZES)), atol=1e-5)


def test_early_stopping_keeps_the_best_checked_weights():
    model = build_classifier(SIZES, l2=1e-8)
    features, y = _batch(ROWS), tf.constant(LABELS)
    seen = []
    out = lbfgs.fit(model, (features, y), (features, y), {0: 1.0, 1: 1.0}, check_every=1, patience=2,
                    progress=seen.append)
    assert out["checks"] and len(seen) == len(out["checks"])
    assert out["best_validation"] >= max(auc for _, auc in out["checks"])
    assert out["best_iteration"] <= out["iterations"]


def test_lbfgs_refuses_the_embedding_bag():
    model = build_classifier(SIZES, dim=4)
    with pytest.raises(ValueError, match="binary linear model only"):
        lbfgs.fit(model, (_batch(ROWS), tf.constant(LABELS)), (_batch(ROWS), tf.constant(LABELS)), {0: 1, 1: 1})


def test_without_early_stopping_the_fit_ends_at_the_minimum_even_when_validation_does_not_improve():
    l2 = 1e-2
    features, y = _batch(ROWS), tf.constant(LABELS)
    inverted = (features, tf.constant(1 - LABELS))      # validation AUC 0 at every check: never improves
    weights = {0: 1.0, 1: 1.0}
    want = LogisticRegression(l2, 500).fit(lbfgs.to_csr(features, SIZES), LABELS)

    def tables(model):
        return np.concatenate([model.get_layer(f"{g}_terms").table.numpy().ravel() for g in SIZES])

    stopped, converged = build_classifier(SIZES, l2=l2 / 2), build_classifier(SIZES, l2=l2 / 2)
    out_stopped = lbfgs.fit(stopped, (features, y), inverted, weights, check_every=1, patience=2,
                            progress=lambda m: None)
    out_converged = lbfgs.fit(converged, (features, y), inverted, weights, check_every=1, patience=2,
                              progress=lambda m: None, early_stopping=False)
    assert out_stopped["iterations"] < out_converged["iterations"] == want.n_iter_
    np.testing.assert_allclose(tables(converged), want.coef_, atol=1e-5)
    assert len(out_converged["checks"]) == want.n_iter_         # still checked and reported every iteration
    assert np.abs(tables(stopped) - want.coef_).max() > 1e-2
