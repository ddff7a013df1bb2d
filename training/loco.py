"""Leave-one-category-out (LOCO) evaluation of the sentiment model's whole procedure, next to the tf-idf
1-2-gram baseline refitted in the same folds (issue 20).

    python -m training.loco --output out/loco            # both real-data folders, every category with >= 50 negatives
    python -m training.loco --help

Data: review JSON lines of both schemas (2014/2018: ``summary``, ``reviewText``, ``overall``; 2023: ``title``,
``text``, ``rating``), one file per category under each folder's ``reviews/``. A category is the file's stem,
compared case-insensitively across folders: ``amazon/reviews/Books`` and ``amazon2023/reviews/Books`` are ONE
category, and so are ``AMAZON_FASHION`` and ``Amazon_Fashion``. Labels are ``transforms.labels.polarity``
(rating >= 4 positive, <= 2 negative, 3 dropped). Reviews repeating a (category, reviewer, product, review
second) key are dropped after the first, as the pipeline's key does. ``--silver`` reads a batch run's silver
table instead (category = source file stem, merged the same way).

Features: the numpy twin of ``training.features.preprocessing_fn`` (per group, vocabulary of the up to
200,000 terms in most training reviews and in at least 2 of them, sublinear tf-idf with idf from the
training reviews, unit rows scaled to GROUP_WEIGHTS): words = tokens + bigrams + negation terms
(``training.baselines.NegationTfidf``'s terms), characters = 3-5-grams of each "<token>", summary = the
summary's own tokens + bigrams. The word and summary twins are checked against tf.Transform term by term in
tests/unit/test_training_features.py (``test_word_and_summary_groups_equal_their_numpy_twins``); the fold
features here are checked against ``NegationTfidf`` / ``TfidfBigramBaseline`` fitted on the fold's training
rows, and the character terms against the documented rule that test_training_features.py checks TF's
``char_terms`` against, in tests/unit/test_training_loco.py.

Speed: every review is tokenised once; each group's terms are counted once into a sparse matrix over all
terms of all reviews. A fold then only counts document frequencies over its training rows (so a term seen
only in the held-out category has df 0 there and is never in the fold's vocabulary), selects columns and
weights them: the same numbers as fitting the twin on the fold's training texts. The logistic regression is
``training.baselines``' objective and L-BFGS solver (``minimize_lbfgs``), with scipy sparse products.

Procedures compared in each fold (held-out category h, training categories T = all others):

    current       what ``python -m training --split category`` does now: validation categories V = the ~15 %
                  of categories next in stable-hash order (``training.data``'s rule) taken out of T; features
                  and fit on T - V; threshold = the macro-F1 maximiser on V
    refit/...     features and fit on ALL of T; the threshold by a rule chosen from inner folds over T
                  (T split into --inner_folds groups of categories; each group scored by a fit on the rest):
                    cv-pooled      the macro-F1 maximiser on all inner out-of-category scores pooled
                    cv-categories  the threshold maximising the MEAN per-category macro-F1 of those scores
                                   (each category counts once, however many reviews or however skewed its
                                   rating sample: Office_Products and amazon2023 Books are rating-skewed)
                    0.5            fixed
    .../unweighted  the same without balanced class weights (``--unweighted``)
    model+lexicon/refit/<rule>  the refit procedure with the sentiment-lexicon columns added (``--lexicon``, a candidate)
    model+nb/refit/<rule>  the ensemble that ``python -m training --split all`` exports (on by default here;
                  ``--no_nb_ensemble`` skips it): the model's logit plus the logit of a second logistic
                  regression on the same groups naive-Bayes scaled (each term's weight times its log-count
                  ratio over the fit rows, rows back to unit length; Wang & Manning 2012), L2 1e-5 (NB_L2), as
                  bench/model_selection.py's "NB-scaled twin" (+0.002 AUC there, 8 categories). It beat
                  ``model/refit`` on AUC across the 18 folds (macro-F1 within the interval; docs/model.md);
                  EXPORTED_PROCEDURE is the headline

The baseline (``training.baselines.TfidfBigramBaseline``: tokens + bigrams, same vocabulary rule, L2 1e-6) is
refitted in each fold by the same refit procedure as the model (all of T, the cv-categories threshold from its
own inner folds), and also the way the report fits it now (``current``: T - V, threshold on V).
"""
import argparse
import glob
import gzip
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from training import evaluate
from training.baselines import _with_bigrams, minimize_lbfgs, negation_terms, tokenize
from training.features import CHAR_NGRAMS, GROUP_WEIGHTS, GROUPS, MIN_DF, TOP_K
from training.lexicon import lexicon_features
from transforms import keys, labels
from transforms.text import NEGATION_PREFIX

DEFAULT_FOLDERS = ("../shared/data/amazon", "../shared/data/amazon2023")
MODEL_L2 = 3e-6           # training.__main__ --l2 default
LEXICON_WEIGHT = 1.0      # scale of the candidate's lexicon columns (next to unit-length tf-idf groups)
NB_L2 = 1e-5              # the naive-Bayes-scaled twin's L2 (bench/model_selection.py's ensemble)
BASELINE_L2 = 1e-6        # TfidfBigramBaseline default
# what `python -m training --split all` exports (its default --ensemble nb): the headline of the report;
# LINEAR_PROCEDURE is what --ensemble none exports (the headline before 2026-12-07)
EXPORTED_PROCEDURE = "model+nb/refit/cv-categories"
LINEAR_PROCEDURE = "model/refit/cv-categories"
THRESHOLD_RULES = ("cv-pooled", "cv-categories", "0.5")
# L-BFGS iterations per fit. 100: on the Electronics fold of the real data (96,331 reviews) the model fitted
# with at most 100 iterations scored held-out AUC 0.982826, fitted to the default stop (tol 1e-6, relative
# decrease 1e-10, at most 500) 0.982828, in 30 s instead of 45 s (2026-12-06, 2 busy cores)
MAX_ITER = 100


