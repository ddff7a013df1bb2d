"""Leave-one-category-out (training.loco) on small constructed data: a fold never lets the held-out
category's text or labels into its vocabulary, idf, fit or threshold; the fold features equal the numpy
twins of the model's features (NegationTfidf for words, TfidfBigramBaseline for the baseline and the
summary) fitted on the fold's training rows, and the character group the documented rule; the metric code
equals brute force."""
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from training import evaluate, loco
from training.baselines import NegationTfidf, TfidfBigramBaseline
from training.features import GROUP_WEIGHTS
from transforms.text import normalize_for_model

POS = ["great pan love it", "works well happy", "love the lid great", "excellent value would buy again",
       "not bad at all really good", "great quality and fast"]
NEG = ["broke fast awful", "not good at all", "terrible waste of money", "disappointed it never worked",
       "awful lid broke", "do not buy poor quality"]


def _reviews(seed=0):
    """Four categories of 24 reviews (12 negative); category D alone says "zqxunique" and "flimsy"."""
    rng = np.random.default_rng(seed)
    s, r, y, c = [], [], [], []
    for cat in "ABCD":
        for i in range(24):
            label = i % 2
            text = (POS if label else NEG)[rng.integers(0, 6)]
            extra = (" zqxunique flimsy" if cat == "D" else f" item{cat.lower()}")
            s.append(("Great" if label else "Awful") + (" zqxheadline" if cat == "D" else ""))
            r.append(text + extra)
            y.append(label)
            c.append(cat)
    obj = lambda v: np.asarray(v, dtype=object)  # noqa: E731
    return loco.Reviews(obj(s), obj(r), np.asarray(y, np.int64), obj(c), obj(c))


def _terms(tc, group, cols):
    return {tc.terms[group][i] for i in cols}


def test_a_term_of_the_held_out_category_only_is_in_no_vocabulary_of_its_fold():
    rev = _reviews()
    tc = loco.TermCounts(rev.summary, rev.review_text)
    train = np.flatnonzero(rev.category != "D")
    vocab = {g: _terms(tc, g, tc.vocabulary(g, train)[0]) for g in ("word", "char", "summary")}
    assert "zqxunique" in tc.terms["word"] and "zqxunique" not in vocab["word"]
    assert "zqxunique flimsy" not in vocab["word"] and "flimsy" not in vocab["word"]
    assert not any("zqx" in t for g in vocab for t in vocab[g])                       # no char n-gram of it either
    assert "<zqx" in tc.terms["char"] and "zqxheadline" in tc.terms["summary"]
    # ... while a fold that trains on D has them (the construction is not vacuous)
    with_d = np.flatnonzero(rev.category != "A")
    assert "zqxunique" in _terms(tc, "word", tc.vocabulary("word", with_d)[0])
    # idf: document frequencies and N over the training rows only
    cols, df, n = tc.vocabulary("word", train)
    assert n == train.size
    docs = [set(normalize_for_model(pa.array([f"{a} {b}"]))[0].as_py().split()) for a, b in
            zip(rev.summary[train], rev.review_text[train])]
    for term, d in zip((tc.terms["word"][i] for i in cols), df):
        if " " not in term and not term.startswith("NEG_"):
            assert d == sum(term in doc for doc in docs)


def _as_dicts(x, names):
    x = x.tocsr()
    return [{names[j]: v for j, v in zip(x.indices[x.indptr[i]:x.indptr[i + 1]], x.data[x.indptr[i]:x.indptr[i + 1]])}
            for i in range(x.shape[0])]


