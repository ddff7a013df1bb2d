"""training.recommend on the real reviews (../shared/data/amazon + amazon2023): the protocol end to end.

Prints the figures; asserts what the data implies (no leak, item-kNN's interval above popularity's, the
counts in the neighbourhood of the issue's), never a hard-coded model score. The shipped configuration is
evaluated as shipped, against random, popularity and item-kNN (no re-tuning, ALS and content
figures here, to stay near a minute on 2 cores; `python -m training.recommend evaluate` reports them all)."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def test_recommend_protocol_on_real_reviews(shared_data_dir, shared_data_2023_dir):
    from training.recommend import data, split
    from training.recommend import evaluate as E
    from training.recommend import models as M

    reviews = f"{shared_data_dir}/reviews/*.jsonl.gz,{shared_data_2023_dir}/reviews/*.jsonl.gz"
    products = f"{shared_data_dir}/metadata/*.jsonl.gz,{shared_data_2023_dir}/metadata/*.jsonl.gz"
    inter, prods = data.load(reviews, products)
    enc = E.encode(inter)
    features, _ = M.item_features(enc.n_items, E.item_tokens(enc, prods))

    # the split leaks nothing, checked independently of run()'s own check
    held = split.leave_last_out(enc.user, enc.ts, enc.item)
    tr = ~held
    pairs_train = set(zip(enc.user[tr].tolist(), enc.item[tr].tolist()))
    assert not any(p in pairs_train for p in zip(enc.user[held].tolist(), enc.item[held].tolist()))
    last_train = np.full(enc.n_users, -1, dtype=np.int64)
    np.maximum.at(last_train, enc.user[tr], enc.ts[tr])
    assert (enc.ts[held] > last_train[enc.user[held]]).all()
    # copies collapsed: no reviewer has two interactions with the same product
    assert len(set(zip(enc.user.tolist(), enc.item.tolist()))) == len(enc.user)

    report = E.run(enc, features, {"n_boot": 300}, tuned={**E.SHIPPED, "validation": {"reviewers": 0}},
                   only=("random", "popularity"))
    print()
    print(E.markdown(report))
    c = report["counts"]
    assert abs(c["reviewers"] - 85_624) / 85_624 < 0.05
    assert abs(c["test_reviewers"] - 6_587) / 6_587 < 0.05
    res = {k: v["overall"]["recall@10"] for k, v in report["results"].items()}
    assert res["popularity"]["low"] > res["random"]["high"]
    assert res["item-kNN"]["low"] > res["popularity"]["high"]
    # every per-category figure covers exactly the test reviewers
    first = report["results"]["item-kNN"]["per_category"]
    assert sum(v["recall@10"]["n"] for v in first.values()) == c["test_reviewers"]
    d = report["shipped_minus_item_knn"]["recall@10"]
    print(f"shipped - item-kNN Recall@10: {d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]")
