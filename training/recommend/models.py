"""The recommenders, on a reviewer x item binary matrix ``X`` (scipy CSR, training interactions only).

Every model has ``fit(X, ...)`` and ``scores(users, X)`` -> dense float32 (len(users), n_items); higher is
better. Ranking (``ranks`` / ``top_n``) excludes the reviewer's training items and breaks score ties by the
smaller item code (item codes are asins in byte order), so every figure is reproducible.

    random       uniform random scores (seeded)
    popularity   number of training reviewers of the item
    item-kNN     cosine similarity between item columns of X; each item keeps its k most similar items;
                 score(u, j) = sum over u's items i of sim_k(i, j). With ``decay`` < 1 the reviewer's items
                 are weighted decay**age, age 0 for the newest (ties in time share the newer age)
    ALS          implicit-feedback matrix factorisation (the ``implicit`` package), confidence 1 + alpha
    content      items described by one-hot features (review-file category, metadata main category and
                 category breadcrumb, brand), idf-weighted and L2-normalised; a reviewer's profile is the sum of
                 their items' vectors; score = profile . item. Equal scores (every item of one category
                 shares one) are ordered by training popularity (a 1e-6 weighted tie-break)
    hybrid       sum of weights x components, each component divided by its largest score for the reviewer
                 (so each lies in [0, 1]); weights chosen on the validation split only
"""
from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

BATCH = 128


# ------------------------------------------------------------------------------------------- matrices
def interaction_matrix(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int,
                       weight: np.ndarray | None = None) -> sp.csr_matrix:
    """Binary (or ``weight``-valued) CSR reviewer x item matrix; duplicate pairs keep the largest weight."""
    w = np.ones(len(user), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
    m = sp.csr_matrix((w, (user, item)), shape=(n_users, n_items), dtype=np.float32)
    m.sum_duplicates()
    if weight is None:
        m.data[:] = 1.0
    return m


def recency_weights(user: np.ndarray, ts: np.ndarray, decay: float) -> np.ndarray:
    """Per interaction: decay ** age, age = number of distinct earlier-than-newest times of the reviewer
    after this one (0 for the newest time; interactions sharing a time share a weight)."""
    n = len(user)
    if n == 0 or decay >= 1.0:
        return np.ones(n, dtype=np.float32)
    order = np.lexsort((-ts, user))                   # newest first within each user
    u, t = user[order], ts[order]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = u[1:] != u[:-1]
    new_time = new_user.copy()
    new_time[1:] |= t[1:] != t[:-1]
    step = np.cumsum(new_time)                        # distinct-time counter, global
    start = np.maximum.accumulate(np.where(new_user, step, 0))
    age = step - start
    w = np.empty(n, dtype=np.float32)
    w[order] = decay ** age
    return w


def top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: the smaller column), vectorised."""
    m = m.tocsr()
    m.eliminate_zeros()
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((m.indices, -m.data, rows))
    pos = np.arange(len(order)) - np.repeat(m.indptr[:-1], counts)
    keep = order[pos < k]
    keep.sort()
    return sp.csr_matrix((m.data[keep], m.indices[keep], np.r_[0, np.cumsum(np.minimum(counts, k))]),
                         shape=m.shape)


def cosine_neighbours(X: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Item x item cosine similarity of the columns of binary ``X``, diagonal removed, top ``k`` per row."""
    Xb = X.copy().tocsc()
    Xb.data[:] = 1.0
    co = (Xb.T @ Xb).tocsr().astype(np.float32)
    norms = np.sqrt(co.diagonal())
    co.setdiag(0)
    co.eliminate_zeros()
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    co.data *= inv[rows] * inv[co.indices]
    return top_k_rows(co, k)


# ------------------------------------------------------------------------------------------- models
class Random:
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, X, **_):
        self.n_items = X.shape[1]
        return self

    def scores(self, users, X):
        rng = np.random.default_rng([self.seed, int(users[0]) if len(users) else 0, len(users)])
        return rng.random((len(users), self.n_items), dtype=np.float32)