def _twin_dicts(twin, s, r):
    rows, terms = twin.transform(s, r), twin.vocabulary_.to_pylist()
    return [{terms[j]: v for j, v in zip(rows.indices[rows.indptr[i]:rows.indptr[i + 1]],
                                         rows.values[rows.indptr[i]:rows.indptr[i + 1]])} for i in range(rows.n_rows)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert [g[t] for t in w] == pytest.approx(list(w.values()), rel=1e-9)


@pytest.mark.parametrize("group", ["word", "baseline", "summary", "char"])
def test_fold_features_equal_the_twins_fitted_on_the_training_rows(group):
    rev = _reviews(1)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    train = np.flatnonzero(rev.category != "B")
    s, r = rev.summary[train], rev.review_text[train]
    name = "word" if group == "baseline" else group
    x, cols = tc.group_rows(name, train, negation=group != "baseline")
    got = _as_dicts(x, [tc.terms[name][c] for c in cols])
    if group == "char":         # the documented rule (as tests/unit/test_training_features.py checks TF against)
        docs = [[g for t in normalize_for_model(pa.array([f"{a} {b}"]))[0].as_py().split() for g in loco.char_grams(t)]
                for a, b in zip(rev.summary, rev.review_text)]
        df = Counter(g for i in train for g in set(docs[i]))
        vocab = {g for g, d in df.items() if d >= 2}
        want = []
        for doc in docs:
            w = {g: (1 + math.log(k)) * (math.log((1 + train.size) / (1 + df[g])) + 1)
                 for g, k in Counter(doc).items() if g in vocab}
            norm = math.sqrt(sum(v * v for v in w.values())) or 1.0
            want.append({g: v / norm for g, v in w.items()})
        assert loco.char_grams("pan") == ["<pa", "pan", "an>", "<pan", "pan>", "<pan>"]
    else:
        twin = (NegationTfidf if group == "word" else TfidfBigramBaseline)()
        if group == "summary":
            twin.fit_features(s, [""] * len(s))
            want = _twin_dicts(twin, rev.summary, [""] * len(rev))
        else:
            twin.fit_features(s, r)
            want = _twin_dicts(twin, rev.summary, rev.review_text)
    _assert_same(got, want)


def test_model_features_are_the_groups_side_by_side_at_their_weights():
    rev = _reviews(2)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    train = np.flatnonzero(rev.category != "C")
    x = tc.fold_features("model", train).toarray()
    parts = [tc.group_rows(g, train)[0].toarray() * GROUP_WEIGHTS[g] for g in ("word", "char", "summary")]
    np.testing.assert_allclose(x, np.hstack(parts))
    norms = [np.linalg.norm(p, axis=1) for p in parts]
    for p_norm, g in zip(norms, ("word", "char", "summary")):
        assert set(np.round(p_norm[p_norm > 0], 9)) == {GROUP_WEIGHTS[g]}


def test_the_held_out_category_has_no_influence_on_its_fold():
    """Replace half of the held-out category's texts and flip all its labels: every procedure's threshold
    and the scores of the untouched held-out reviews stay exactly the same."""
    rev = _reviews(3)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    base = loco.fold(tc, rev, "D", inner_folds=2, unweighted=True, progress=lambda _: None)
    held = np.flatnonzero(rev.category == "D")
    changed = loco.Reviews(rev.summary.copy(), rev.review_text.copy(), rev.label.copy(), rev.category, rev.source)
    changed.label[held] = 1 - changed.label[held]
    changed.review_text[held[::2]] = "zqxother words flimsy great great terrible"
    changed.summary[held[::2]] = "zqxother"
    tc2 = loco.TermCounts(changed.summary, changed.review_text)
    other = loco.fold(tc2, changed, "D", inner_folds=2, unweighted=True, progress=lambda _: None)
    assert base.keys() == other.keys() and len(base) == 2 + 2 * 3 + 3
    untouched = np.arange(held.size) % 2 == 1
    for proc in base:
        assert base[proc][1] == other[proc][1], proc                              # threshold
        np.testing.assert_allclose(base[proc][0][untouched], other[proc][0][untouched], rtol=1e-9, atol=1e-12)
    # and a training category's change does move them (the check is not vacuous)
    moved = loco.Reviews(rev.summary, rev.review_text, rev.label.copy(), rev.category, rev.source)
    moved.label[rev.category == "A"] = 1 - moved.label[rev.category == "A"]
    third = loco.fold(tc, moved, "D", inner_folds=2, progress=lambda _: None)
    assert any(not np.allclose(base[p][0], third[p][0]) for p in third)


def test_the_logistic_fit_minimises_the_baselines_objective():
    from training.baselines import Csr, LogisticRegression
    rev = _reviews(4)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    x = tc.fold_features("baseline", np.arange(len(rev)))
    w, b = loco.fit_logistic(x, rev.label, 1e-3)
    ref = LogisticRegression(1e-3, 500).fit(Csr(x.indptr, x.indices, x.data, x.shape[1]), rev.label,
                                            (len(rev) / (2.0 * np.bincount(rev.label)))[rev.label])
    np.testing.assert_allclose(w, ref.coef_, atol=1e-4)
    assert b == pytest.approx(ref.intercept_, abs=1e-4)


def test_threshold_for_categories_is_the_brute_force_best_mean_macro_f1():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1).round(2)
    cats = np.array(list("abc"))[rng.integers(0, 3, 300)]
    cats[:40] = "a"
    y[cats == "b"] = np.where(rng.random((cats == "b").sum()) < 0.8, 1, y[cats == "b"])   # a skewed category
    t = loco.threshold_for_categories(y, p, cats)
    values = np.unique(p)
    candidates = (values[:-1] + values[1:]) / 2
    mean_f1 = lambda th: np.mean([evaluate.macro_f1(y[cats == c], (p[cats == c] >= th).astype(int))  # noqa: E731
                                  for c in "abc"])
    best = max(mean_f1(c) for c in candidates)
    assert mean_f1(t) == pytest.approx(best, abs=1e-12)
    assert loco.choose("cv-pooled", y, p, cats) == evaluate.choose_threshold(y, p)
    assert loco.choose("0.5", y, p, cats) == 0.5


