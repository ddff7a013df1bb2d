"""The offline protocol: leave-last-out, full-catalogue ranking, bootstrap intervals, validation tuning.

1. Interactions (``data.interactions``: copies collapsed to the smallest asin, one interaction per
   reviewer and product) are encoded: reviewers and products get codes in sorted (byte) order.
2. TEST: each reviewer's strictly-latest interaction (``split.leave_last_out``). VALIDATION: the same rule
   on the remaining training rows. Tuning sees only train-minus-validation (fit) and validation (score).
3. Every model ranks ALL products (the catalogue is every product of the data, including products that
   occur only in held-out rows: no model can score those above zero, as in serving); the reviewer's
   training products are excluded; ties go to the smaller product code.
4. Recall@10, NDCG@10 with 95 % percentile bootstrap intervals over test reviewers, overall and per
   category (the category of the held-out review's file); a paired bootstrap of shipped minus item-kNN.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from training.recommend import metrics, split
from training.recommend import models as M
from training.recommend.data import log

K = 10
DEFAULTS = {"knn_k": 100, "als_factors": 64, "als_alphas": (1.0, 10.0, 40.0), "als_iterations": 15,
            "n_boot": 1000, "seed": 0}
# the configuration shipped by default: chosen by ``tune`` on the validation split of the real data
# (reviews in ../shared/data/amazon + amazon2023, see docs/recommendations.md); `train --tune` re-chooses it
SHIPPED = {"als_alpha": 40.0, "weights": {"content": 1.0, "trend": 1.0, "als": 1.0}, "decay": 0.4}
# the weight grid the validation search walks (coordinate ascent from the item-kNN-only start)
GRID = {"content": (0.0, 0.1, 0.3, 1.0, 3.0), "trend": (0.0, 0.1, 0.3, 1.0, 3.0), "als": (0.0, 0.1, 0.3, 1.0),
        "decay": (1.0, 0.7, 0.4, 0.1)}


@dataclass
class Encoded:
    users: np.ndarray      # reviewer ids (str), code = position
    items: np.ndarray      # asins (str), code = position
    user: np.ndarray       # per interaction
    item: np.ndarray
    ts: np.ndarray
    category: np.ndarray   # per interaction (object)

    @property
    def n_users(self):
        return len(self.users)

    @property
    def n_items(self):
        return len(self.items)


def encode(inter: pa.Table) -> Encoded:
    rid = np.asarray(inter["reviewer_id"].to_numpy(zero_copy_only=False)).astype(str)
    asin = np.asarray(inter["asin"].to_numpy(zero_copy_only=False)).astype(str)
    users, u = np.unique(rid, return_inverse=True)
    items, i = np.unique(asin, return_inverse=True)
    return Encoded(users, items, u.astype(np.int64), i.astype(np.int64),
                   np.asarray(inter["ts"].to_numpy(), dtype=np.int64),
                   np.asarray(inter["category"].to_numpy(zero_copy_only=False), dtype=object))


def item_tokens(enc: Encoded, products: pa.Table) -> list[tuple[int, str]]:
    """Content features: ``cat=<review file category>`` for every category the product was reviewed in, plus
    from metadata ``brand=<brand, casefolded>``, ``main=<main_cat>`` and ``c=<breadcrumb entry>``."""
    pairs = set(zip(enc.item.tolist(), enc.category.tolist()))
    toks = [(i, "cat=" + c) for i, c in pairs]
    if products.num_rows:
        asin = np.asarray(products["asin"].to_numpy(zero_copy_only=False)).astype(str)
        pos = np.searchsorted(enc.items, asin)
        pos_c = np.minimum(pos, enc.n_items - 1)
        found = enc.items[pos_c] == asin
        brand, main, cats = (products[c].to_pylist() for c in ("brand", "main_cat", "categories"))
        for k in np.flatnonzero(found):
            i = int(pos_c[k])
            if brand[k]:
                toks.append((i, "brand=" + brand[k].casefold()))
            if main[k]:
                toks.append((i, "main=" + main[k]))
            toks += [(i, "c=" + c) for c in (cats[k] or [])]
    return toks


def fit_components(enc: Encoded, rows: np.ndarray, features, *, knn_k=100, als_factors=64, als_alpha=10.0,
                   als_iterations=15, decay=1.0, trend_decay=0.8, seed=0, with_als=True) -> dict:
    """Fit every component on the interactions ``rows`` (boolean mask or indices) -> {name: model, "X": ...}."""
    u, i, t = enc.user[rows], enc.item[rows], enc.ts[rows]
    X = M.interaction_matrix(u, i, enc.n_users, enc.n_items)
    out = {"X": X, "Xw": M.interaction_matrix(u, i, enc.n_users, enc.n_items, M.recency_weights(u, t, decay))}
    out["random"] = M.Random(seed).fit(X)
    out["popularity"] = M.Popularity().fit(X)
    out["knn"] = M.ItemKNN(knn_k).fit(X)
    out["content"] = M.Content(features).fit(X)
    out["trend"] = M.RecentPopularity(trend_decay, out["content"]).fit(X, user=u, item=i, ts=t)
    if with_als:
        out["als"] = M.ALS(als_factors, als_alpha, iterations=als_iterations, seed=seed).fit(X)
    return out


def hybrid(comps: dict, weights: dict, decay: float, enc: Encoded | None = None, rows=None) -> M.Hybrid:
    """The shipped model: item-kNN (on recency-weighted rows when decay < 1) + weighted components."""
    Xw = None
    if decay < 1.0:
        Xw = comps["Xw"] if comps.get("decay") == decay or enc is None else M.interaction_matrix(
            enc.user[rows], enc.item[rows], enc.n_users, enc.n_items,
            M.recency_weights(enc.user[rows], enc.ts[rows], decay))
    return M.Hybrid({k: comps[k] for k in ("knn", "content", "trend", "als") if k in comps},
                    {"knn": 1.0, **weights}, Xw)


def recall_of(model, X, users, items) -> float:
    return float(metrics.recall_at(M.ranks(model, X, users, items), K).mean())


def tune(enc: Encoded, train_rows: np.ndarray, features, cfg: dict) -> dict:
    """Choose the ALS alpha and the hybrid weights on the VALIDATION split carved from ``train_rows``.

    Validation = each training reviewer's strictly-latest training interaction; models are fitted on the
    training rows without them. Coordinate ascent over ``GRID`` (two passes), criterion Recall@10, ties
    keep the earlier (simpler) value. Returns {"als_alpha", "weights", "decay", "validation": {...}}."""
    t0 = time.perf_counter()
    tr = np.flatnonzero(train_rows)
    val_mask = split.leave_last_out(enc.user[tr], enc.ts[tr], enc.item[tr])
    fit_rows, val_rows = tr[~val_mask], tr[val_mask]
    vu, vi = enc.user[val_rows], enc.item[val_rows]
    log(f"validation: {len(val_rows):,} reviewers; fitting components on {len(fit_rows):,} interactions")
    comps = fit_components(enc, fit_rows, features, knn_k=cfg["knn_k"], als_factors=cfg["als_factors"],
                           als_alpha=cfg["als_alphas"][0], als_iterations=cfg["als_iterations"],
                           seed=cfg["seed"], with_als=False)
    X = comps["X"]
    report = {"reviewers": len(val_rows)}
    best_alpha, best_als = None, -1.0
    for a in cfg["als_alphas"]:
        als = M.ALS(cfg["als_factors"], a, iterations=cfg["als_iterations"], seed=cfg["seed"]).fit(X)
        r = recall_of(als, X, vu, vi)
        report[f"als_alpha_{a:g}"] = r
        if r > best_als:
            best_alpha, best_als, comps["als"] = a, r, als
    log(f"validation: ALS alpha {best_alpha:g} (Recall@10 {best_als:.4f}), {time.perf_counter() - t0:.0f}s")
    report["knn"] = recall_of(comps["knn"], X, vu, vi)
    state = {"content": 0.0, "trend": 0.0, "als": 0.0, "decay": 1.0}
    xw_cache: dict = {}

    def score(st):
        d = st["decay"]
        if d not in xw_cache:
            xw_cache[d] = M.interaction_matrix(enc.user[fit_rows], enc.item[fit_rows], enc.n_users, enc.n_items,
                                               M.recency_weights(enc.user[fit_rows], enc.ts[fit_rows], d))
        model = M.Hybrid({k: comps[k] for k in ("knn", "content", "trend", "als")},
                         {"knn": 1.0, **{k: st[k] for k in ("content", "trend", "als")}},
                         xw_cache[d] if d < 1.0 else None)
        return recall_of(model, X, vu, vi)

    best = score(state)
    for _ in range(2):
        improved = False
        for name, values in GRID.items():
            for v in values:
                if v == state[name]:
                    continue
                trial = {**state, name: v}
                r = score(trial)
                if r > best + 1e-12:
                    best, state, improved = r, trial, True
            log(f"validation: {name} -> {state[name]:g} (Recall@10 {best:.4f}), {time.perf_counter() - t0:.0f}s")
        if not improved:
            break
    report["hybrid"] = best
    return {"als_alpha": best_alpha, "weights": {k: state[k] for k in ("content", "trend", "als")},
            "decay": state["decay"], "validation": report}


def _optimistic_ranks(model, X, users, items, batch=M.BATCH):
    """1 + #items scoring strictly higher (ties resolved in the held-out item's favour): a diagnostic only."""
    out = np.empty(len(users), dtype=np.int64)
    for a in range(0, len(users), batch):
        u, it = users[a:a + batch], items[a:a + batch]
        s = np.array(model.scores(u, X), dtype=np.float32, copy=True)
        M._mask_seen(s, X, u)
        out[a:a + batch] = 1 + (s > s[np.arange(len(u)), it][:, None]).sum(axis=1)
    return out


