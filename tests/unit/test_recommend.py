"""training.recommend: split, metrics, models, trending rule, export round trip, CLI (generated data only)."""
from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from training.recommend import data, metrics, split
from training.recommend import models as M
from training.recommend.trending import trending_for_brands


# ------------------------------------------------------------------------------------------- interactions
def _rows(records):
    cols = {c: [r.get(c) for r in records] for c in data.REVIEW_COLUMNS}
    cols["unix_review_time"] = pa.array(cols["unix_review_time"], pa.int64())
    return pa.table(cols)


def test_copies_collapse_to_smallest_asin_and_repeats_keep_first_time():
    base = {"reviewer_id": "R1", "unix_review_time": 100, "summary": "s", "review_text": "t", "source": "x/Beauty.jsonl.gz"}
    rows = _rows([
        {**base, "asin": "B2"}, {**base, "asin": "B1"}, {**base, "asin": "B3"},          # one review, 3 variants
        {**base, "asin": "B9", "review_text": "other"},                                # another review, same time
        {**base, "asin": "B5", "unix_review_time": 300, "review_text": "again"},
        {**base, "asin": "B5", "unix_review_time": 200, "review_text": "first"},       # repeat: first time kept
        {**base, "reviewer_id": "R2", "asin": "B2"},                                    # other reviewer, own row
    ])
    out = data.interactions(rows).to_pylist()
    assert out == [
        {"reviewer_id": "R1", "asin": "B1", "ts": 100, "category": "Beauty"},
        {"reviewer_id": "R1", "asin": "B9", "ts": 100, "category": "Beauty"},
        {"reviewer_id": "R1", "asin": "B5", "ts": 200, "category": "Beauty"},
        {"reviewer_id": "R2", "asin": "B2", "ts": 100, "category": "Beauty"},
    ]


def test_raw_files_go_through_the_pipeline_parser(tmp_path):
    lines = [
        {"overall": 5.0, "reviewerID": "R1", "asin": "A1", "unixReviewTime": 1_400_000_000, "reviewText": "good",
         "summary": "ok"},
        {"overall": 9.0, "reviewerID": "R1", "asin": "A2", "unixReviewTime": 1_400_000_001, "reviewText": "bad row"},
        {"rating": 4.0, "title": "t", "text": "x", "images": [], "asin": "V1", "parent_asin": "P1", "user_id": "U1",
         "timestamp": 1_600_000_000_999, "helpful_vote": 0, "verified_purchase": True},
    ]
    path = tmp_path / "Toys.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    inter, products = data.load(reviews=str(path))
    assert inter.to_pylist() == [
        {"reviewer_id": "R1", "asin": "A1", "ts": 1_400_000_000, "category": "Toys"},
        {"reviewer_id": "U1", "asin": "P1", "ts": 1_600_000_000, "category": "Toys"},  # parent_asin, ms floored
    ]
    assert products.num_rows == 0


def test_silver_delta_input(tmp_path):
    from deltalake import write_deltalake
    silver = tmp_path / "silver" / "reviews"
    write_deltalake(str(silver), pa.table({
        "reviewer_id": ["R1", "R1", "R2"], "asin": ["A2", "A1", "A1"], "unix_review_time": pa.array([5, 5, 7], pa.int64()),
        "summary": ["s", "s", "x"], "review_text": ["t", "t", "y"], "source": ["d/Books.jsonl.gz"] * 3,
        "brand": ["Acme", None, None], "main_cat": [None, "Books", "Books"], "overall": [5.0, 5.0, 1.0]}))
    inter, products = data.load(silver=str(silver))
    assert inter.to_pylist() == [{"reviewer_id": "R1", "asin": "A1", "ts": 5, "category": "Books"},
                                 {"reviewer_id": "R2", "asin": "A1", "ts": 7, "category": "Books"}]
    assert sorted(products["asin"].to_pylist()) == ["A1", "A2"]
    with pytest.raises(data.DataError, match="not a Delta table"):
        data.load(silver=str(tmp_path))


