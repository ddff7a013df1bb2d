"""Two bag-of-words baselines for the sentiment model, fitted on the training split only.

* ``SeedsBaseline``: the seeds' Spark pipeline (Tokenizer -> StopWordsRemover -> HashingTF -> IDF ->
  LogisticRegression), minus its leak: the IDF is fitted on the training split, never on the data it
  is scored on. Like the seeds, it undersamples the majority class of the training split to the size of
  the minority class (seeded, so deterministic) before fitting anything, IDF included.
* ``TfidfBigramBaseline``: the usual strong linear text baseline: a vocabulary of unigrams and bigrams
  with a minimum document frequency, sublinear tf-idf, L2-normalised rows, logistic regression with
  balanced class weights (all training rows kept).

Both read ``summary + " " + reviewText`` through ``transforms.text.normalize_for_model`` (the text the
model sees) and split it on spaces. ``fit(summary, review, y)`` takes the training split with binary
labels (``transforms.labels.polarity``: 1 positive, 0 negative; neutral rows dropped beforehand);
``predict_proba(summary, review)`` scores any split and returns P(positive) as a float64 numpy array.
Texts may be Arrow arrays or sequences of str/None.

The default ``l2`` values were chosen once by validation ROC AUC on a random 70/15/15 split of the real
reviews (``../shared/data/amazon``): 1e-2 for the seeds' model (tried 1e-6 .. 1) and 1e-6 for the
TF-IDF model (tried 1e-7 .. 1e-3). To choose again on your own split, give ``l2`` several values and
pass ``validation=`` to ``fit``.

Both are numpy (no TensorFlow): rows are sparse (``Csr``), the logistic regression minimises the
weighted mean log loss plus ``l2 / 2 * |w|^2`` (bias not penalised) with full-batch L-BFGS. The problem
is convex, so the result does not depend on batch order or on a seed, and each L-BFGS step is two
vectorised passes over the non-zeros.

Deliberate differences from the seeds' Spark run: the IDF is not fitted on the test rows; plain L2
instead of their elastic net (regParam 0.1, elasticNetParam 0.1) and no internal feature
standardisation; the label is the star rating, not TextBlob polarity; the text normalisation is ours.
"""
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.evaluate import roc_auc
from transforms.keys import hash_strings
# STOP_WORDS: the seeds' stop-word list (Spark ML's English default; described in transforms.text)
from transforms.text import NEGATION_PREFIX, NEGATION_SCOPE, NEGATORS, STOP_WORDS, normalize_for_model


# --------------------------------------------------------------------------------------- sparse rows

@dataclass(frozen=True)
class Csr:
    """Compressed sparse rows: row ``i`` holds ``values[indptr[i]:indptr[i+1]]`` at columns
    ``indices[indptr[i]:indptr[i+1]]``."""
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_cols: int

    @property
    def n_rows(self):
        return self.indptr.size - 1

    @property
    def row_lengths(self):
        return np.diff(self.indptr)

    def _scipy(self):
        """The same matrix and its transpose as scipy CSR matrices, built once per instance: their
        compiled products are 3-6x faster than numpy gathers (L-BFGS evaluates both on every step)."""
        cached = self.__dict__.get("_sp")
        if cached is None:
            import scipy.sparse as sp
            m = sp.csr_matrix((self.values, self.indices, self.indptr), shape=(self.n_rows, self.n_cols))
            cached = (m, m.T.tocsr())
            object.__setattr__(self, "_sp", cached)  # a cache, not state: equality and hashing ignore it
        return cached

    def dot(self, w):
        """``X @ w``."""
        return self._scipy()[0] @ np.asarray(w, dtype=np.float64)

    def tdot(self, r):
        """``X.T @ r``."""
        return self._scipy()[1] @ np.asarray(r, dtype=np.float64)

    def unit_rows(self):
        """The same rows scaled to unit L2 length (all-zero rows stay all-zero)."""
        lengths = self.row_lengths
        norms = np.sqrt(np.bincount(np.repeat(np.arange(self.n_rows), lengths), weights=self.values ** 2,
                                    minlength=self.n_rows))
        norms[norms == 0] = 1.0
        return Csr(self.indptr, self.indices, self.values / np.repeat(norms, lengths), self.n_cols)

    def toarray(self):
        dense = np.zeros((self.n_rows, self.n_cols))
        dense[np.repeat(np.arange(self.n_rows), self.row_lengths), self.indices] = self.values
        return dense

    @classmethod
    def from_counts(cls, rows, cols, n_rows, n_cols):
        """Occurrences (row, col) -> their counts, as rows sorted by column."""
        keys, counts = np.unique(rows.astype(np.int64) * n_cols + cols, return_counts=True)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // n_cols, minlength=n_rows), out=indptr[1:])
        return cls(indptr, keys % n_cols, counts.astype(np.float64), n_cols)