class Popularity:
    name = "popularity"

    def fit(self, X, **_):
        self.pop = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float32)
        return self

    def scores(self, users, X):
        return np.broadcast_to(self.pop, (len(users), len(self.pop))).copy()


class ItemKNN:
    name = "item-kNN"

    def __init__(self, k: int = 100, decay: float = 1.0):
        self.k, self.decay = k, decay

    def fit(self, X, **_):
        self.sim = cosine_neighbours(X, self.k)
        return self

    def scores(self, users, X):
        return np.asarray((X[users] @ self.sim).todense(), dtype=np.float32)


class ALS:
    name = "ALS"

    def __init__(self, factors: int = 64, alpha: float = 10.0, regularization: float = 0.05,
                 iterations: int = 15, seed: int = 0):
        self.factors, self.alpha, self.regularization = factors, alpha, regularization
        self.iterations, self.seed = iterations, seed

    def fit(self, X, **_):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
        Xb = X.copy().tocsr()
        Xb.data[:] = 1.0
        model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                        alpha=self.alpha, iterations=self.iterations, random_state=self.seed,
                                        calculate_training_loss=False, num_threads=2)
        with threadpool_limits(1, "blas"):
            model.fit(Xb.astype(np.float32), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def scores(self, users, X):
        return self.user_factors[users] @ self.item_factors.T


class Content:
    name = "content"

    def __init__(self, features: sp.csr_matrix):
        self.features = features.tocsr().astype(np.float32)
        self.features.sort_indices()
        self.features_t = self.features.T.tocsr()      # feature x item, for the (users, items) product
        self.features_t.sort_indices()

    def fit(self, X, **_):
        self.pop = Popularity().fit(X).pop
        self.tie = (1e-6 * self.pop / max(float(self.pop.max(initial=0)), 1.0)).astype(np.float32)
        return self

    def similarity(self, users, X):
        """profile . item without the popularity tie-break, (len(users), n_items) float32.

        Sparse profile x sparse (feature x item) matrix: the same float32 sums, term by term in the same
        (ascending feature) order, as item features x dense profile, without transposing a dense
        (items, users) block (``test_content_similarity_matches_dense_product``)."""
        profile = (X[users] @ self.features).astype(np.float32).tocsr()      # (u, features), sparse
        profile.sort_indices()
        return (profile @ self.features_t).toarray()

    def scores(self, users, X):
        s = self.similarity(users, X)
        s += self.tie
        return s


def item_features(n_items: int, item_tokens: list[tuple[int, str]]) -> tuple[sp.csr_matrix, list[str]]:
    """(item code, feature token) pairs -> idf-weighted, L2-normalised item x feature CSR + the vocabulary."""
    if not item_tokens:
        return sp.csr_matrix((n_items, 0), dtype=np.float32), []
    items = np.fromiter((i for i, _ in item_tokens), dtype=np.int64, count=len(item_tokens))
    vocab, tok = np.unique(np.array([t for _, t in item_tokens], dtype=object), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(items), np.float32), (items, tok)), shape=(n_items, len(vocab)))
    m.sum_duplicates()
    m.data[:] = 1.0
    df = np.asarray(m.sum(axis=0)).ravel()
    idf = np.log((1.0 + n_items) / (1.0 + df)) + 1.0
    m = m @ sp.diags(idf.astype(np.float32))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)) @ m
    return m.tocsr().astype(np.float32), [str(v) for v in vocab]


def _row_max_normalise(s: np.ndarray) -> np.ndarray:
    """Each row divided by its largest value (rows whose largest value is not positive become 0)."""
    mx = s.max(axis=1, keepdims=True)
    inv = np.divide(np.float32(1.0), mx, out=np.zeros_like(mx), where=mx > 0)
    return s * inv