# ----------------------------------------------------------------------------------------------- data

@dataclass
class Reviews:
    summary: np.ndarray       # object arrays of str
    review_text: np.ndarray
    label: np.ndarray         # int64 0/1
    category: np.ndarray      # object array of category names (merged across folders)
    source: np.ndarray        # object array: "amazon/Books", ... (which file a review came from)

    def __len__(self):
        return len(self.label)

    def take(self, mask):
        return Reviews(*(getattr(self, f)[mask] for f in ("summary", "review_text", "label", "category", "source")))


def _row(obj):
    """One JSON review of either schema -> (summary, text, rating, reviewer, product, seconds)."""
    if "rating" in obj and "text" in obj:            # 2023 schema
        t = obj.get("timestamp")
        return (obj.get("title"), obj.get("text"), obj.get("rating"), obj.get("user_id"),
                obj.get("parent_asin") or obj.get("asin"), None if t is None else int(t) // 1000)
    return (obj.get("summary"), obj.get("reviewText"), obj.get("overall"), obj.get("reviewerID"), obj.get("asin"),
            obj.get("unixReviewTime"))


def read_folders(folders):
    """Polar reviews of ``<folder>/reviews/*.jsonl.gz`` of every folder, categories merged by lower-cased
    file stem (the first spelling met names the category)."""
    names, summary, text, rating, cat, src, seen = {}, [], [], [], [], [], set()
    for folder in folders:
        files = sorted(glob.glob(os.path.join(folder, "reviews", "*.jsonl*")))
        if not files:
            raise ValueError(f"no review files under {folder}/reviews")
        for path in files:
            stem = os.path.basename(path).split(".")[0]
            name = names.setdefault(stem.lower(), stem)
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    s, t, r, who, what, when = _row(json.loads(line))
                    key = (name, who, what, when)
                    if who is not None and key in seen:
                        continue
                    seen.add(key)
                    summary.append(s or "")
                    text.append(t or "")
                    rating.append(r)
                    cat.append(name)
                    src.append(f"{os.path.basename(os.path.normpath(folder))}/{stem}")
    y = labels.polarity(pa.array(rating, pa.float64()))
    keep = pc.is_valid(y).to_numpy(zero_copy_only=False)
    obj = lambda v: np.asarray(v, dtype=object)[keep]  # noqa: E731
    return Reviews(obj(summary), obj(text), np.asarray(y.drop_null().to_numpy(zero_copy_only=False), np.int64),
                   obj(cat), obj(src))


def read_silver_reviews(silver):
    """A batch run's silver table -> polar Reviews (category = source file stem, merged case-insensitively)."""
    from training import data as data_mod
    ex = data_mod.examples(data_mod.read_silver(silver), split="hash")
    names = {}
    cats = np.array([names.setdefault(c.lower(), c) for c in ex.category], dtype=object)
    return Reviews(ex.summary, ex.review_text, ex.label, cats, ex.category.copy())


# ------------------------------------------------------------------------------------------- features

def char_grams(token):
    """The CHAR_NGRAMS-character n-grams of "<token>", widths in order (training.features.char_terms)."""
    w = f"<{token}>"
    return [w[j:j + n] for n in CHAR_NGRAMS for j in range(len(w) - n + 1)]


def _count_matrix(terms, term_doc, n_docs):
    """Terms (Arrow strings) with their document ids -> (scipy CSR of counts [docs, distinct terms], the
    distinct terms as a Python list)."""
    encoded = terms.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    dictionary = encoded.dictionary.to_pylist()
    m = sp.csr_matrix((np.ones(codes.size), (term_doc, codes)), shape=(n_docs, len(dictionary)))
    m.sum_duplicates()
    return m, dictionary


def _char_terms(tokens, doc):
    """Tokens -> their character n-grams with document ids, built per distinct token once."""
    enc = tokens.dictionary_encode()
    distinct = enc.dictionary.to_pylist()
    grams = [char_grams(t) for t in distinct]
    lengths = np.array([len(g) for g in grams], dtype=np.int64)
    flat = pa.array([g for gs in grams for g in gs], pa.string())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n = lengths[codes]
    take = np.repeat(starts[codes] - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
    return flat.take(pa.array(take)), np.repeat(doc, n)


class TermCounts:
    """Every review's term counts per group, computed once; ``fold_features`` then fits a fold's vocabulary
    and idf on its training rows only.

    groups: word (tokens + bigrams + negation terms; the baseline uses the same matrix without the negation
    terms), char, summary."""

    def __init__(self, summary, review_text, lexicon=False):
        # candidate (--lexicon): True = VADER's lexicon, or a {token: valence} dict
        self.lexicon = lexicon_features(summary, review_text, None if lexicon is True else lexicon) if lexicon \
            else None
        tokens, doc, n = tokenize(summary, review_text)
        words, word_doc = _with_bigrams(tokens, doc)
        neg, neg_doc = negation_terms(tokens, doc)
        self.n_docs = n
        self.counts, self.terms = {}, {}
        self.counts["word"], self.terms["word"] = _count_matrix(pa.concat_arrays([words, neg]),
                                                                np.concatenate([word_doc, neg_doc]), n)
        self.counts["char"], self.terms["char"] = _count_matrix(*_char_terms(tokens, doc), n)
        s_tokens, s_doc, _ = tokenize(summary, [""] * len(summary))
        self.counts["summary"], self.terms["summary"] = _count_matrix(*_with_bigrams(s_tokens, s_doc), n)
        self.present, self.rank = {}, {}
        for g, m in self.counts.items():
            self.present[g] = sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape)
            rank = np.empty(len(self.terms[g]), np.int64)      # alphabetical rank: ties of df go by term
            rank[pc.sort_indices(pa.array(self.terms[g], pa.string())).to_numpy()] = np.arange(len(self.terms[g]))
            self.rank[g] = rank
        self.is_negation = np.array([t.startswith(NEGATION_PREFIX) for t in self.terms["word"]])

    def vocabulary(self, group, fit_rows, negation=True, min_df=MIN_DF, top_k=TOP_K):
        """(column ids of the vocabulary fitted on ``fit_rows`` (bool mask or row ids), their document
        frequencies there, number of fitting documents)."""
        rows = self.present[group][fit_rows]
        df = np.bincount(rows.indices, minlength=rows.shape[1])
        ok = df >= min_df
        if group == "word" and not negation:
            ok &= ~self.is_negation
        cols = np.flatnonzero(ok)
        if cols.size > top_k:
            cols = cols[np.lexsort((self.rank[group][cols], -df[cols]))[:top_k]]
        return np.sort(cols), df[np.sort(cols)], rows.shape[0]

    def group_rows(self, group, fit_rows, rows=None, negation=True):
        """Unit-length sublinear tf-idf rows of the group, vocabulary and idf from ``fit_rows``."""
        cols, df, n = self.vocabulary(group, fit_rows, negation)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        m = self.counts[group] if rows is None else self.counts[group][rows]
        x = m[:, cols].tocsr()
        x.data = (1.0 + np.log(x.data)) * idf[x.indices]
        return unit_rows(x), cols

    def model_groups(self, fit_rows, rows=None):
        """{group: unit-length rows} of the model's groups, fitted on ``fit_rows``."""
        return {g: self.group_rows(g, fit_rows, rows)[0] for g in GROUPS}

    def fold_features(self, kind, fit_rows, rows=None):
        """``kind`` "model" (word + 0.5 char + 0.3 summary, as training.features), "model+lexicon" (the
        same and the lexicon columns) or "baseline" (tokens + bigrams only) -> CSR of ``rows`` (default all),
        fitted on ``fit_rows``."""
        if kind == "baseline":
            return self.group_rows("word", fit_rows, rows, negation=False)[0]
        extra = []
        if kind == "model+lexicon":   # fixed per-review values: nothing is fitted on fit_rows
            dense = self.lexicon if rows is None else self.lexicon[rows]
            extra.append(sp.csr_matrix(dense * LEXICON_WEIGHT))
        return weighted_groups(self.model_groups(fit_rows, rows), extra)


def unit_rows(x):
    """CSR ``x`` with each non-empty row scaled to unit L2 length."""
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


def weighted_groups(groups, extra=()):
    """{group: rows} -> the groups side by side at their GROUP_WEIGHTS (then ``extra`` columns), CSR."""
    return sp.hstack([groups[g] * GROUP_WEIGHTS[g] for g in GROUPS] + list(extra), format="csr")


# --------------------------------------------------------------------------------------------- fitting

def fit_logistic(x, y, l2, weighted=True, max_iter=500, tol=1e-6):
    """``training.baselines.LogisticRegression``'s objective (weighted mean log loss + l2/2 |w|^2, bias not
    penalised; balanced class weights n / (2 n_c) when ``weighted``) and solver, with scipy products.
    Returns (w, b)."""
    y = np.asarray(y, np.float64)
    if weighted:
        counts = np.bincount(y.astype(np.int64), minlength=2)
        weight = (y.size / (2.0 * counts))[y.astype(np.int64)]
    else:
        weight = np.ones(y.size)
    weight = weight / weight.sum()
    used = np.flatnonzero(np.bincount(x.indices, minlength=x.shape[1]))
    xu = x[:, used].tocsr()
    xt = xu.T.tocsr()

    def loss_and_gradient(theta):
        w, b = theta[:-1], theta[-1]
        z = xu @ w + b
        loss = float(weight @ (np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(w @ w)
        residual = weight * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)
        return loss, np.append(xt @ residual + l2 * w, residual.sum())

    prior = float(weight @ y)
    theta = np.zeros(used.size + 1)
    theta[-1] = math.log(prior / (1.0 - prior))
    theta, _ = minimize_lbfgs(loss_and_gradient, theta, max_iter, tol)
    w = np.zeros(x.shape[1])
    w[used] = theta[:-1]
    return w, float(theta[-1])


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def log_count_ratios(positive, negative, alpha=1.0):
    """Per term: the number of positive and of negative fit rows holding it -> its naive-Bayes log-count
    ratio log((p / |p|_1) / (q / |q|_1)), p = ``positive`` + ``alpha``, q = ``negative`` + ``alpha`` (the
    exported ensemble's ratios come from here too: training.train)."""
    p = np.asarray(positive, np.float64) + alpha
    q = np.asarray(negative, np.float64) + alpha
    return np.log((p / p.sum()) / (q / q.sum()))


def nb_scaled(x, n_fit, y_fit, alpha=1.0):
    """CSR rows ``x`` (the first ``n_fit`` are the fit rows, labels ``y_fit``) with each term's weight times
    its naive-Bayes log-count ratio over the fit rows (``log_count_ratios``); each row then back to unit
    length (the exported model's TF twin: ``training.model.nb_weights``)."""
    present = x[:n_fit].copy()
    present.data = (present.data != 0).astype(np.float64)
    r = log_count_ratios(present.T @ (y_fit == 1).astype(np.float64), present.T @ (y_fit == 0).astype(np.float64),
                         alpha)
    out = x.tocsr(copy=True)
    out.data = out.data * r[out.indices]
    return unit_rows(out)


def _nb_ensemble_logit(tc, fit_idx, score_idx, y, weighted):
    """The ``model+nb`` candidate: the model's logit plus the NB-scaled twin's, for ``score_idx``. The
    model is fitted again here (the same fit as the ``model`` procedure's): its inner-fold logits are not
    kept, so the candidate costs about two model procedures."""
    n = fit_idx.size
    groups = tc.model_groups(fit_idx, np.concatenate([fit_idx, score_idx]))
    nb = {g: nb_scaled(x, n, y[fit_idx]) for g, x in groups.items()}
    z = 0.0
    for x, l2 in ((weighted_groups(groups), MODEL_L2), (weighted_groups(nb), NB_L2)):
        w, b = fit_logistic(x[:n], y[fit_idx], l2, weighted, max_iter=MAX_ITER)
        z = z + x[n:] @ w + b
    return z


def fit_and_score(tc, kind, fit_rows, score_rows, labels_, weighted=True):
    """Features fitted on ``fit_rows`` (bool mask), logistic regression fitted on them; P(positive) of
    ``score_rows``."""
    fit_idx, score_idx = np.flatnonzero(fit_rows), np.flatnonzero(score_rows)
    if kind == "model+nb":
        return _sigmoid(_nb_ensemble_logit(tc, fit_idx, score_idx, labels_, weighted))
    l2 = BASELINE_L2 if kind == "baseline" else MODEL_L2
    x = tc.fold_features(kind, fit_idx, np.concatenate([fit_idx, score_idx]))
    w, b = fit_logistic(x[:fit_idx.size], labels_[fit_idx], l2, weighted, max_iter=MAX_ITER)
    return _sigmoid(x[fit_idx.size:] @ w + b)


# ------------------------------------------------------------------------------------------ thresholds

def threshold_for_categories(y, p, cats):
    """The threshold maximising the mean over categories of each category's macro-F1 (candidates: the
    midpoints of the distinct pooled scores, thinned to at most 2,000 quantiles; ties: nearest 0.5)."""
    values = np.unique(p)
    if values.size < 2:
        return 0.5
    cand = (values[:-1] + values[1:]) / 2
    if cand.size > 2000:
        cand = np.unique(np.quantile(cand, np.linspace(0, 1, 2000)))
    total = np.zeros(cand.size)
    for c in np.unique(cats):
        m = cats == c
        yc, pc_ = y[m], np.sort(p[m])
        order = np.argsort(p[m], kind="stable")
        ys = yc[order]
        # predicted 1 = scores >= t: index of the first such score
        first = np.searchsorted(pc_, cand, side="left")
        pos_above = np.concatenate([np.cumsum(ys[::-1])[::-1], [0]])[first]
        n_above = yc.size - first
        tp, fp = pos_above, n_above - pos_above
        fn, tn = ys.sum() - tp, (yc.size - ys.sum()) - fp
        cm = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)
        total += evaluate._cm_metrics(cm)["macro_f1"]
    best = np.flatnonzero(total >= total.max() - 1e-12)
    return float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]])


