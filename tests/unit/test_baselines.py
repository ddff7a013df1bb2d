"""Unit tests for training.baselines: the sparse rows, the logistic regression (against a dense numpy
oracle of its objective's gradient), the tokenisation, and both baselines on a synthetic set whose
label is carried by a few words, with label noise."""
import math
import re

import numpy as np
import pyarrow as pa
import pytest

from training import baselines as bl
from training.evaluate import roc_auc

POSITIVE_WORDS = ("great", "love", "excellent", "perfect")
NEGATIVE_WORDS = ("awful", "broken", "terrible", "refund")
SYLLABLES = ("ba", "ke", "lo", "mu", "ri", "sa", "du", "vi", "ne", "po", "fa", "gi", "ho", "ju", "zy", "qe", "xo")
NEUTRAL_WORDS = tuple(a + b for a in SYLLABLES for b in SYLLABLES)    # 289 made-up words, letters only


def synthetic_reviews(n, seed=0, positive_share=0.5, noise=0.02):
    """(summaries, review texts, labels): neutral filler plus one or two words of the label's side;
    ``noise`` of the labels flipped afterwards. Capitals, punctuation and a tag exercise the
    normalisation."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_share).astype(np.int64)
    summaries, reviews = [], []
    for label in y:
        side = POSITIVE_WORDS if label else NEGATIVE_WORDS
        words = list(rng.choice(NEUTRAL_WORDS, size=rng.integers(5, 20)))
        for word in rng.choice(side, size=rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(word))
        reviews.append(" ".join(words[1:]).capitalize() + "!<br/>")
        summaries.append(words[0].upper())
    flip = rng.random(n) < noise
    return summaries, reviews, np.where(flip, 1 - y, y)


def _words(text):
    """Oracle tokeniser, enough for the synthetic texts: runs of letters, lower case, tags dropped."""
    return set(re.findall(r"[a-z']+", re.sub(r"<[^>]*>", " ", text.lower())))


@pytest.fixture(scope="module")
def data():
    s, r, y = synthetic_reviews(1500, seed=1)
    return (s[:1000], r[:1000], y[:1000]), (s[1000:], r[1000:], y[1000:])


# ---------------------------------------------------------------------------------------------------
# sparse rows and logistic regression

def _random_csr(rng, n_rows, n_cols, density=0.2):
    dense = rng.normal(size=(n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < density)
    dense[3] = 0                                        # an empty row in the middle
    dense[-1] = 0                                       # and one at the end
    rows, cols = np.nonzero(dense)
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n_rows))]
    return bl.Csr(indptr, cols, dense[rows, cols], n_cols), dense


def test_csr_products_match_dense():
    rng = np.random.default_rng(0)
    x, dense = _random_csr(rng, 12, 9)
    w, r = rng.normal(size=9), rng.normal(size=12)
    np.testing.assert_allclose(x.dot(w), dense @ w, atol=1e-12)
    np.testing.assert_allclose(x.tdot(r), dense.T @ r, atol=1e-12)
    np.testing.assert_array_equal(x.toarray(), dense)


def test_csr_from_counts():
    x = bl.Csr.from_counts(np.array([0, 0, 2, 0, 2]), np.array([3, 1, 0, 3, 0]), 4, 5)
    assert x.toarray().tolist() == [[0, 1, 0, 2, 0], [0] * 5, [2, 0, 0, 0, 0], [0] * 5]


def test_logistic_regression_reaches_the_optimum():
    """At the solution the gradient of weighted mean log loss + l2/2 |w|^2, computed densely here,
    vanishes; a column no row uses keeps weight 0."""
    rng = np.random.default_rng(1)
    x, dense = _random_csr(rng, 200, 15, density=0.4)
    dense[:, 7] = 0
    x, dense = _random_csr_from_dense(dense)
    y = (dense @ rng.normal(size=15) + rng.normal(size=200) > 0).astype(float)
    weight = rng.uniform(0.5, 2.0, 200)
    model = bl.LogisticRegression(l2=1e-2, tol=1e-9).fit(x, y, weight)
    p = 1 / (1 + np.exp(-(dense @ model.coef_ + model.intercept_)))
    share = weight / weight.sum()
    grad_w = dense.T @ (share * (p - y)) + 1e-2 * model.coef_
    grad_b = share @ (p - y)
    assert np.max(np.abs(grad_w)) < 1e-6 and abs(grad_b) < 1e-6
    assert model.coef_[7] == 0.0
    np.testing.assert_allclose(model.predict_proba(x), p, atol=1e-12)


def _random_csr_from_dense(dense):
    rows, cols = np.nonzero(dense)
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=dense.shape[0]))]
    return bl.Csr(indptr, cols, dense[rows, cols], dense.shape[1]), dense


# ---------------------------------------------------------------------------------------------------
# tokenisation

def test_tokenize_joins_normalises_and_skips_empty_texts():
    tokens, doc, n = bl.tokenize(["Great!", None, "", None], ["It <b>works</b> &amp; 100% fine", "ok", "", None])
    assert n == 4
    assert tokens.to_pylist() == ["great", "it", "works", "fine", "ok"]
    assert doc.tolist() == [0, 0, 0, 0, 1]


def test_tokenize_accepts_arrow_and_rejects_length_mismatch():
    tokens, doc, _ = bl.tokenize(pa.chunked_array([["a b"], ["c"]]), pa.array(["d", None]))
    assert tokens.to_pylist() == ["a", "b", "d", "c"] and doc.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="summaries"):
        bl.tokenize(["a"], ["b", "c"])


def test_bigrams_stay_inside_documents():
    tokens, doc, _ = bl.tokenize(["a b", "c"], ["", "d e"])
    terms, term_doc = bl._with_bigrams(tokens, doc)
    assert terms.to_pylist() == ["a", "b", "c", "d", "e", "a b", "c d", "d e"]
    assert term_doc.tolist() == [0, 0, 1, 1, 1, 0, 1, 1]


# ---------------------------------------------------------------------------------------------------
# both baselines

BASELINES = [bl.SeedsBaseline, bl.TfidfBigramBaseline]


@pytest.mark.parametrize("make", BASELINES)
def test_baselines_learn_the_sentiment_words(make, data):
    (s, r, y), (s_test, r_test, y_test) = data
    model = make().fit(s, r, y)
    scores = model.predict_proba(s_test, r_test)
    assert scores.dtype == np.float64 and scores.shape == (len(y_test),)
    assert np.all((scores > 0) & (scores < 1))
    assert roc_auc(y_test, scores) > 0.95


@pytest.mark.parametrize("make", BASELINES)
def test_baselines_are_deterministic(make, data):
    (s, r, y), (s_test, r_test, _) = data
    first = make().fit(s, r, y).predict_proba(s_test, r_test)
    np.testing.assert_array_equal(first, make().fit(s, r, y).predict_proba(s_test, r_test))


@pytest.mark.parametrize("make", BASELINES)
def test_words_seen_only_outside_training_change_nothing(make, data):
    (s, r, y), (s_test, r_test, _) = data
    model = make().fit(s, r, y)
    unseen = [text + " zyxwv qwvzx" for text in r_test]
    np.testing.assert_allclose(model.predict_proba(s_test, unseen), model.predict_proba(s_test, r_test),
                               rtol=0, atol=1e-12)


def test_seeds_idf_comes_from_the_training_rows(data):
    (s, r, y), (s_test, r_test, _) = data
    model = bl.SeedsBaseline().fit(s, r, y)
    kept = model.training_rows_
    n = kept.size
    docs_with_great = sum("great" in _words(s[i] + " " + r[i]) for i in kept)
    great = model.bucket("great")
    assert model.document_frequency_[great] == docs_with_great
    assert model.idf_[great] == pytest.approx(math.log((n + 1) / (docs_with_great + 1)))
    unseen = model.bucket("zyxwv")
    assert model.document_frequency_[unseen] == 0       # its bucket holds no training word
    assert model.classifier_.coef_[unseen] == 0.0
    idf = model.idf_.copy()
    model.predict_proba(s_test + ["zyxwv great"], r_test + [""])
    np.testing.assert_array_equal(model.idf_, idf)      # scoring learns nothing


def test_seeds_drop_stop_words():
    s, r, y = synthetic_reviews(400, seed=2)
    model = bl.SeedsBaseline().fit(s, r, y)
    padded = [text + " The not NO very don t" for text in r]
    np.testing.assert_array_equal(model.transform(s, padded).indices, model.transform(s, r).indices)
    np.testing.assert_array_equal(model.predict_proba(s, padded), model.predict_proba(s, r))
    # a whole contraction is not in Spark's list: Spark's Tokenizer keeps "don't" and so do we
    _, keep = model._buckets(bl.tokenize(["I don't"], [""])[0])
    assert keep.tolist() == [False, True]


def test_seeds_undersample_the_majority_with_the_seed():
    s, r, y = synthetic_reviews(900, seed=3, positive_share=0.8)
    a = bl.SeedsBaseline(seed=0).fit(s, r, y)
    minority = int(min((y == 0).sum(), (y == 1).sum()))
    assert a.label_counts_.tolist() == [minority, minority]
    assert np.array_equal(np.sort(a.training_rows_), a.training_rows_)
    assert set(np.flatnonzero(y == 0)) <= set(a.training_rows_.tolist())   # the minority is all kept
    np.testing.assert_array_equal(bl.SeedsBaseline(seed=0).fit(s, r, y).training_rows_, a.training_rows_)
    assert not np.array_equal(bl.SeedsBaseline(seed=1).fit(s, r, y).training_rows_, a.training_rows_)


def test_tfidf_vocabulary_comes_from_the_training_rows(data):
    (s, r, y), (s_test, r_test, _) = data
    s_train = list(s) + ["unique"]                      # "unique" in one training document only
    r_train = list(r) + ["zzgood zzgood"]
    model = bl.TfidfBigramBaseline(min_df=2).fit(s_train, r_train, np.r_[y, 1])
    assert model.vocabulary_id("great") is not None
    assert model.vocabulary_id("unique") is None        # document frequency 1 < min_df
    assert model.vocabulary_id("zzgood zzgood") is None
    assert model.vocabulary_id("zyxwv") is None         # never in training
    assert model.vocabulary_.to_pylist() == sorted(model.vocabulary_.to_pylist())
    docs_with_great = sum("great" in _words(a + " " + b) for a, b in zip(s_train, r_train))
    great = model.vocabulary_id("great")
    assert model.document_frequency_[great] == docs_with_great
    n = len(s_train)
    assert model.idf_[great] == pytest.approx(math.log((1 + n) / (1 + docs_with_great)) + 1)
    assert bl.TfidfBigramBaseline(min_df=1).fit(s_train, r_train, np.r_[y, 1]).vocabulary_id("unique") is not None


def test_tfidf_rows_are_unit_length_and_bigrams_count(data):
    (s, r, y), _ = data
    model = bl.TfidfBigramBaseline().fit(s, r, y)
    x = model.transform(["Great", "zyxwv"], ["love it", ""])
    dense = x.toarray()
    assert np.linalg.norm(dense[0]) == pytest.approx(1.0)
    assert np.all(dense[1] == 0)                        # nothing known: an all-zero row, no NaN
    assert any(" " in term for term in model.vocabulary_.to_pylist())
    negative, positive = model.top_terms(5)
    assert {t for t, _ in positive} & set(POSITIVE_WORDS)
    assert {t for t, _ in negative} & set(NEGATIVE_WORDS)


def test_tfidf_keeps_the_most_frequent_terms():
    s, r, y = synthetic_reviews(300, seed=4)
    model = bl.TfidfBigramBaseline(max_features=50).fit(s, r, y)
    full = bl.TfidfBigramBaseline().fit(s, r, y)
    assert len(model.vocabulary_) == 50
    cut = np.sort(full.document_frequency_)[::-1][49]
    assert model.document_frequency_.min() >= cut


def test_tfidf_balanced_class_weights():
    _, _, y = synthetic_reviews(100, seed=5, positive_share=0.8)
    weight = bl.TfidfBigramBaseline()._sample_weight(y)
    assert weight[y == 0].sum() == pytest.approx(weight[y == 1].sum())


@pytest.mark.parametrize("make", BASELINES)
def test_l2_chosen_on_validation(make, data):
    (s, r, y), (s_val, r_val, y_val) = data
    model = make(l2=(1e-3, 1e-1, 10.0)).fit(s, r, y, validation=(s_val, r_val, y_val))
    assert sorted(model.validation_auc_) == [1e-3, 1e-1, 10.0]
    assert model.validation_auc_[model.l2_] == max(model.validation_auc_.values())
    assert model.classifier_.l2 == model.l2_
    with pytest.raises(ValueError, match="validation"):
        make(l2=(1e-3, 1e-1)).fit(s, r, y)


def test_labels_are_checked():
    with pytest.raises(ValueError, match="nulls"):
        bl.SeedsBaseline().fit(["a", "b"], ["c", "d"], pa.array([1, None], type=pa.int8()))
    with pytest.raises(ValueError, match="0 .negative. and 1"):
        bl.SeedsBaseline().fit(["a", "b"], ["c", "d"], [1, 2])
    with pytest.raises(ValueError, match="both classes"):
        bl.TfidfBigramBaseline().fit(["a", "b"], ["c", "d"], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        bl.TfidfBigramBaseline().fit(["a", "b", "c"], ["c", "d", "e"], [1, 0])