def _summary(rank: np.ndarray, cats: np.ndarray, n_boot: int, seed: int) -> dict:
    out = {"overall": {"recall@10": metrics.bootstrap(metrics.recall_at(rank, K), n_boot, seed),
                       "ndcg@10": metrics.bootstrap(metrics.ndcg_at(rank, K), n_boot, seed)},
           "per_category": {}}
    for c in sorted(set(cats.tolist())):
        m = cats == c
        out["per_category"][c] = {"recall@10": metrics.bootstrap(metrics.recall_at(rank[m], K), n_boot, seed),
                                  "ndcg@10": metrics.bootstrap(metrics.ndcg_at(rank[m], K), n_boot, seed)}
    return out


def run(enc: Encoded, features, cfg: dict | None = None, tuned: dict | None = None,
        only: tuple | None = None) -> dict:
    """The whole protocol -> a JSON-able report (figures, intervals, the tuned configuration, leak check).
    ``only``: evaluate just these models (item-kNN and shipped are always evaluated)."""
    cfg = {**DEFAULTS, **(cfg or {})}
    t0 = time.perf_counter()
    held = split.leave_last_out(enc.user, enc.ts, enc.item)
    train = ~held
    tu, ti = enc.user[held], enc.item[held]
    split.check_no_leak(enc.user[train], enc.item[train], tu, ti, enc.ts[train], enc.ts[held])
    log(f"split: {int(held.sum()):,} test reviewers of {enc.n_users:,}; {enc.n_items:,} products "
        f"({len(np.unique(enc.item[train])):,} with training interactions); no leak")
    if tuned is None:
        tuned = tune(enc, train, features, cfg)
    comps = fit_components(enc, train, features, knn_k=cfg["knn_k"], als_factors=cfg["als_factors"],
                           als_alpha=tuned["als_alpha"], als_iterations=cfg["als_iterations"],
                           decay=tuned["decay"], seed=cfg["seed"])
    comps["decay"] = tuned["decay"]
    X = comps["X"]
    shipped = hybrid(comps, tuned["weights"], tuned["decay"])
    models = {"random": comps["random"], "popularity": comps["popularity"], "item-kNN": comps["knn"],
              "ALS": comps["als"], "content": comps["content"], "shipped": shipped}
    if only is not None:
        models = {k: v for k, v in models.items() if k in set(only) | {"item-kNN", "shipped"}}
    cats = enc.category[held]
    ranks, results = {}, {}
    for name, model in models.items():
        ranks[name] = M.ranks(model, X, tu, ti)
        results[name] = _summary(ranks[name], cats, cfg["n_boot"], cfg["seed"])
        r = results[name]["overall"]
        log(f"test {name}: Recall@10 {r['recall@10']['mean']:.4f} [{r['recall@10']['low']:.4f}, "
            f"{r['recall@10']['high']:.4f}], NDCG@10 {r['ndcg@10']['mean']:.4f}")
    diff = {m: metrics.paired_bootstrap(metrics.recall_at(ranks["shipped"], K), metrics.recall_at(ranks["item-kNN"], K),
                                        cfg["n_boot"], cfg["seed"]) for m in ["recall@10"]}
    diff["ndcg@10"] = metrics.paired_bootstrap(metrics.ndcg_at(ranks["shipped"], K), metrics.ndcg_at(ranks["item-kNN"], K),
                                               cfg["n_boot"], cfg["seed"])
    knn_target = np.concatenate([comps["knn"].scores(tu[a:a + 512], X)[np.arange(len(tu[a:a + 512])), ti[a:a + 512]]
                                 for a in range(0, len(tu), 512)]) if len(tu) else np.zeros(0)
    diagnostics = {
        # no ranking of item-kNN scores can place a held-out item with score 0 above the others honestly
        "item_knn_heldout_with_positive_score": float((knn_target > 0).mean()) if len(tu) else float("nan"),
        "item_knn_recall@10_if_ties_went_to_the_heldout_item": float(metrics.recall_at(
            _optimistic_ranks(comps["knn"], X, tu, ti), K).mean()) if len(tu) else float("nan"),
    }
    return {
        "protocol": "leave-last-out (strictly latest), full catalogue, training items excluded, ties -> smaller code",
        "counts": {"reviewers": int(enc.n_users), "products": int(enc.n_items),
                   "products_with_training_interactions": len(np.unique(enc.item[train])),
                   "interactions": len(enc.user), "test_reviewers": int(held.sum()),
                   "validation_reviewers": tuned["validation"]["reviewers"]},
        "tuned": tuned, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "results": results, "shipped_minus_item_knn": diff,
        "shipped_beats_item_knn": bool(diff["recall@10"]["low"] > 0),
        "leak_check": "passed", "diagnostics": diagnostics, "seconds": round(time.perf_counter() - t0, 1),
    }


