"""Full-batch L-BFGS for the binary linear Keras classifier: its loss is convex, so instead of many noisy
mini-batch steps the whole training split is one batch and the weights go towards the minimum of

    class-weighted mean log loss + l2 / 2 * |w|^2

with the baselines' solver (``training.baselines.LogisticRegression``: numpy, float64, L-BFGS). The
tf.Transform output (each group's term ids and weights) becomes one sparse matrix whose columns are the
groups' vocabularies side by side, so the solution maps one to one onto the Keras term tables and bias.
Every ``check_every`` iterations the validation ROC AUC is computed and reported. With early stopping
the best weights are kept and the fit stops after ``patience`` checks without a better one; without it
(``training.train``'s default for this fit) the fit runs to the minimum, whose L2 was chosen by
cross-validation: early stopping on the small validation categories cost 0.005 ROC AUC there.
"""
import numpy as np

from training.baselines import Csr, LogisticRegression
from training.evaluate import roc_auc
from training.features import ids_name, weights_name


def to_csr(features, sizes):
    """{group_ids, group_weights: SparseTensor [n, k]} -> Csr [n, sum(sizes)] (groups side by side, in
    ``sizes`` order: {group: vocabulary size})."""
    n = int(next(iter(features.values())).dense_shape[0])
    rows, cols, vals, offset = [], [], [], 0
    for group, size in sizes.items():
        ids, weights = features[ids_name(group)], features[weights_name(group)]
        rows.append(ids.indices[:, 0].numpy())
        cols.append(ids.values.numpy() + offset)
        vals.append(weights.values.numpy().astype(np.float64))
        offset += size
    r, c, v = (np.concatenate(a) for a in (rows, cols, vals))
    order = np.lexsort((c, r))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    return Csr(indptr, c[order], v[order], offset)


def validation_log_loss(y, z):
    """Class-balanced mean log loss of decision values ``z`` (each class weighs half)."""
    losses = np.logaddexp(0.0, z) - y * z
    return float(np.mean([losses[y == c].mean() for c in (0, 1) if (y == c).any()]))


def fit_rows(x, y, weight, val_x, val_y, l2, *, max_iter=500, check_every=10, patience=3, progress=print,
             early_stopping=True, monitor="auc"):
    """The numpy core of ``fit``: logistic regression on ``Csr`` rows (weighted mean log loss +
    ``l2 / 2 * |w|^2``) with early stopping on the validation rows' ROC AUC. Returns (theta = (coef...,
    intercept) of the best check, summary dict as ``fit`` describes). ``early_stopping=False`` runs to
    convergence and returns the final weights (the checks are still reported)."""
    state = {"best": -np.inf, "best_theta": None, "best_iteration": 0, "since": 0, "checks": []}

    def check(iteration, theta, value):
        if iteration % check_every:
            return False
        z = val_x.dot(theta[:-1]) + theta[-1]
        auc = roc_auc(val_y, z) if monitor == "auc" else -validation_log_loss(val_y, z)
        state["checks"].append((iteration, auc))
        progress(f"L-BFGS iteration {iteration}: loss {value:.5f} val_auc {auc:.4f}")
        if auc > state["best"]:
            state.update(best=auc, best_theta=theta.copy(), best_iteration=iteration, since=0)
        else:
            state["since"] += 1
        return early_stopping and state["since"] >= patience

    model = LogisticRegression(l2, max_iter).fit(x, y, weight, callback=check)
    theta = np.append(model.coef_, model.intercept_)
    z = model.decision_function(val_x)
    final = roc_auc(val_y, z) if monitor == "auc" else -validation_log_loss(val_y, z)
    if not early_stopping or state["best_theta"] is None or final >= state["best"]:
        state.update(best=final, best_theta=theta, best_iteration=model.n_iter_)
    return state["best_theta"], {"iterations": int(model.n_iter_), "checks": state["checks"],
                                 "best_iteration": state["best_iteration"], "best_validation": float(state["best"]),
                                 "check_every": check_every}


def fit(classifier, train, validation, class_weight, *, max_iter=500, check_every=10, patience=3, progress=print,
        early_stopping=True):
    """Fit ``classifier`` (``training.model``'s binary linear model) in place, with the L2 penalty its term
    layers carry. ``train``/``validation``: (features, labels), each one batch. Returns {"iterations",
    "checks": [(iteration, validation AUC)], "best_iteration", "best_validation", "check_every"}."""
    from training.model import SparseTermLayer
    layers = [layer for layer in classifier.layers if isinstance(layer, SparseTermLayer)]
    logit = classifier.get_layer("logit")
    if any(layer.dim != 1 for layer in layers) or logit.kernel.trainable or logit.kernel.shape[-1] != 1:
        raise ValueError("lbfgs fits the binary linear model only; use --optimizer adam for --dim > 1 or --classes 3")
    if len({layer.l2 for layer in layers}) != 1:
        raise ValueError("lbfgs needs one L2 penalty for every term layer")
    l2 = 2.0 * layers[0].l2                       # Keras's l2 * |w|^2 is the objective's (2 l2) / 2 * |w|^2
    sizes = {layer.group: layer.vocab_size for layer in layers}
    y = train[1].numpy()
    weight = np.array([class_weight[int(c)] for c in y], dtype=np.float64)
    best, summary = fit_rows(to_csr(train[0], sizes), y, weight, to_csr(validation[0], sizes),
                             validation[1].numpy(), l2, max_iter=max_iter, check_every=check_every,
                             patience=patience, progress=progress, early_stopping=early_stopping)
    at = 0
    for layer in layers:
        layer.table.assign(best[at:at + layer.vocab_size].reshape(-1, 1).astype(np.float32))
        at += layer.vocab_size
    logit.bias.assign(np.array([best[-1]], dtype=np.float32))
    return summary
