"""Leave-last-out split on encoded interactions (integer reviewer and item codes, times in seconds).

Rules:

* A reviewer's interactions are ordered by (time, item code). Their LAST interaction is held out only when
  its time is STRICTLY later than the time of the one before it: 2014 reviews have day resolution, so a
  last item that shares its time with another one has no defined "next" item, and that reviewer is not a
  test reviewer (all of their interactions stay in training).
* Reviewers with a single interaction are never held out (they stay in training, adding co-occurrence
  information to nobody, and popularity to their item).
* The same rule applied to the training rows gives the VALIDATION split (each reviewer's second-last
  interaction when strictly later than the one before), used for all tuning; the test rows are never seen.
"""
from __future__ import annotations

import numpy as np


def order_by_user_time(user: np.ndarray, ts: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Row order by (user, time, item)."""
    return np.lexsort((item, ts, user))


def leave_last_out(user: np.ndarray, ts: np.ndarray, item: np.ndarray) -> np.ndarray:
    """-> boolean mask of the held-out rows: at most one per user, its strictly-latest interaction."""
    n = len(user)
    held = np.zeros(n, dtype=bool)
    if n < 2:
        return held
    order = order_by_user_time(user, ts, item)
    u, t = user[order], ts[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = u[1:] != u[:-1]                      # last row of each user's run
    prev_same = np.zeros(n, dtype=bool)
    prev_same[1:] = u[1:] == u[:-1]                  # the row before belongs to the same user
    prev_t = np.empty(n, dtype=t.dtype)
    prev_t[0] = t[0]
    prev_t[1:] = t[:-1]
    chosen = last & prev_same & (t > prev_t)
    held[order[chosen]] = True
    return held


def check_no_leak(train_user: np.ndarray, train_item: np.ndarray, test_user: np.ndarray,
                  test_item: np.ndarray, train_ts: np.ndarray | None = None,
                  test_ts: np.ndarray | None = None) -> None:
    """Raise AssertionError if a held-out (user, item) pair is also a training pair, a user is held out twice,
    or (with times) a training interaction of a test user is at or after its held-out time."""
    if len(np.unique(test_user)) != len(test_user):
        raise AssertionError("a reviewer has more than one held-out interaction")
    n_items = int(max(train_item.max(initial=0), test_item.max(initial=0))) + 1
    train_pairs = train_user.astype(np.int64) * n_items + train_item
    test_pairs = test_user.astype(np.int64) * n_items + test_item
    leaked = np.isin(test_pairs, train_pairs)
    if leaked.any():
        raise AssertionError(f"{int(leaked.sum())} held-out interactions are also in training")
    if train_ts is not None and test_ts is not None and len(test_user):
        held_t = np.full(int(max(train_user.max(initial=0), test_user.max())) + 1, np.iinfo(np.int64).max)
        held_t[test_user] = test_ts
        late = train_ts >= held_t[train_user]
        if late.any():
            raise AssertionError(f"{int(late.sum())} training interactions are not earlier than their "
                                 "reviewer's held-out one")