def choose(rule, y, p, cats):
    if rule == "cv-pooled":
        return evaluate.choose_threshold(y, p, "macro_f1")
    if rule == "cv-categories":
        return threshold_for_categories(y, p, cats)
    return 0.5


def validation_categories(train_cats, n_categories):
    """training.data's rule: the ~15 % of categories (of all ``n_categories``) next in stable-hash order."""
    rest = sorted(train_cats)
    order = np.asarray(rest, dtype=object)[np.argsort(keys.hash_strings(pa.array(rest, pa.string())), kind="stable")]
    k = max(1, int(round(0.15 * n_categories)))
    return list(order[:k])


def inner_groups(train_cats, k):
    """The training categories in ``k`` groups by stable hash (round robin over the hash order)."""
    rest = sorted(train_cats)
    order = np.asarray(rest, dtype=object)[np.argsort(keys.hash_strings(pa.array(rest, pa.string())), kind="stable")]
    return [list(order[i::k]) for i in range(k)]


def inner_scores(tc, kind, reviews, train_mask, k, weighted=True):
    """Out-of-category scores of every training row: ``k`` inner folds over the training categories, each
    group scored by a fit (features included) on the other training categories only."""
    p = np.full(len(reviews), np.nan)
    for group in inner_groups(set(reviews.category[train_mask]), k):
        held = train_mask & np.isin(reviews.category, group)
        p[held] = fit_and_score(tc, kind, train_mask & ~held, held, reviews.label, weighted)
    return p[train_mask]


