"""Fit the shipped recommender on ALL interactions, export it as Delta tables, and serve from them.

Tables under ``--output`` (each a Delta table, written with ``deltalake.write_deltalake``, overwritten):

    recommendations   reviewer_id, rank (1 = best), asin, score, model   top-N per reviewer, training items
                      excluded
    item_neighbours   asin, rank, neighbour_asin, score                   the item-kNN lists (cosine)
    item_factors      asin, factors (list<float32>)                       the ALS item factors
    items             asin, popularity, category                          popularity = training reviewers

plus ``model.json`` (the configuration and weights). ``Recommender.load(output)`` reads them once; then
``recommend(reviewer_id)`` is a dictionary lookup and ``recommend_for_history(asins)`` (a reviewer the
tables do not know) sums the neighbour lists of the given products, with popularity filling the rest.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa

from training.recommend import models as M
from training.recommend.data import DataError, log

MODEL_NAME = "hybrid-knn-als-content-trend"
TABLES = ("recommendations", "item_neighbours", "item_factors", "items")


def _write(path: str, table: pa.Table) -> None:
    from deltalake import write_deltalake
    write_deltalake(path, table, mode="overwrite", schema_mode="overwrite")


def fit_shipped(enc, features, tuned: dict, cfg: dict):
    """-> (components, hybrid model) fitted on every interaction of ``enc``."""
    from training.recommend.evaluate import fit_components, hybrid
    rows = np.ones(len(enc.user), dtype=bool)
    comps = fit_components(enc, rows, features, knn_k=cfg["knn_k"], als_factors=cfg["als_factors"],
                           als_alpha=tuned["als_alpha"], als_iterations=cfg["als_iterations"],
                           decay=tuned["decay"], seed=cfg["seed"])
    comps["decay"] = tuned["decay"]
    return comps, hybrid(comps, tuned["weights"], tuned["decay"])


_SHARED: dict = {}


def _score_range(bounds):
    a, b = bounds
    return M.top_n(_SHARED["model"], _SHARED["X"], np.arange(a, b), _SHARED["top"])


def parallel_top_n(model, X, n_users: int, top: int, workers: int, progress=None):
    """``models.top_n`` for every reviewer, split into contiguous ranges over ``workers`` forked processes
    (the fitted model is shared copy-on-write; one worker = in-process)."""
    users = np.arange(n_users)
    if workers <= 1 or n_users < 4096 or "fork" not in __import__("multiprocessing").get_all_start_methods():
        return M.top_n(model, X, users, top, progress=progress)
    import multiprocessing as mp
    _SHARED.update(model=model, X=X, top=top)
    edges = np.linspace(0, n_users, 8 * workers + 1).astype(int)
    parts = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    out_items, out_scores = [], []
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            for (a, b), (it, sc) in zip(parts, pool.imap(_score_range, parts)):
                out_items.append(it)
                out_scores.append(sc)
                if progress is not None:
                    progress(b, n_users)
    finally:
        _SHARED.clear()
    return np.concatenate(out_items), np.concatenate(out_scores)


def export(enc, features, tuned: dict, cfg: dict, output: str, top: int = 10, workers: int = 2) -> dict:
    """Fit on all data and write the tables; returns timings {fit_s, score_s, write_s, rows}."""
    t0 = time.perf_counter()
    comps, model = fit_shipped(enc, features, tuned, cfg)
    fit_s = time.perf_counter() - t0
    log(f"fitted the shipped model on {len(enc.user):,} interactions in {fit_s:.1f}s; scoring "
        f"top-{top} for {enc.n_users:,} reviewers")
    t1 = time.perf_counter()
    step = max(1, enc.n_users // 10)
    seen = {"next": step}

    def progress(done, total):
        if done >= seen["next"] or done == total:
            log(f"  scored {done:,}/{total:,} reviewers ({time.perf_counter() - t1:.0f}s)")
            seen["next"] = done + step

    items, scores = parallel_top_n(model, comps["X"], enc.n_users, top, workers, progress)
    score_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    os.makedirs(output, exist_ok=True)
    ok = items >= 0
    urow, rank = np.nonzero(ok)
    rec = pa.table({"reviewer_id": pa.array(enc.users[urow], pa.string()),
                    "rank": pa.array(rank + 1, pa.int32()),
                    "asin": pa.array(enc.items[items[ok]], pa.string()),
                    "score": pa.array(scores[ok].astype(np.float64), pa.float64()),
                    "model": pa.array(np.full(len(urow), MODEL_NAME, dtype=object), pa.string())})
    _write(os.path.join(output, "recommendations"), rec)
    sim = comps["knn"].sim.tocsr()
    counts = np.diff(sim.indptr)
    src = np.repeat(np.arange(sim.shape[0]), counts)
    order = np.lexsort((sim.indices, -sim.data, src))          # per item: best neighbour first
    nrank = np.arange(sim.nnz) - np.repeat(sim.indptr[:-1], counts) + 1
    _write(os.path.join(output, "item_neighbours"),
           pa.table({"asin": pa.array(enc.items[src[order]], pa.string()), "rank": pa.array(nrank, pa.int32()),
                     "neighbour_asin": pa.array(enc.items[sim.indices[order]], pa.string()),
                     "score": pa.array(sim.data[order].astype(np.float64), pa.float64())}))
    V = comps["als"].item_factors
    _write(os.path.join(output, "item_factors"),
           pa.table({"asin": pa.array(enc.items, pa.string()),
                     "factors": pa.FixedSizeListArray.from_arrays(pa.array(V.ravel(), pa.float32()),
                                                                   V.shape[1]).cast(pa.list_(pa.float32()))}))
    first_cat = np.full(enc.n_items, None, dtype=object)
    first_cat[enc.item[::-1]] = enc.category[::-1]
    _write(os.path.join(output, "items"),
           pa.table({"asin": pa.array(enc.items, pa.string()),
                     "popularity": pa.array(comps["popularity"].pop.astype(np.int64), pa.int64()),
                     "category": pa.array(first_cat, pa.string())}))
    with open(os.path.join(output, "model.json"), "w") as f:
        json.dump({"model": MODEL_NAME, "top": top, "tuned": tuned,
                   "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                   "reviewers": int(enc.n_users), "products": int(enc.n_items)}, f, indent=1)
    write_s = time.perf_counter() - t2
    log(f"wrote {rec.num_rows:,} recommendations and the item tables to {output} in {write_s:.1f}s")
    return {"fit_s": fit_s, "score_s": score_s, "write_s": write_s, "rows": rec.num_rows}


class Recommender:
    """Serving from the exported tables: load once, then look up in microseconds."""

    def __init__(self, reviewers, starts, ends, rec_asin, rec_score, model, neigh, items, popularity):
        self._index = dict(zip(reviewers, zip(starts.tolist(), ends.tolist())))
        self._asin, self._score, self.model = rec_asin, rec_score, model
        self._neigh, self._items, self._pop = neigh, items, popularity
        self._item_index = {a: k for k, a in enumerate(items.tolist())}
        self._pop_order = np.lexsort((np.arange(len(items)), -popularity))

    @classmethod
    def load(cls, output: str) -> Recommender:
        """Read the tables under ``output`` (DataError when one is missing)."""
        import deltalake
        for name in TABLES:
            if not os.path.isdir(os.path.join(output, name, "_delta_log")):
                raise DataError(f"{os.path.join(output, name)!r} is not an exported table "
                                "(run `python -m training.recommend train` first)")
        from beam_pipeline.tables import arrow_of
        read = lambda n, cols: arrow_of(deltalake.DeltaTable(os.path.join(output, n)), cols)
        rec = read("recommendations", ["reviewer_id", "rank", "asin", "score", "model"])
        rec = rec.sort_by([("reviewer_id", "ascending"), ("rank", "ascending")])
        rid = np.asarray(rec["reviewer_id"].to_numpy(zero_copy_only=False), dtype=object)
        cut = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]]) if len(rid) else np.zeros(0, np.int64)
        ends = np.r_[cut[1:], len(rid)] if len(rid) else cut
        model = rec["model"][0].as_py() if rec.num_rows else MODEL_NAME
        items_t = read("items", ["asin", "popularity"]).sort_by("asin")
        items = np.asarray(items_t["asin"].to_numpy(zero_copy_only=False), dtype=object)
        pop = np.asarray(items_t["popularity"].to_numpy(), dtype=np.float64)
        nb = read("item_neighbours", ["asin", "neighbour_asin", "score"])
        idx = {a: k for k, a in enumerate(items.tolist())}
        src = np.fromiter((idx[a] for a in nb["asin"].to_pylist()), np.int64, nb.num_rows)
        dst = np.fromiter((idx[a] for a in nb["neighbour_asin"].to_pylist()), np.int64, nb.num_rows)
        import scipy.sparse as sp
        neigh = sp.csr_matrix((np.asarray(nb["score"].to_numpy(), np.float64), (src, dst)),
                              shape=(len(items), len(items)))
        return cls(rid[cut].tolist(), cut, ends, np.asarray(rec["asin"].to_numpy(zero_copy_only=False), object),
                   np.asarray(rec["score"].to_numpy(), np.float64), model, neigh, items, pop)

    def known(self, reviewer_id: str) -> bool:
        return reviewer_id in self._index

    def recommend(self, reviewer_id: str, n: int = 10) -> list[dict]:
        """The exported top-``n`` of a known reviewer ([] for an unknown one)."""
        span = self._index.get(reviewer_id)
        if span is None:
            return []
        a, b = span
        b = min(b, a + n)
        return [{"reviewer_id": reviewer_id, "rank": k + 1, "asin": self._asin[a + k], "score": float(self._score[a + k]),
                 "model": self.model} for k in range(b - a)]

    def recommend_for_history(self, asins: list[str], n: int = 10) -> list[dict]:
        """Top-``n`` for a reviewer the tables do not know, from the products they engaged with: the sum of
        those products' neighbour lists (cosine), then the most popular products; the history excluded;
        ties by asin. Unknown asins are ignored."""
        hist = np.array(sorted({self._item_index[a] for a in asins if a in self._item_index}), dtype=np.int64)
        scores: dict[int, float] = {}
        if len(hist):
            rows = self._neigh[hist]
            summed = np.bincount(rows.indices, weights=rows.data, minlength=0)
            cand = np.flatnonzero(summed > 0)
            scores = dict(zip(cand.tolist(), summed[cand].tolist()))
        hset = set(hist.tolist())
        ranked = sorted(((s, k) for k, s in scores.items() if k not in hset), key=lambda t: (-t[0], self._items[t[1]]))
        picked = [(k, s, "item-kNN") for s, k in ranked[:n]]
        if len(picked) < n:
            have = hset | {k for k, _, _ in picked}
            for k in self._pop_order:
                if len(picked) >= n:
                    break
                if int(k) not in have:
                    picked.append((int(k), 0.0, "popularity"))
        return [{"rank": r + 1, "asin": self._items[k], "score": s, "model": m} for r, (k, s, m) in enumerate(picked)]