def _ci(d: dict) -> str:
    return f"{d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]"


def markdown(report: dict) -> str:
    """The report as a short Markdown page (overall table, paired difference, per-category Recall@10)."""
    c = report["counts"]
    lines = ["# Recommendation evaluation", "",
             f"Protocol: {report['protocol']}.", "",
             (f"{c['reviewers']:,} reviewers, {c['products']:,} products ({c['products_with_training_interactions']:,} "
             f"with training interactions), {c['interactions']:,} interactions, {c['test_reviewers']:,} test "
             f"reviewers, {c['validation_reviewers']:,} validation reviewers."), "",
             f"Tuned on validation: {json.dumps({k: v for k, v in report['tuned'].items() if k != 'validation'})}", "",
             "| model | Recall@10 [95% CI] | NDCG@10 [95% CI] |", "|---|---|---|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {_ci(r['overall']['recall@10'])} | {_ci(r['overall']['ndcg@10'])} |")
    d = report["shipped_minus_item_knn"]
    lines += ["", (f"Shipped minus item-kNN (paired bootstrap): Recall@10 {_ci(d['recall@10'])}, "
                  f"NDCG@10 {_ci(d['ndcg@10'])}."), "", "Recall@10 per category (test reviewers):", "",
              "| category | n | " + " | ".join(report["results"]) + " |",
              "|---|---:|" + "---|" * len(report["results"])]
    first = next(iter(report["results"].values()))
    for cat in first["per_category"]:
        n = first["per_category"][cat]["recall@10"]["n"]
        cells = [_ci(r["per_category"][cat]["recall@10"]) for r in report["results"].values()]
        lines.append(f"| {cat} | {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Diagnostics: {json.dumps(report.get('diagnostics', {}))}", ""]
    return "\n".join(lines)