# ----------------------------------------------------------------------------------------------- folds

def fold(tc, reviews, held_out, inner_folds=3, unweighted=False, baseline_current=True, progress=print,
         lexicon=True, candidates_only=False, nb_ensemble=False):
    """One outer fold: every procedure fitted on the other categories only, scored on ``held_out``.
    Returns {procedure: (P(positive) of the held-out rows, threshold)}. Candidates: ``unweighted``,
    ``lexicon`` when ``tc`` holds the lexicon columns, ``nb_ensemble``; ``candidates_only``: only those (to
    add to a fold saved before)."""
    test = reviews.category == held_out
    train = ~test
    y = reviews.label
    cats = reviews.category
    n_categories = len(set(cats))
    val_cats = validation_categories(set(cats[train]), n_categories)
    val = train & np.isin(cats, val_cats)
    fit_cur = train & ~val
    out = {}
    t0 = time.monotonic()
    current = [] if candidates_only else ["model", "baseline"] if baseline_current else ["model"]
    for kind in current:
        both = fit_and_score(tc, kind, fit_cur, val | test, y)   # in row order of (val | test)
        idx = np.flatnonzero(val | test)
        pv, pt = both[val[idx]], both[test[idx]]
        out[f"{kind}/current"] = (pt, evaluate.choose_threshold(y[val], pv, "macro_f1"))
    variants = [] if candidates_only else [("model", True), ("baseline", True)]
    if unweighted:
        variants.append(("model", False))
    if lexicon and tc.lexicon is not None:
        variants.append(("model+lexicon", True))
    if nb_ensemble:
        variants.append(("model+nb", True))
    for kind, weighted in variants:
        inner = inner_scores(tc, kind, reviews, train, inner_folds, weighted)
        pt = fit_and_score(tc, kind, train, test, y, weighted)
        suffix = "" if weighted else "/unweighted"
        for rule in THRESHOLD_RULES:
            out[f"{kind}/refit/{rule}{suffix}"] = (pt, choose(rule, y[train], inner, cats[train]))
    progress(f"{held_out}: {test.sum():,} reviews, {(y[test] == 0).sum():,} negative; validation categories "
             f"of 'current': {', '.join(val_cats)} ({time.monotonic() - t0:.0f} s)")
    return out