def test_per_fold_metrics_and_paired_differences_equal_brute_force():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    a, b = rng.random(200) + 0.4 * y, rng.random(200) + 0.2 * y
    auc, f1, neg_recall = loco.metrics_at(y, a, 0.7)
    pairs = [(i, j) for i in np.flatnonzero(y == 1) for j in np.flatnonzero(y == 0)]
    assert auc == pytest.approx(np.mean([1.0 if a[i] > a[j] else 0.5 if a[i] == a[j] else 0.0 for i, j in pairs]))
    pred = a >= 0.7
    f1s = []
    for cls in (0, 1):
        tp = np.sum((pred == cls) & (y == cls))
        f1s.append(2 * tp / (np.sum(pred == cls) + np.sum(y == cls)))
    assert f1 == pytest.approx(np.mean(f1s))
    assert neg_recall == pytest.approx(np.sum(~pred & (y == 0)) / np.sum(y == 0))
    (d_auc, auc_ci), (d_f1, f1_ci) = loco.paired_difference(y, a, 0.7, b, 0.6, n=200)
    assert d_auc == pytest.approx(evaluate.roc_auc(y, a) - evaluate.roc_auc(y, b))
    assert d_f1 == pytest.approx(f1 - evaluate.macro_f1(y, (b >= 0.6).astype(int)))
    assert auc_ci[0] <= d_auc <= auc_ci[1] and f1_ci[0] <= d_f1 <= f1_ci[1]
    mean, ci = loco.across_folds([0.1, 0.2, 0.3, 0.6])
    assert mean == pytest.approx(0.3) and 0.1 <= ci[0] < 0.3 < ci[1] <= 0.6


def test_validation_and_inner_groups_follow_the_stable_hash_and_cover_the_training_categories():
    cats = {f"cat{i}" for i in range(12)}
    groups = loco.inner_groups(cats, 3)
    assert sorted(c for g in groups for c in g) == sorted(cats) and all(len(g) == 4 for g in groups)
    assert loco.inner_groups(cats, 3) == groups
    assert len(loco.validation_categories(cats, 13)) == 2 and set(loco.validation_categories(cats, 13)) <= cats


def test_read_folders_merges_a_category_across_schemas_and_folders(tmp_path):
    import gzip
    import json
    a, b = tmp_path / "amazon" / "reviews", tmp_path / "amazon2023" / "reviews"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    with gzip.open(a / "AMAZON_FASHION.jsonl.gz", "wt") as fh:
        for i, r in enumerate((5.0, 1.0, 3.0, 1.0)):
            fh.write(json.dumps({"reviewerID": f"u{i % 3}", "asin": "x", "unixReviewTime": 10 + i % 3,
                                 "overall": r, "summary": "s", "reviewText": f"t{i}"}) + "\n")
    with gzip.open(b / "Amazon_Fashion.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"rating": 2.0, "title": "bad", "text": "awful", "user_id": "v", "parent_asin": "p",
                             "asin": "q", "timestamp": 5000}) + "\n")
    rev = loco.read_folders([str(tmp_path / "amazon"), str(tmp_path / "amazon2023")])
    # row 3 repeats row 0's key (u0, x, 10) and is dropped; the 3-star row has no polarity
    assert list(rev.label) == [1, 0, 0] and set(rev.category) == {"AMAZON_FASHION"}
    assert list(rev.review_text) == ["t0", "t1", "awful"] and rev.source[-1] == "amazon2023/Amazon_Fashion"