def _scaled_dense(m: sp.csr_matrix, w: float) -> np.ndarray:
    """Dense float32 ``m`` with each row times w / (row maximum) (0 where the maximum is not positive),
    scaled on the stored entries before densifying: the same values as densify-then-scale, without two
    passes over the dense block (implicit zeros count in the maximum and stay 0)."""
    m = m.tocsr().astype(np.float32, copy=False)    # a fresh product: scaled in place
    n_cols = m.shape[1]
    counts = np.diff(m.indptr)
    mx = np.where(counts < n_cols, np.float32(0), np.float32(-np.inf)).astype(np.float32)
    has = counts > 0
    if has.any():
        mx[has] = np.maximum(mx[has], np.maximum.reduceat(m.data, m.indptr[:-1][has]))
    scale = np.divide(np.float32(w), mx, out=np.zeros_like(mx), where=mx > 0)
    m.data *= np.repeat(scale, counts)
    return m.toarray()


class Hybrid:
    """weights: {component name: weight}; components: fitted models. ``X_weighted``: the recency-weighted
    training matrix (used by the kNN component instead of the binary one when given)."""
    name = "hybrid"

    def __init__(self, components: dict, weights: dict, X_weighted: sp.csr_matrix | None = None):
        self.components, self.weights, self.Xw = components, weights, X_weighted

    def fit(self, X, **_):
        return self

    scores_are_fresh = True    # ``scores`` returns a new array the caller may modify (no defensive copy)

    def scores(self, users, X):
        out = None
        sim = None
        for name, w in self.weights.items():
            if w == 0:
                continue
            model = self.components[name]
            if isinstance(model, ItemKNN):
                s = _scaled_dense((self.Xw if self.Xw is not None else X)[users] @ model.sim, w)
            elif isinstance(model, Content):
                sim = model.similarity(users, X) if sim is None else sim
                s = sim + model.tie
            elif isinstance(model, RecentPopularity) and model.content is not None:
                sim = model.content.similarity(users, X) if sim is None else sim
                s = model.scores(users, X, content_similarity=sim)
            else:
                s = model.scores(users, X)
            if not isinstance(model, ItemKNN):
                mx = s.max(axis=1, keepdims=True)
                scale = np.divide(np.float32(w), mx, out=np.zeros_like(mx), where=mx > 0)
                s *= scale
            if out is None:         # the first component's scaled scores start the sum (0 + s == s)
                out = s
            else:
                out += s
        return np.zeros((len(users), X.shape[1]), dtype=np.float32) if out is None else out


# ------------------------------------------------------------------------------------------- ranking
def _mask_seen(s: np.ndarray, X: sp.csr_matrix, users: np.ndarray) -> None:
    sub = X[users]
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
    s[rows, sub.indices] = -np.inf