# ------------------------------------------------------------------------------------------- split
def test_leave_last_out_strict_ties_and_singletons():
    #            user 0: times 1,2,3 -> 3 held; user 1: 1,5,5 tie -> none; user 2: single -> none; user 3: 4,9 -> 9
    user = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3])
    ts = np.array([2, 1, 3, 1, 5, 5, 7, 9, 4])
    item = np.array([1, 0, 2, 3, 4, 5, 6, 7, 8])
    held = split.leave_last_out(user, ts, item)
    assert np.flatnonzero(held).tolist() == [2, 7]
    tr = ~held
    split.check_no_leak(user[tr], item[tr], user[held], item[held], ts[tr], ts[held])
    # no held-out interaction is in training, and every held-out time is after all of its user's training times
    assert not set(zip(user[held], item[held])) & set(zip(user[tr], item[tr]))
    for u, t in zip(user[held], ts[held]):
        assert (ts[tr][user[tr] == u] < t).all()


def test_check_no_leak_detects_leaks():
    with pytest.raises(AssertionError, match="also in training"):
        split.check_no_leak(np.array([0, 0]), np.array([1, 2]), np.array([0]), np.array([2]))
    with pytest.raises(AssertionError, match="not earlier"):
        split.check_no_leak(np.array([0]), np.array([1]), np.array([0]), np.array([2]), np.array([5]), np.array([5]))
    with pytest.raises(AssertionError, match="more than one"):
        split.check_no_leak(np.array([0]), np.array([1]), np.array([1, 1]), np.array([2, 3]))


def test_validation_split_is_carved_from_training_only():
    rng = np.random.default_rng(3)
    user, ts, item = rng.integers(0, 40, 400), rng.integers(0, 30, 400), rng.integers(0, 60, 400)
    _, first = np.unique(user * 1000 + item, return_index=True)
    user, ts, item = user[first], ts[first], item[first]
    held = split.leave_last_out(user, ts, item)
    tr = np.flatnonzero(~held)
    val = split.leave_last_out(user[tr], ts[tr], item[tr])
    assert not (held[tr[val]]).any()
    for u in np.unique(user[held]):
        assert ts[tr[val]][user[tr[val]] == u].max(initial=-1) <= ts[held][user[held] == u][0]


# ------------------------------------------------------------------------------------------- metrics
def _brute_rank(scores, seen, target):
    cands = [j for j in range(len(scores)) if j not in seen]
    order = sorted(cands, key=lambda j: (-scores[j], j))
    return order.index(target) + 1


def test_ranks_and_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    S = rng.integers(0, 4, (n_users, n_items)).astype(np.float32)   # many ties on purpose
    X = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    users = np.arange(n_users)
    targets = np.array([next(j for j in rng.permutation(n_items) if X[u, j] == 0) for u in users])

    class Fixed:
        def scores(self, u, X):
            return S[u]

    r = M.ranks(Fixed(), X, users, targets, batch=7)
    brute = [_brute_rank(S[u], set(X[u].indices), targets[u]) for u in users]
    assert r.tolist() == brute
    for k in (1, 5, 10):
        assert metrics.recall_at(r, k).tolist() == [1.0 if b <= k else 0.0 for b in brute]
        assert np.allclose(metrics.ndcg_at(r, k), [1 / math.log2(b + 1) if b <= k else 0.0 for b in brute])
    items, _ = M.top_n(Fixed(), X, users, 10, batch=7)
    for u in users:
        cands = sorted((j for j in range(n_items) if X[u, j] == 0), key=lambda j: (-S[u, j], j))
        assert items[u].tolist() == cands[:10]