# --------------------------------------------------------------------------------------------- metrics

def metrics_at(y, p, threshold):
    """(ROC AUC, macro-F1 at the threshold, negative recall)."""
    pred = (p >= threshold).astype(np.int64)
    m = evaluate._cm_metrics(evaluate.confusion(y, pred))
    return evaluate.roc_auc(y, p), float(m["macro_f1"]), float(m["recall"][0])


def paired_difference(y, pa_, ta, pb, tb, n=1000, seed=0):
    """(AUC a - b, [lo, hi]), (macro-F1 a - b, [lo, hi]) with one set of row resamples for both scorers
    (percentile, 95 %)."""
    rng = np.random.default_rng(seed)
    pred_a, pred_b = (pa_ >= ta).astype(np.int64), (pb >= tb).astype(np.int64)
    d_auc, d_f1 = [], []
    for _ in range(n):
        i = rng.integers(0, y.size, y.size)
        yi = y[i]
        if yi.min() == yi.max():
            continue
        d_auc.append(evaluate.roc_auc(yi, pa_[i]) - evaluate.roc_auc(yi, pb[i]))
        d_f1.append(evaluate.macro_f1(yi, pred_a[i]) - evaluate.macro_f1(yi, pred_b[i]))
    point = (evaluate.roc_auc(y, pa_) - evaluate.roc_auc(y, pb),
             evaluate.macro_f1(y, pred_a) - evaluate.macro_f1(y, pred_b))
    q = lambda v: [float(x) for x in np.quantile(v, [0.025, 0.975])]  # noqa: E731
    return (point[0], q(d_auc)), (point[1], q(d_f1))


def across_folds(values, n=10000, seed=0):
    """Mean of per-fold values with a 95 % percentile bootstrap interval over the folds."""
    v = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n, v.size))].mean(axis=1)
    return float(v.mean()), [float(x) for x in np.quantile(means, [0.025, 0.975])]