def ranks(model, X: sp.csr_matrix, users: np.ndarray, items: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """1-based rank of ``items[j]`` for ``users[j]`` among ALL items not in the user's training row:
    1 + (#items scoring higher) + (#items scoring equal with a smaller code)."""
    out = np.empty(len(users), dtype=np.int64)
    for a in range(0, len(users), batch):
        u, it = users[a:a + batch], items[a:a + batch]
        s = model.scores(u, X)
        s = np.array(s, dtype=np.float32, copy=True)
        _mask_seen(s, X, u)
        target = s[np.arange(len(u)), it][:, None]
        higher = (s > target).sum(axis=1)
        equal_before = ((s == target) & (np.arange(s.shape[1])[None, :] < it[:, None])).sum(axis=1)
        out[a:a + batch] = 1 + higher + equal_before
    return out


TOP_BLOCK = 256


def _top_candidates(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a superset of each row's ``n`` largest entries, including every entry equal to the
    n-th largest, found without a full partition: the n-th largest of the per-block maxima (blocks of
    ``TOP_BLOCK`` columns) is a lower bound ``thr`` of the row's n-th largest value (n blocks each hold an
    entry >= thr), so only blocks whose maximum reaches ``thr``, plus the last partial block, are scanned.
    Rows come out in order."""
    b, m = s.shape
    nb = m // TOP_BLOCK
    if nb < n:                                      # small catalogue: the exact n-th largest value
        thr = np.partition(s, m - n, axis=1)[:, m - n]
        return np.nonzero(s >= thr[:, None])
    head = s[:, :nb * TOP_BLOCK].reshape(b, nb, TOP_BLOCK)
    bmax = head.max(axis=2)
    thr = np.partition(bmax, nb - n, axis=1)[:, nb - n]
    br, bc = np.nonzero(bmax >= thr[:, None])
    vals = head[br, bc]                             # (candidate blocks, TOP_BLOCK)
    k, j = np.nonzero(vals >= thr[br][:, None])
    rows, cols = br[k], bc[k] * TOP_BLOCK + j
    if nb * TOP_BLOCK < m:
        tail = s[:, nb * TOP_BLOCK:]
        tr, tc = np.nonzero(tail >= thr[:, None])
        rows, cols = np.r_[rows, tr], np.r_[cols, tc + nb * TOP_BLOCK]
    return rows, cols


def top_n(model, X: sp.csr_matrix, users: np.ndarray, n: int, batch: int = BATCH,
          progress=None) -> tuple[np.ndarray, np.ndarray]:
    """-> (items (len(users), n) int64, scores float32) best first, training items excluded, ties by the
    smaller item code. Slots beyond the number of rankable items hold item -1."""
    n_items = X.shape[1]
    n_eff = min(n, n_items)
    items = np.full((len(users), n), -1, dtype=np.int64)
    vals = np.full((len(users), n), -np.inf, dtype=np.float32)
    fresh = getattr(model, "scores_are_fresh", False)
    for a in range(0, len(users), batch):
        u = users[a:a + batch]
        s = model.scores(u, X)
        if not (fresh and isinstance(s, np.ndarray) and s.dtype == np.float32 and s.flags.c_contiguous):
            s = np.array(s, dtype=np.float32, copy=True)
        _mask_seen(s, X, u)
        # candidates: every item that can be among the n best (ties at the n-th included), then the exact
        # order (score desc, code asc) among them; the first n per row are kept
        cand_rows, cand_cols = _top_candidates(s, n_eff)
        order = np.lexsort((cand_cols, -s[cand_rows, cand_cols], cand_rows))
        cr, cc = cand_rows[order], cand_cols[order]
        pos = np.arange(len(cr)) - np.searchsorted(cr, cr)
        keep = pos < n_eff
        items[a + cr[keep], pos[keep]] = cc[keep]
        vals[a + cr[keep], pos[keep]] = s[cr[keep], cc[keep]]
        if progress is not None:
            progress(min(a + batch, len(users)), len(users))
    items[~np.isfinite(vals)] = -1
    return items, vals


class RecentPopularity:
    """Popularity at the reviewer's own moment: item review counts per 30-day bin, decayed by ``decay`` per
    bin, summed over bins up to the bin of the reviewer's newest training interaction (nothing later than the
    reviewer's own last known time is used). Multiplied by the content score when ``content`` is given
    ("what was trending, among products like yours, when you were last active")."""
    name = "trend"
    BIN_S = 30 * 86400

    def __init__(self, decay: float = 0.8, content: Content | None = None):
        self.decay, self.content = decay, content

    def fit(self, X, user=None, item=None, ts=None, **_):
        n_users, n_items = X.shape
        b = (ts // self.BIN_S).astype(np.int64)
        self.b0 = int(b.min(initial=0))
        b = b - self.b0
        n_bins = int(b.max(initial=0)) + 1
        counts = np.zeros((n_bins, n_items), dtype=np.float32)
        np.add.at(counts, (b, item), 1.0)
        for k in range(1, n_bins):                      # running decayed sum over bins
            counts[k] += self.decay * counts[k - 1]
        self.P = counts
        ref = np.full(n_users, -1, dtype=np.int64)
        np.maximum.at(ref, user, b)
        self.ref = np.where(ref < 0, n_bins - 1, ref)
        return self

    def scores(self, users, X, content_similarity=None):
        s = self.P[self.ref[users]]
        if self.content is not None:
            s *= self.content.similarity(users, X) if content_similarity is None else content_similarity
        return s