def test_top_n_block_search_matches_full_sort():
    """The per-block-maximum candidate search (catalogues of >= n * TOP_BLOCK items) returns exactly the
    first n of (score desc, code asc) over unseen items: heavy ties, a partial last block, rows whose best
    items all sit in one block or in the tail, rows with fewer than n rankable items."""
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 12 * M.TOP_BLOCK + 37
    S = rng.integers(0, 50, (n_users, n_items)).astype(np.float32)
    S[1] = 0.0                                         # every score tied
    S[2, 5:15] = 99.0                                   # the best ten in one block
    S[3, -20:] = 99.0                                   # the best in the partial last block
    S[4] = rng.random(n_items, dtype=np.float32)        # no ties
    S[5, :] = 7.0
    S[5, 100] = 8.0                                     # one above, then a tie across the whole row
    X = sp.lil_matrix((n_users, n_items), dtype=np.float32)
    X[6, :n_items - 4] = 1.0                            # only 4 rankable items: slots 5.. hold -1
    X[7, rng.choice(n_items, 500, replace=False)] = 1.0
    X = X.tocsr()
    before = S.copy()

    class Fixed:                                        # returns its own array: top_n must not modify it
        def scores(self, u, X):
            return S[u] if len(u) > 1 else S[u[0]][None, :]

    for batch in (7, 64):
        items, vals = M.top_n(Fixed(), X, np.arange(n_users), 10, batch=batch)
        for u in range(n_users):
            seen = set(X[u].indices.tolist())
            cands = sorted((j for j in range(n_items) if j not in seen), key=lambda j: (-S[u, j], j))[:10]
            assert items[u].tolist() == cands + [-1] * (10 - len(cands))
            assert vals[u, :len(cands)].tolist() == [S[u, j] for j in cands]
    assert np.array_equal(S, before)


def test_content_similarity_matches_dense_product():
    """Content.similarity (sparse profile x sparse feature-item matrix) equals, bit for bit, the dense
    item-features x profile product it replaced."""
    rng = np.random.default_rng(5)
    n_items = 300
    toks = [(i, f"t{t}") for i in range(n_items) for t in rng.choice(40, rng.integers(0, 6), replace=False)]
    F, _ = M.item_features(n_items, toks)
    X = sp.csr_matrix((rng.random((50, n_items)) < 0.05).astype(np.float32))
    users = np.arange(50)
    c = M.Content(F).fit(X)
    profile = np.asarray((X[users] @ c.features).todense(), dtype=np.float32)
    dense = np.ascontiguousarray((c.features @ profile.T).T, dtype=np.float32)
    got = c.similarity(users, X)
    assert got.dtype == np.float32 and got.shape == (50, n_items)
    assert np.array_equal(got.view(np.int32), dense.view(np.int32))


def test_hybrid_sum_matches_zero_started_sum():
    """Hybrid.scores starts the sum from the first component (no zeros pass): bit-identical to 0 + ..."""
    rng = np.random.default_rng(6)
    X = sp.csr_matrix((rng.random((30, 60)) < 0.1).astype(np.float32))
    F, _ = M.item_features(60, [(i, f"c{i % 4}") for i in range(60)])
    comps = {"knn": M.ItemKNN(5).fit(X), "content": M.Content(F).fit(X), "popularity": M.Popularity().fit(X)}
    weights = {"knn": 1.0, "content": 0.3, "popularity": 0.7}
    users = np.arange(30)
    got = M.Hybrid(comps, weights).scores(users, X)
    ref = np.zeros((30, 60), dtype=np.float32)
    for name, w in weights.items():
        s = np.array(comps[name].scores(users, X), dtype=np.float32)
        mx = s.max(axis=1, keepdims=True)
        s *= np.divide(np.float32(w), mx, out=np.zeros_like(mx), where=mx > 0)
        ref += s
    assert np.array_equal(got.view(np.int32), ref.view(np.int32))
    assert M.Hybrid(comps, {"knn": 0.0}).scores(users, X).tolist() == np.zeros((30, 60)).tolist()


def test_bootstrap_intervals():
    b = metrics.bootstrap(np.full(50, 0.25))
    assert b == {"mean": 0.25, "low": 0.25, "high": 0.25, "n": 50}
    v = np.r_[np.ones(30), np.zeros(70)]
    b = metrics.bootstrap(v, n_boot=2000, seed=1)
    assert b["low"] < 0.3 < b["high"] and 0.18 < b["low"] and b["high"] < 0.42
    d = metrics.paired_bootstrap(v, v)
    assert d["mean"] == d["low"] == d["high"] == 0.0
    assert metrics.bootstrap(np.array([]))["n"] == 0


# ------------------------------------------------------------------------------------------- models
# users x items:  u0: i0 i1 | u1: i0 i1 i2 | u2: i2 i3 | u3: i0
X_SMALL = M.interaction_matrix(np.array([0, 0, 1, 1, 1, 2, 2, 3]), np.array([0, 1, 0, 1, 2, 2, 3, 0]), 4, 5)