def test_a_later_run_adds_a_candidate_to_the_saved_folds_and_keeps_the_rest(tmp_path):
    rev = _reviews(4)
    first = loco.run(rev, str(tmp_path), categories=["C", "D"], inner_folds=2, n_boot=20, progress=lambda _: None)
    saved = {c: dict(np.load(tmp_path / "folds" / f"{c}.npz")) for c in ("C", "D")}
    assert not any("/unweighted" in k for s in saved.values() for k in s)
    loco.run(rev, str(tmp_path), categories=["C", "D"], inner_folds=2, unweighted=True, n_boot=20,
             progress=lambda _: None)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    for c in ("C", "D"):
        now = dict(np.load(tmp_path / "folds" / f"{c}.npz"))
        assert set(saved[c]) < set(now)
        for k, v in saved[c].items():
            np.testing.assert_array_equal(now[k], v)               # what was there is kept as it was
        want = loco.fold(tc, rev, c, inner_folds=2, unweighted=True, progress=lambda _: None)
        added = {k.split("|")[0]: (v, float(k.split("|")[1])) for k, v in now.items() if k not in saved[c]}
        assert set(added) == {f"model/refit/{r}/unweighted" for r in loco.THRESHOLD_RULES}
        for proc, (p, t) in added.items():
            np.testing.assert_allclose(p, want[proc][0], rtol=1e-9, atol=1e-12)
            assert t == want[proc][1]
    assert first["data"]["folds_done"] == ["C", "D"]


def test_nb_scaling_equals_the_log_count_ratio_term_by_term():
    rng = np.random.default_rng(5)
    dense = rng.random((7, 5)) * (rng.random((7, 5)) < 0.5)
    dense[6] = 0.0                                                  # an empty row stays empty
    y = np.array([1, 0, 1, 1, 0, 0])                                # labels of the first 6 (fit) rows
    got = loco.nb_scaled(sp.csr_matrix(dense), 6, y).toarray()
    present = dense[:6] > 0
    p = present[y == 1].sum(axis=0) + 1.0
    q = present[y == 0].sum(axis=0) + 1.0
    r = np.log((p / p.sum()) / (q / q.sum()))
    want = dense * r
    norms = np.linalg.norm(want, axis=1, keepdims=True)
    want = np.divide(want, norms, out=np.zeros_like(want), where=norms > 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_the_nb_ensemble_is_the_model_logit_plus_the_nb_twins_and_never_sees_the_held_out_category():
    rev = _reviews(6)
    tc = loco.TermCounts(rev.summary, rev.review_text)
    fit, score = rev.category != "D", rev.category == "D"
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    ens = loco.fit_and_score(tc, "model+nb", fit, score, rev.label)
    model = loco.fit_and_score(tc, "model", fit, score, rev.label)
    fit_idx, score_idx = np.flatnonzero(fit), np.flatnonzero(score)
    rows = np.concatenate([fit_idx, score_idx])
    x = sp.hstack([loco.nb_scaled(tc.group_rows(g, fit_idx, rows)[0], fit_idx.size, rev.label[fit_idx])
                   * GROUP_WEIGHTS[g] for g in ("word", "char", "summary")], format="csr")
    w, b = loco.fit_logistic(x[:fit_idx.size], rev.label[fit_idx], loco.NB_L2, max_iter=loco.MAX_ITER)
    np.testing.assert_allclose(logit(ens) - logit(model), x[fit_idx.size:] @ w + b, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ens, model)
    # the held-out category's labels and texts change nothing of its fold's candidate
    held = np.flatnonzero(score)
    changed = loco.Reviews(rev.summary.copy(), rev.review_text.copy(), rev.label.copy(), rev.category, rev.source)
    changed.label[held] = 1 - changed.label[held]
    changed.review_text[held[::2]] = "zqxother words flimsy great great terrible"
    a = loco.fold(tc, rev, "D", inner_folds=2, candidates_only=True, nb_ensemble=True, progress=lambda _: None)
    b_ = loco.fold(loco.TermCounts(changed.summary, changed.review_text), changed, "D", inner_folds=2,
                   candidates_only=True, nb_ensemble=True, progress=lambda _: None)
    assert set(a) == {f"model+nb/refit/{r}" for r in loco.THRESHOLD_RULES} == set(b_)
    untouched = np.arange(held.size) % 2 == 1
    for proc in a:
        assert a[proc][1] == b_[proc][1]
        np.testing.assert_allclose(a[proc][0][untouched], b_[proc][0][untouched], rtol=1e-9, atol=1e-12)