def summarize(reviews, results, model_name, baseline_name, n_boot=1000, seed=0):
    """Per-category metrics with bootstrap intervals for every procedure, paired differences of
    ``model_name`` minus ``baseline_name``, and the summaries across folds."""
    per_cat = {}
    procedures = sorted(next(iter(results.values())))
    for cat, res in results.items():
        y = reviews.label[reviews.category == cat]
        row = {"reviews": int(y.size), "negatives": int((y == 0).sum()), "procedures": {}}
        for proc in procedures:
            p, t = res[proc]
            auc, f1, neg_recall = metrics_at(y, p, t)
            entry = {"roc_auc": auc, "macro_f1": f1, "negative_recall": neg_recall, "threshold": t}
            if proc in (model_name, baseline_name):
                ci = evaluate.bootstrap_ci(y, p, t, metrics=("roc_auc", "macro_f1"), n=n_boot, seed=seed)
                entry["ci"] = {k: list(v) for k, v in ci.items()}
            row["procedures"][proc] = entry
        (da, da_ci), (df, df_ci) = paired_difference(y, *res[model_name], *res[baseline_name], n=n_boot, seed=seed)
        row["model_minus_baseline"] = {"roc_auc": da, "roc_auc_ci": da_ci, "macro_f1": df, "macro_f1_ci": df_ci}
        per_cat[cat] = row
    summary = {}
    for proc in procedures:
        s = {}
        for metric in ("roc_auc", "macro_f1", "negative_recall"):
            v = np.array([per_cat[c]["procedures"][proc][metric] for c in per_cat])
            worst = min(per_cat, key=lambda c: per_cat[c]["procedures"][proc][metric])
            s[metric] = {"mean": float(v.mean()), "mean_ci": across_folds(v, seed=seed)[1],
                         "median": float(np.median(v)), "worst": float(v.min()), "worst_category": worst}
        summary[proc] = s
    paired, folds_vs_current = {}, {}
    for metric in ("roc_auc", "macro_f1"):
        d = np.array([per_cat[c]["procedures"][model_name][metric] - per_cat[c]["procedures"][baseline_name][metric]
                      for c in per_cat])
        mean, ci = across_folds(d, seed=seed)
        paired[metric] = {"mean": mean, "ci": ci, "better": int((d > 0).sum()), "worse": int((d < 0).sum()),
                          "significantly_worse": sorted(c for c in per_cat if per_cat[c]["model_minus_baseline"]
                                                        [metric + "_ci"][1] < 0)}
    for proc in procedures:
        if not proc.startswith("model/"):
            continue
        folds_vs_current[proc] = {}
        for metric in ("roc_auc", "macro_f1"):
            d = np.array([per_cat[c]["procedures"][proc][metric] - per_cat[c]["procedures"]["model/current"][metric]
                          for c in per_cat])
            mean, ci = across_folds(d, seed=seed)
            folds_vs_current[proc][metric] = {"mean": mean, "ci": ci, "better": int((d > 0).sum()),
                                              "worse": int((d < 0).sum())}
    target = {"auc_margin_needed": 0.01, "macro_f1_margin_needed": 0.02,
              "auc_margin": paired["roc_auc"]["mean"], "macro_f1_margin": paired["macro_f1"]["mean"]}
    target["met"] = bool(paired["roc_auc"]["mean"] >= 0.01 and paired["macro_f1"]["mean"] >= 0.02
                         and paired["roc_auc"]["ci"][0] > 0 and paired["macro_f1"]["ci"][0] > 0
                         and not paired["roc_auc"]["significantly_worse"]
                         and not paired["macro_f1"]["significantly_worse"])
    return {"per_category": per_cat, "summary": summary, "model_minus_baseline": paired,
            "candidates_minus_current_model": folds_vs_current, "target": target,
            "model": model_name, "baseline": baseline_name}


# ------------------------------------------------------------------------------------------------ report