def test_popularity_by_hand():
    p = M.Popularity().fit(X_SMALL)
    assert p.pop.tolist() == [3, 2, 2, 1, 0]
    assert M.ranks(p, X_SMALL, np.array([2]), np.array([0])).tolist() == [1]
    assert M.ranks(p, X_SMALL, np.array([2]), np.array([4])).tolist() == [3]   # after i0, i1


def test_item_knn_cosine_by_hand():
    knn = M.ItemKNN(k=2).fit(X_SMALL)
    S = knn.sim.toarray()
    # column norms: i0 sqrt3, i1 sqrt2, i2 sqrt2, i3 1; co-counts i0i1=2, i0i2=1, i1i2=1, i2i3=1
    expect = np.zeros((5, 5))
    expect[0, 1] = expect[1, 0] = 2 / math.sqrt(6)
    expect[0, 2] = expect[2, 0] = 1 / math.sqrt(6)
    expect[1, 2] = expect[2, 1] = 1 / 2
    expect[2, 3] = expect[3, 2] = 1 / math.sqrt(2)
    # k=2 per row: row 2 keeps i3 (0.707) and i1 (0.5), drops i0 (0.408)
    expect[2, 0] = 0.0
    assert np.allclose(S, expect, atol=1e-6)
    # user 3 has i0: scores = row 0
    assert np.allclose(knn.scores(np.array([3]), X_SMALL)[0], expect[0], atol=1e-6)


def test_top_k_rows_ties_keep_smaller_column():
    m = sp.csr_matrix(np.array([[0.5, 0.5, 0.5, 0.1], [0, 0, 0, 0], [1, 0, 2, 0]], dtype=np.float32))
    assert M.top_k_rows(m, 2).toarray().tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0, 0], [1, 0, 2, 0]]


def test_recency_weights():
    w = M.recency_weights(np.array([0, 0, 0, 1]), np.array([10, 30, 30, 5]), 0.5)
    assert w.tolist() == [0.5, 1.0, 1.0, 1.0]


def test_content_and_trend():
    F, vocab = M.item_features(5, [(0, "cat=A"), (1, "cat=A"), (2, "cat=B"), (3, "cat=B"), (4, "cat=B")])
    assert vocab == ["cat=A", "cat=B"]
    c = M.Content(F).fit(X_SMALL)
    s = c.scores(np.array([3]), X_SMALL)[0]    # user 3 read i0 (cat A): i1 first, then B items by popularity
    assert s[1] > s[2] > s[3] > s[4]       # B items ordered by popularity (2 > 1 > 0) through the tie-break
    assert M.ranks(c, X_SMALL, np.array([3]), np.array([1])).tolist() == [1]
    t = M.RecentPopularity(decay=0.5, content=c).fit(
        X_SMALL, user=np.array([0, 0, 1, 1, 1, 2, 2, 3]), item=np.array([0, 1, 0, 1, 2, 2, 3, 0]),
        ts=np.zeros(8, dtype=np.int64))
    assert t.P.shape == (1, 5) and t.P[0].tolist() == [3, 2, 2, 1, 0]
    assert t.scores(np.array([3]), X_SMALL)[0][2] == 0.0     # other category: no content overlap


def test_als_runs_and_scores_shape():
    a = M.ALS(factors=4, alpha=5.0, iterations=3).fit(X_SMALL)
    assert a.scores(np.array([0, 1]), X_SMALL).shape == (2, 5)


# ------------------------------------------------------------------------------------------- trending rule
ROWS = [
    {"day": "2024-01-02", "asin": "a1", "brand": "Acme", "score": 5.0, "rank": 2},
    {"day": "2024-01-02", "asin": "a2", "brand": "acme ", "score": 9.0, "rank": 1},
    {"day": "2024-01-02", "asin": "a3", "brand": "Acme", "score": 5.0, "rank": 1},     # ties a1 on score, better rank
    {"day": "2024-01-02", "asin": "b1", "brand": "Bolt", "score": 1.0, "rank": 9},
    {"day": "2024-01-02", "asin": "b2", "brand": "Bolt", "score": 1.0, "rank": 9},     # full tie: asin decides
    {"day": "2024-01-01", "asin": "old", "brand": "Bolt", "score": 99.0, "rank": 1},   # not the latest day
    {"day": "2024-01-02", "asin": None, "brand": "Acme", "score": 50.0, "rank": 1},    # no asin: ignored
]


