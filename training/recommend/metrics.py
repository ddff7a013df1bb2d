"""Ranking metrics with one held-out item per test reviewer, and bootstrap intervals.

With exactly one relevant item at 1-based rank r among the ranked catalogue:

    Recall@k = 1 if r <= k else 0
    NDCG@k   = 1 / log2(r + 1) if r <= k else 0      (the ideal DCG is 1)

Intervals: percentile bootstrap over test reviewers (resampled with replacement, ``n_boot`` draws, fixed
seed). The paired bootstrap of a difference resamples the SAME reviewers for both models in each draw.
"""
from __future__ import annotations

import numpy as np

DEFAULT_BOOT = 1000


def recall_at(rank: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-reviewer Recall@k from the held-out item's 1-based rank."""
    return (np.asarray(rank) <= k).astype(np.float64)


def ndcg_at(rank: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-reviewer NDCG@k from the held-out item's 1-based rank."""
    rank = np.asarray(rank, dtype=np.float64)
    return np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts: how often each reviewer is drawn in each bootstrap sample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) if n else np.zeros((n_boot, 0))


def bootstrap(values: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of per-reviewer ``values`` with its percentile bootstrap interval: {mean, low, high, n}."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    means = _draws(n, n_boot, seed) @ values / n
    a = (1 - level) / 2
    return {"mean": float(values.mean()), "low": float(np.quantile(means, a)),
            "high": float(np.quantile(means, 1 - a)), "n": int(n)}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of ``a - b`` (per reviewer, same reviewers) with a paired percentile interval."""
    return bootstrap(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), n_boot, seed, level)