# ------------------------------------------------------------------------------- logistic regression

def _dot(a, b):
    """Inner product of two vectors in this thread. ``a @ b`` goes to a multithreaded BLAS whose
    threads spin when the cores are busy: 20x slower L-BFGS steps seen on a shared 2-core machine."""
    return float(np.einsum("i,i->", a, b))


def minimize_lbfgs(fun, x0, max_iter, tol, memory=10, callback=None):
    """Minimise a smooth convex ``fun(x) -> (value, gradient)`` with L-BFGS and Armijo backtracking.
    Stops when the largest gradient component is below ``tol``, the relative decrease of the value
    falls below ``1e-10``, after ``max_iter`` iterations, or when ``callback(iteration, x, value)``
    returns True. Returns (x, iterations)."""
    x = x0
    f, g = fun(x)
    history = deque(maxlen=memory)                    # (s, y, 1 / s.y)
    for iteration in range(1, max_iter + 1):
        if np.max(np.abs(g)) <= tol:
            return x, iteration - 1
        q = g.copy()
        scratch = np.empty_like(q)                    # in-place updates: no temporaries per vector op
        alphas = []
        for s, y, rho in reversed(history):
            a = rho * _dot(s, q)
            q -= np.multiply(y, a, out=scratch)
            alphas.append(a)
        if history:
            s, y, _ = history[-1]
            q *= _dot(s, y) / _dot(y, y)
        else:
            q /= max(1.0, math.sqrt(_dot(g, g)))
        for (s, y, rho), a in zip(history, reversed(alphas)):
            q += np.multiply(s, a - rho * _dot(y, q), out=scratch)
        direction, slope = -q, -_dot(g, q)
        if slope >= 0:                                # not a descent direction: restart from -g
            history.clear()
            direction, slope = -g, -_dot(g, g)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        sy = _dot(s, y)
        if sy > 1e-12 * _dot(y, y):
            history.append((s, y, 1.0 / sy))
        decrease = (f - f_new) / max(abs(f), abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        if decrease < 1e-10 or (callback is not None and callback(iteration, x, f)):
            return x, iteration
    return x, max_iter


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LogisticRegression:
    """Binary logistic regression on ``Csr`` rows: weighted mean log loss + ``l2 / 2 * |w|^2``."""

    def __init__(self, l2=1e-4, max_iter=300, tol=1e-6):
        if l2 < 0 or max_iter < 1:
            raise ValueError("l2 must be >= 0 and max_iter >= 1")
        self.l2, self.max_iter, self.tol = l2, max_iter, tol

    def fit(self, x, y, sample_weight=None, start=None, callback=None):
        """``start``: initial (coef..., intercept), e.g. a solution for another ``l2``. Columns with no
        non-zero in ``x`` get weight 0 (their exact optimum) and are left out of the optimisation, so
        its vectors are as long as the columns the training rows use, not ``n_cols``. ``callback(iteration,
        theta, loss)`` is called after each iteration with the full (coef..., intercept); True stops the fit."""
        y = np.asarray(y, dtype=np.float64)
        weight = np.ones(x.n_rows) if sample_weight is None else np.asarray(sample_weight, np.float64)
        weight = weight / weight.sum()
        used = np.flatnonzero(np.bincount(x.indices, minlength=x.n_cols))
        compact = np.zeros(x.n_cols, dtype=np.int64)
        compact[used] = np.arange(used.size)
        x_used = Csr(x.indptr, compact[x.indices], x.values, used.size)
        l2 = self.l2

        def loss_and_gradient(theta):
            w, b = theta[:-1], theta[-1]
            z = x_used.dot(w) + b
            loss = _dot(weight, np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * _dot(w, w)
            residual = weight * (_sigmoid(z) - y)
            return loss, np.append(x_used.tdot(residual) + l2 * w, residual.sum())

        if start is None:
            prior = _dot(weight, y)
            theta = np.zeros(used.size + 1)
            theta[-1] = math.log(prior / (1.0 - prior))  # the weighted class prior
        else:
            theta = np.append(np.asarray(start[:-1], dtype=np.float64)[used], start[-1])
        def full(theta_used):
            out = np.zeros(x.n_cols + 1)
            out[used], out[-1] = theta_used[:-1], theta_used[-1]
            return out

        theta, self.n_iter_ = minimize_lbfgs(loss_and_gradient, theta, self.max_iter, self.tol, callback=None if
                                             callback is None else lambda i, t, f: callback(i, full(t), f))
        self.coef_ = np.zeros(x.n_cols)
        self.coef_[used] = theta[:-1]
        self.intercept_ = float(theta[-1])
        return self

    def decision_function(self, x):
        return x.dot(self.coef_) + self.intercept_

    def predict_proba(self, x):
        """P(y = 1) per row."""
        return _sigmoid(self.decision_function(x))


# ------------------------------------------------------------------------------------------- text

def _strings(values):
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(values, type=pa.string(), from_pandas=True)


def _labels(y):
    if isinstance(y, (pa.Array, pa.ChunkedArray)):
        if y.null_count:
            raise ValueError("labels hold nulls (neutral reviews?): drop those rows first")
        y = y.to_numpy(zero_copy_only=False)
    y = np.asarray(y)
    if y.ndim != 1 or not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be a one-dimensional array of 0 (negative) and 1 (positive)")
    if np.unique(y).size < 2:
        raise ValueError("labels must hold both classes")
    return y.astype(np.int64)


def tokenize(summary, review):
    """``normalize_for_model(summary + " " + review)`` split on spaces -> (tokens as an Arrow string
    array, document id of each token as int64 numpy, number of documents). Null texts count as ""."""
    summary, review = _strings(summary), _strings(review)
    if len(summary) != len(review):
        raise ValueError(f"{len(summary)} summaries but {len(review)} review texts")
    text = normalize_for_model(pc.binary_join_element_wise(summary, review, " ", null_handling="replace",
                                                           null_replacement=""))
    lists = pc.split_pattern(text, " ")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    tokens = pc.list_flatten(lists)
    rows = np.repeat(np.arange(len(text), dtype=np.int64), lengths)
    keep = pc.not_equal(tokens, "")                   # an empty text splits into one "" token
    return tokens.filter(keep), rows[keep.to_numpy(zero_copy_only=False)], len(text)


def _with_bigrams(tokens, rows):
    """Unigrams followed by the bigrams of adjacent tokens of the same document ("a b")."""
    same_doc = rows[:-1] == rows[1:]
    mask = pa.array(same_doc)
    bigrams = pc.binary_join_element_wise(tokens[:-1].filter(mask), tokens[1:].filter(mask), " ")
    return pa.concat_arrays([tokens, bigrams]), np.concatenate([rows, rows[:-1][same_doc]])



def negated(tokens, rows):
    """Bool numpy mask of the tokens that follow a negator of NEGATORS within NEGATION_SCOPE tokens of the
    same document and are not negators themselves (the negation scope)."""
    negator = pc.is_in(tokens, value_set=pa.array(NEGATORS, pa.string())).to_numpy(zero_copy_only=False)
    scoped = np.zeros(len(tokens), dtype=bool)
    for k in range(1, NEGATION_SCOPE + 1):
        scoped[k:] |= negator[:-k] & (rows[:-k] == rows[k:])
    return scoped & ~negator


def negation_terms(tokens, rows):
    """The Arrow twin of ``training.features.negation_terms``: NEGATION_PREFIX + each token in a negation
    scope (``negated``), with its document id."""
    marked = negated(tokens, rows)
    terms = pc.binary_join_element_wise(pa.scalar(NEGATION_PREFIX), tokens.filter(pa.array(marked)), "")
    return terms, rows[marked]

# -------------------------------------------------------------------------------------- baselines

class _TextBaseline:
    """fit/predict over ``tokenize``; subclasses define the training rows, the features (fitted on the
    training rows only) and the sample weights."""

    def __init__(self, l2, max_iter):
        self.l2, self.max_iter = l2, max_iter

    def fit(self, summary, review, y, validation=None):
        """Fit on the training split. ``l2`` may be one value or several; with several,
        ``validation`` = (summary, review, y) of a validation split is required and the value with the
        best validation ROC AUC is kept (ties: the larger). ``l2_`` is the value used and
        ``validation_auc_`` maps each value tried to its validation AUC (empty without validation),
        ``training_rows_`` the rows of the split fitted on (None: all) and ``label_counts_`` their
        negatives and positives."""
        grid = sorted({float(v) for v in np.atleast_1d(self.l2)}, reverse=True)
        if len(grid) > 1 and validation is None:
            raise ValueError("several l2 values need a validation split to choose from")
        y = _labels(y)
        summary, review = _strings(summary), _strings(review)
        if len(summary) != y.size:
            raise ValueError(f"{len(summary)} texts but {y.size} labels")
        self.training_rows_ = rows = self._training_rows(y)
        if rows is not None:
            take = pa.array(rows)
            summary, review, y = summary.take(take), review.take(take), y[rows]
        self.label_counts_ = np.bincount(y, minlength=2)
        tokens, doc, n_docs = tokenize(summary, review)
        self._fit_features(tokens, doc, n_docs)
        x, weight = self._features(tokens, doc, n_docs), self._sample_weight(y)
        scored = None if validation is None else (self.transform(*validation[:2]), _labels(validation[2]))
        best, start, self.validation_auc_ = None, None, {}
        for l2 in grid:                               # strongest penalty first, each warm-starts the next
            model = LogisticRegression(l2, self.max_iter).fit(x, y, weight, start=start)
            start = np.append(model.coef_, model.intercept_)
            if scored is not None:
                self.validation_auc_[l2] = roc_auc(scored[1], model.predict_proba(scored[0]))
            if best is None or self.validation_auc_.get(l2, -1) > self.validation_auc_.get(best.l2, -1):
                best = model
        self.classifier_, self.l2_ = best, best.l2
        return self

    def fit_features(self, summary, review):
        """Fit only the features (vocabulary, idf) on these texts, no classifier; ``transform`` then works."""
        self._fit_features(*tokenize(summary, review))
        return self

    def transform(self, summary, review):
        """Feature rows (``Csr``) of the texts, with what ``fit`` (or ``fit_features``) learnt."""
        return self._features(*tokenize(summary, review))

    def predict_proba(self, summary, review):
        """P(positive) per review, float64."""
        return self.classifier_.predict_proba(self.transform(summary, review))

    def _training_rows(self, y):
        return None

    def _sample_weight(self, y):
        return None


class SeedsBaseline(_TextBaseline):
    """Spark's Tokenizer -> StopWordsRemover -> HashingTF -> IDF -> LogisticRegression, refitted without
    the leak. Tokens minus ``STOP_WORDS`` are hashed (``transforms.keys.hash_strings``, stable across
    processes) into ``num_features`` buckets of raw term counts, weighted by
    ``idf = log((n_docs + 1) / (df + 1))`` (Spark's formula) with ``df`` counted on the training rows.
    The majority class is undersampled to the minority count with ``seed`` before anything is fitted,
    as the seeds balanced their data; the rows dropped are not used at all."""

    name = "seeds: hashing TF-IDF + LR"

    def __init__(self, num_features=2 ** 18, l2=1e-2, max_iter=300, seed=0):
        super().__init__(l2, max_iter)
        self.num_features, self.seed = num_features, seed

    def _training_rows(self, y):
        rng = np.random.default_rng(self.seed)
        minority = int(np.argmin(np.bincount(y, minlength=2)))
        keep = np.flatnonzero(y == minority)
        majority = rng.choice(np.flatnonzero(y != minority), size=keep.size, replace=False)
        return np.sort(np.concatenate([keep, majority]))

    def _buckets(self, tokens):
        stop = pc.is_in(tokens, value_set=pa.array(sorted(STOP_WORDS)))
        keep = pc.invert(stop).to_numpy(zero_copy_only=False)
        buckets = (hash_strings(tokens) % np.uint64(self.num_features)).astype(np.int64)
        return buckets, keep

    def _fit_features(self, tokens, doc, n_docs):
        counts = self._counts(tokens, doc, n_docs)
        self.document_frequency_ = np.bincount(counts.indices, minlength=self.num_features)
        self.idf_ = np.log((n_docs + 1.0) / (self.document_frequency_ + 1.0))

    def _counts(self, tokens, doc, n_docs):
        buckets, keep = self._buckets(tokens)
        return Csr.from_counts(doc[keep], buckets[keep], n_docs, self.num_features)

    def _features(self, tokens, doc, n_docs):
        counts = self._counts(tokens, doc, n_docs)
        return Csr(counts.indptr, counts.indices, counts.values * self.idf_[counts.indices], counts.n_cols)

    def bucket(self, word):
        """The hash bucket of one token."""
        return int(self._buckets(pa.array([word]))[0][0])


class TfidfBigramBaseline(_TextBaseline):
    """Unigrams and bigrams seen in at least ``min_df`` training documents, at most ``max_features`` of
    them (the most frequent; ties by term), weighted ``(1 + log tf) * idf`` with
    ``idf = log((1 + n_docs) / (1 + df)) + 1`` (``tf`` as is when ``sublinear_tf`` is False), rows
    scaled to unit L2 norm; logistic regression with "balanced" class weights
    ``n / (2 * n_class)``. Terms absent from the vocabulary are ignored when scoring."""

    name = "TF-IDF 1-2-gram LR"

    def __init__(self, min_df=2, max_features=200_000, sublinear_tf=True, l2=1e-6, max_iter=300):
        super().__init__(l2, max_iter)
        if min_df < 1 or max_features < 1:
            raise ValueError("min_df and max_features must be >= 1")
        self.min_df, self.max_features, self.sublinear_tf = min_df, max_features, sublinear_tf

    def _sample_weight(self, y):
        counts = np.bincount(y, minlength=2)
        return (y.size / (2.0 * counts))[y]

    def _terms(self, tokens, doc):
        """Tokens (with their document ids) -> the terms counted (with theirs): unigrams and bigrams."""
        return _with_bigrams(tokens, doc)

    def _fit_features(self, tokens, doc, n_docs):
        terms, term_doc = self._terms(tokens, doc)
        encoded = terms.dictionary_encode()
        dictionary = encoded.dictionary
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        df = np.bincount(Csr.from_counts(term_doc, codes, n_docs, len(dictionary)).indices,
                         minlength=len(dictionary))
        frequent = np.flatnonzero(df >= self.min_df)
        if frequent.size > self.max_features:
            alphabetical = np.empty(len(dictionary), dtype=np.int64)
            alphabetical[pc.sort_indices(dictionary).to_numpy()] = np.arange(len(dictionary))
            frequent = frequent[np.lexsort((alphabetical[frequent], -df[frequent]))[:self.max_features]]
        vocabulary = dictionary.take(pa.array(frequent))
        order = pc.sort_indices(vocabulary).to_numpy()
        self.vocabulary_ = vocabulary.take(pa.array(order))
        self.document_frequency_ = df[frequent][order]
        self.idf_ = np.log((1.0 + n_docs) / (1.0 + self.document_frequency_)) + 1.0

    def _features(self, tokens, doc, n_docs):
        terms, term_doc = self._terms(tokens, doc)
        ids = pc.index_in(terms, value_set=self.vocabulary_)
        known = ids.is_valid().to_numpy(zero_copy_only=False)
        ids = ids.drop_null().to_numpy().astype(np.int64)
        counts = Csr.from_counts(term_doc[known], ids, n_docs, len(self.vocabulary_))
        tf = 1.0 + np.log(counts.values) if self.sublinear_tf else counts.values
        # documents with no known term stay all-zero
        return Csr(counts.indptr, counts.indices, tf * self.idf_[counts.indices], counts.n_cols).unit_rows()

    def vocabulary_id(self, term):
        """Index of ``term`` in the vocabulary, or None."""
        return pc.index_in(pa.array([term]), value_set=self.vocabulary_)[0].as_py()

    def top_terms(self, k=20):
        """The ``k`` terms pulling hardest towards negative and towards positive: (negative, positive),
        each a list of (term, weight)."""
        w = self.classifier_.coef_
        order = np.argsort(w, kind="stable")
        terms = self.vocabulary_.to_pylist()
        return ([(terms[i], float(w[i])) for i in order[:k]],
                [(terms[i], float(w[i])) for i in order[::-1][:k]])


class NegationTfidf(TfidfBigramBaseline):
    """The model's word group in numpy (``training.features.word_terms``): the tf-idf baseline's terms
    (tokens + bigrams) plus the negation-scope terms, under the same vocabulary and tf-idf rule. Not one of
    the report's baselines: the cross-validation study and a test of the TF features use it."""

    name = "TF-IDF 1-2-gram + negation scope"

    def _terms(self, tokens, doc):
        words, word_doc = _with_bigrams(tokens, doc)
        negated, negated_doc = negation_terms(tokens, doc)
        return pa.concat_arrays([words, negated]), np.concatenate([word_doc, negated_doc])