def test_trending_for_brands_order_and_ties():
    out = trending_for_brands(ROWS, ["Bolt", "ACME"], 10)
    assert [r["asin"] for r in out] == ["b1", "a2", "b2", "a3", "a1"]
    assert [r["asin"] for r in trending_for_brands(ROWS, ["acme", "Bolt", "acme"], 3)] == ["a2", "b1", "a3"]


def test_trending_for_brands_edge_cases():
    assert trending_for_brands([], ["Acme"], 5) == []
    assert trending_for_brands(ROWS, [], 5) == []
    assert trending_for_brands(ROWS, ["Nobody"], 5) == []
    assert trending_for_brands(ROWS, ["Acme"], 0) == []
    assert [r["asin"] for r in trending_for_brands(ROWS, ["Nobody", None, "Bolt"], 5)] == ["b1", "b2"]
    shared = ROWS + [{"day": "2024-01-02", "asin": "b1", "brand": "Acme", "score": 100.0, "rank": 1}]
    assert [r["asin"] for r in trending_for_brands(shared, ["Acme", "Bolt"], 10)] == ["b1", "a2", "b2", "a3", "a1"]
    out = trending_for_brands(ROWS, ["Acme"], 1)
    out[0]["score"] = -1
    assert ROWS[1]["score"] == 9.0                             # copies, not the input rows


# ------------------------------------------------------------------------------------------- export + CLI
def _tiny_interactions():
    rng = np.random.default_rng(5)
    recs = []
    for u in range(60):
        for k, it in enumerate(rng.choice(20, size=3, replace=False)):
            recs.append({"reviewer_id": f"R{u:03d}", "asin": f"P{it:02d}", "ts": 1_000_000 + 86400 * (k + u % 3),
                         "category": "Toys" if it < 10 else "Books"})
    return pa.Table.from_pylist(recs, schema=data.INTERACTION_SCHEMA)


def test_export_round_trip(tmp_path):
    from training.recommend import evaluate as E
    from training.recommend.export import Recommender, export
    enc = E.encode(_tiny_interactions())
    F, _ = M.item_features(enc.n_items, E.item_tokens(enc, data.PRODUCT_SCHEMA.empty_table()))
    cfg = {**E.DEFAULTS, "als_factors": 4, "als_iterations": 2}
    export(enc, F, E.SHIPPED, cfg, str(tmp_path / "out"), top=5, workers=1)
    rec = Recommender.load(str(tmp_path / "out"))
    comps, model = __import__("training.recommend.export", fromlist=["fit_shipped"]).fit_shipped(enc, F, E.SHIPPED, cfg)
    items, _ = M.top_n(model, comps["X"], np.array([7]), 5)
    got = rec.recommend("R007", 5)
    assert [r["asin"] for r in got] == enc.items[items[0]].tolist()
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    own = set(enc.items[enc.item[enc.user == 7]])
    assert not own & {r["asin"] for r in got}
    assert rec.recommend("nobody") == []
    hist = rec.recommend_for_history(["P01", "unknown"], 4)
    assert len(hist) == 4 and "P01" not in {r["asin"] for r in hist}


def test_cli_help_and_bad_paths(tmp_path, capsys):
    from training.recommend.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    for sub in ("train", "evaluate", "recommend"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
    out = capsys.readouterr().out
    assert "--silver" in out and "--knn-k" in out and "--reviewer" in out
    assert main(["train", "--reviews", str(tmp_path / "missing*.jsonl.gz"), "--output", str(tmp_path / "o")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["evaluate", "--silver", str(tmp_path / "nowhere")]) == 2
    assert main(["recommend", "--model", str(tmp_path), "--reviewer", "R1"]) == 2
    assert "not an exported table" in capsys.readouterr().err