def markdown(report):
    m, b = report["model"], report["baseline"]
    pc_ = report["per_category"]
    lines = ["# Leave-one-category-out evaluation", "",
             f"Model procedure `{m}` vs baseline `{b}` (both refitted in every fold on the other categories "
             "only: vocabulary, idf, fit and threshold). 95 % bootstrap intervals over the held-out reviews; "
             "the difference columns are paired (same resamples).", "",
             "| held-out category | reviews | neg. | model AUC | baseline AUC | AUC diff [95 %] | model macro-F1 | "
             "baseline macro-F1 | macro-F1 diff [95 %] | model neg. recall | baseline neg. recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ci = lambda e, k: f"{e[k]:.3f} [{e['ci'][k][0]:.3f}, {e['ci'][k][1]:.3f}]"  # noqa: E731
    for cat in sorted(pc_):
        r = pc_[cat]
        em, eb, d = r["procedures"][m], r["procedures"][b], r["model_minus_baseline"]
        lines.append(f"| {cat} | {r['reviews']:,} | {r['negatives']:,} | {ci(em, 'roc_auc')} | {ci(eb, 'roc_auc')} | "
                     f"{d['roc_auc']:+.4f} [{d['roc_auc_ci'][0]:+.4f}, {d['roc_auc_ci'][1]:+.4f}] | "
                     f"{ci(em, 'macro_f1')} | {ci(eb, 'macro_f1')} | "
                     f"{d['macro_f1']:+.4f} [{d['macro_f1_ci'][0]:+.4f}, {d['macro_f1_ci'][1]:+.4f}] | "
                     f"{em['negative_recall']:.3f} | {eb['negative_recall']:.3f} |")
    s = report["summary"]
    lines += ["", "| across folds | model AUC | baseline AUC | model macro-F1 | baseline macro-F1 |", "|---|---:|---:|---:|---:|"]
    for stat in ("mean", "median", "worst"):
        f = lambda proc, k: (f"{s[proc][k][stat]:.4f}" + (f" ({s[proc][k]['worst_category']})" if stat == "worst" else "")  # noqa: E731
                             + (f" [{s[proc][k]['mean_ci'][0]:.4f}, {s[proc][k]['mean_ci'][1]:.4f}]" if stat == "mean" else ""))
        lines.append(f"| {stat} | {f(m, 'roc_auc')} | {f(b, 'roc_auc')} | {f(m, 'macro_f1')} | {f(b, 'macro_f1')} |")
    d = report["model_minus_baseline"]
    lines += ["", "Model minus baseline across folds (mean of per-category differences, 95 % bootstrap over folds):", ""]
    for k in ("roc_auc", "macro_f1"):
        lines.append(f"* {k}: {d[k]['mean']:+.4f} [{d[k]['ci'][0]:+.4f}, {d[k]['ci'][1]:+.4f}], better in "
                     f"{d[k]['better']} / worse in {d[k]['worse']} categories; worse beyond the category's paired "
                     f"interval: {', '.join(d[k]['significantly_worse']) or 'none'}")
    t = report["target"]
    lines += ["", f"Target (mean AUC >= baseline + 0.01, mean macro-F1 >= baseline + 0.02, paired intervals across "
                  f"folds excluding 0, no category worse beyond its interval): **{'met' if t['met'] else 'not met'}** "
                  f"(AUC margin {t['auc_margin']:+.4f}, macro-F1 margin {t['macro_f1_margin']:+.4f}).", "",
              "All procedures (mean / median / worst over folds; candidates minus `model/current`, mean over folds "
              "[95 % bootstrap over folds], categories better / worse):", "",
              "| procedure | mean AUC | median AUC | worst AUC | mean macro-F1 | median macro-F1 | worst macro-F1 | "
              "mean neg. recall | AUC vs current | macro-F1 vs current |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    vs = report["candidates_minus_current_model"]
    for proc in sorted(s):
        a, f1, nr = s[proc]["roc_auc"], s[proc]["macro_f1"], s[proc]["negative_recall"]
        cmp_ = lambda k: (f"{vs[proc][k]['mean']:+.4f} [{vs[proc][k]['ci'][0]:+.4f}, {vs[proc][k]['ci'][1]:+.4f}] "  # noqa: E731
                          f"{vs[proc][k]['better']}/{vs[proc][k]['worse']}") if proc in vs else ""
        lines.append(f"| {proc} | {a['mean']:.4f} | {a['median']:.4f} | {a['worst']:.4f} | {f1['mean']:.4f} | "
                     f"{f1['median']:.4f} | {f1['worst']:.4f} | {nr['mean']:.3f} | {cmp_('roc_auc')} | {cmp_('macro_f1')} |")
    return "\n".join(lines) + "\n"


def _save_fold(path, entries):
    """A fold's {"procedure|threshold": scores} to ``path`` (written aside, then renamed)."""
    np.savez(path + ".tmp.npz", **entries)
    os.replace(path + ".tmp.npz", path)


def _entries(res):
    return {f"{k}|{t!r}": p for k, (p, t) in res.items()}


def run(reviews, output, *, min_negatives=50, categories=None, inner_folds=3, unweighted=False, baseline_current=True,
        lexicon=False, nb_ensemble=False, n_boot=1000,
        seed=0, compute=True, model_procedure=LINEAR_PROCEDURE, baseline_procedure="baseline/refit/cv-categories",
        progress=print):
    """LOCO over the categories with at least ``min_negatives`` negatives (or the named ``categories``);
    every category's reviews are used for training in the folds where it is not held out. Writes
    ``output``/report.json and report.md; returns the report."""
    started = time.monotonic()
    negatives = {c: int(((reviews.category == c) & (reviews.label == 0)).sum()) for c in set(reviews.category)}
    folds = sorted(categories) if categories else sorted(c for c, n in negatives.items() if n >= min_negatives)
    if not folds:
        raise ValueError(f"no category has {min_negatives} negatives")
    progress(f"{len(reviews):,} polar reviews in {len(negatives)} categories; {len(folds)} folds: {', '.join(folds)}")
    t0 = time.monotonic()
    tc = TermCounts(reviews.summary, reviews.review_text, lexicon) if compute else None
    if tc is not None:
        progress("term counts: " + ", ".join(f"{len(v):,} {g} terms" for g, v in tc.terms.items())
                 + f" ({time.monotonic() - t0:.0f} s)")
    results = {}
    cache = os.path.join(output, "folds")
    os.makedirs(cache, exist_ok=True)
    for cat in folds:
        path = os.path.join(cache, f"{cat}.npz")
        saved = None
        if os.path.exists(path):
            with np.load(path) as z:
                saved = {k: z[k] for k in z.files}
        if saved is None and compute:       # each fold is saved as it ends: runs resume, parallel runs share
            saved = _entries(fold(tc, reviews, cat, inner_folds, unweighted, baseline_current, progress,
                                  nb_ensemble=nb_ensemble))
            _save_fold(path, saved)
        elif saved is not None and compute:  # a candidate asked for after the fold was saved: add it
            have = {k.split("|")[0] for k in saved}
            add_unweighted = unweighted and "model/refit/cv-categories/unweighted" not in have
            add_lexicon = tc.lexicon is not None and "model+lexicon/refit/cv-categories" not in have
            add_nb = nb_ensemble and "model+nb/refit/cv-categories" not in have
            if add_unweighted or add_lexicon or add_nb:
                saved.update(_entries(fold(tc, reviews, cat, inner_folds, add_unweighted, baseline_current,
                                           progress, lexicon=add_lexicon, candidates_only=True, nb_ensemble=add_nb)))
                _save_fold(path, saved)
        if saved is not None:
            results[cat] = {k.split("|")[0]: (v, float(k.split("|")[1])) for k, v in saved.items()}
    if not results:
        raise ValueError("no fold computed yet")
    common = set.intersection(*(set(r) for r in results.values()))
    results = {c: {k: v for k, v in r.items() if k in common} for c, r in results.items()}
    report = summarize(reviews, results, model_procedure, baseline_procedure, n_boot, seed)
    report["data"] = {"reviews": len(reviews), "categories": {c: {"negatives": negatives[c],
                                                                  "reviews": int((reviews.category == c).sum()),
                                                                  "sources": sorted(set(reviews.source[reviews.category == c]))}
                                                              for c in sorted(negatives)},
                      "folds": folds, "folds_done": sorted(results), "min_negatives": min_negatives}
    report["settings"] = {"inner_folds": inner_folds, "max_iter": MAX_ITER, "model_l2": MODEL_L2, "baseline_l2": BASELINE_L2,
                          "group_weights": GROUP_WEIGHTS, "top_k": TOP_K, "min_df": MIN_DF, "n_boot": n_boot,
                          "seed": seed}
    report["duration_s"] = round(time.monotonic() - started, 1)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, sort_keys=True)
    with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as fh:
        missing = sorted(set(folds) - set(results))
        fh.write(markdown(report) + (f"\n**Partial: folds not computed: {', '.join(missing)}.**\n" if missing else "")
                 + f"\nDuration of this invocation: {report['duration_s']} s.\n")
    return report


def build_parser():
    from beam_pipeline.cli import ArgumentParser
    p = ArgumentParser(prog="python -m training.loco", description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=list(DEFAULT_FOLDERS),
                   help="data folders, each with reviews/<Category>.jsonl.gz (either schema). Default: "
                        + " ".join(DEFAULT_FOLDERS))
    p.add_argument("--silver", help="read a batch run's silver review table instead of --data")
    p.add_argument("--output", required=True, help="folder for report.json and report.md")
    p.add_argument("--min_negatives", type=int, default=50,
                   help="a category is a fold when it has at least this many negative reviews (default 50); "
                        "the others are always in the training side")
    p.add_argument("--categories", help="comma-separated categories to hold out instead (a subset, for a quick run)")
    p.add_argument("--only", help="comma-separated categories to read at all (others ignored; for tests)")
    p.add_argument("--inner_folds", type=int, default=3,
                   help="groups of training categories for the inner cross-validation that chooses the threshold "
                        "(default 3)")
    p.add_argument("--unweighted", action="store_true",
                   help="also run the refit procedure without balanced class weights (slower: one more inner CV); "
                        "folds saved by an earlier run into OUTPUT get this candidate added, the rest kept")
    p.add_argument("--lexicon", action="store_true",
                   help="also run the refit procedure with the sentiment-lexicon features added (candidate "
                        "model+lexicon; training.lexicon, needs the vaderSentiment package); added to folds saved "
                        "before, like --unweighted")
    p.add_argument("--nb_ensemble", action="store_true", default=True,
                   help="run the refit procedure of the exported ensemble: the model's logit plus that of a naive-"
                        "Bayes-scaled twin of its features (model+nb; the default, added to folds saved before)")
    p.add_argument("--no_nb_ensemble", dest="nb_ensemble", action="store_false",
                   help="skip the ensemble (faster: it costs about two model procedures per fold; the headline is then "
                        "model/refit/cv-categories)")
    p.add_argument("--no_baseline_current", action="store_true",
                   help="skip the baseline fitted the way the report fits it now (T - V, threshold on V)")
    p.add_argument("--max_iter", type=int, default=MAX_ITER,
                   help=f"L-BFGS iterations per fit (default {MAX_ITER}; see MAX_ITER in the source for the check)")
    p.add_argument("--model_procedure", default=None,
                   help=f"the model procedure compared with the baseline in the headline table (default "
                        f"{EXPORTED_PROCEDURE}, the exported model's; {LINEAR_PROCEDURE} with --no_nb_ensemble)")
    p.add_argument("--baseline_procedure", default="baseline/refit/cv-categories",
                   help="the baseline procedure of the headline table (baseline/current: as the report fits it now)")
    p.add_argument("--summarize_only", action="store_true",
                   help="compute no fold: summarise the folds already saved under OUTPUT/folds/ (each fold is saved "
                        "as it ends, so a run resumes where it stopped and several runs with disjoint --categories "
                        "can share one OUTPUT)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per category (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p


def main(argv=None):
    global MAX_ITER
    args = build_parser().parse_args(argv)
    MAX_ITER = args.max_iter
    started = time.monotonic()
    progress = lambda msg: print(f"[loco {time.monotonic() - started:6.1f} s] {msg}", flush=True)  # noqa: E731
    try:
        reviews = read_silver_reviews(args.silver) if args.silver else read_folders(args.data)
        if args.only:
            keep = {c.lower() for c in args.only.split(",")}
            reviews = reviews.take(np.array([c.lower() in keep for c in reviews.category]))
        report = run(reviews, args.output, min_negatives=args.min_negatives,
                     categories=args.categories.split(",") if args.categories else None,
                     inner_folds=args.inner_folds, unweighted=args.unweighted, lexicon=args.lexicon,
                     nb_ensemble=args.nb_ensemble,
                     baseline_current=not args.no_baseline_current, compute=not args.summarize_only, n_boot=args.bootstrap, seed=args.seed,
                     model_procedure=args.model_procedure or (EXPORTED_PROCEDURE if args.nb_ensemble
                                                              else LINEAR_PROCEDURE),
                     baseline_procedure=args.baseline_procedure,
                     progress=progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(os.path.join(args.output, "report.md"), encoding="utf-8") as fh:
        print(fh.read())
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
