"""Duplicates resolve by a rule on the rows, across runs and in both modes (issue 17, item 3).

Run 1 ingests a file of generated reviews. A second file then brings, for some of those reviews, copies
that share the content key but were crawled later (more helpful votes, another summary, rating and
verified flag: the rule prefers them), copies it does not prefer (fewer votes), and new reviews. Run 2,
in batch (incremental) and in streaming (the local Event Hubs endpoint, from the checkpoint), must leave
exactly the tables one batch run over both files leaves: the preferred copies replace the held rows in
silver, their old gold contributions are retracted, and the others count as duplicates of earlier runs.
The previous silver version still reads back (time travel) with the old copies.
"""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from runners.eventhubs_local import LocalEventHubs
from runners.generate import generate
from runners.publish import publish
from tests.e2e import _outputs as out
from transforms import gold

pytestmark = pytest.mark.e2e

CONTENT = ("reviewer_id", "asin", "unix_review_time", "review_text", "overall", "summary", "vote", "verified")
N_BETTER, N_WORSE, N_NEW = 6, 5, 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(first file, second file, products glob, {content key: (old summary, new summary)} of the better copies)."""
    root = tmp_path_factory.mktemp("survivor")
    generate(str(root / "gen"), 400, files=1, seed=7, dirty_rate=0, duplicate_rate=0)
    first = sorted((root / "gen" / "reviews").glob("*.jsonl"))[0]
    rows = [json.loads(line) for line in first.read_text().splitlines() if line.strip()]
    rng = random.Random(5)
    voted = [r for r in rows if r.get("vote") and r.get("reviewText")]
    other = [r for r in rows if r.get("reviewText") and r not in voted]
    assert len(voted) >= N_WORSE and len(other) >= N_BETTER
    better, worse = rng.sample(other, N_BETTER), rng.sample(voted, N_WORSE)
    lines = []
    for r in better:   # a later crawl: more votes, and the other fields changed
        lines.append(dict(r, vote=str(int(r.get("vote") or 0) + 10), summary=f"{r.get('summary')} (updated)",
                          overall=6.0 - r["overall"], verified=not r.get("verified", False)))
    for r in worse:    # fewer votes than the held copy: it stays
        lines.append(dict(r, vote="0", summary="worse copy", overall=1.0))
    for i in range(N_NEW):
        lines.append(dict(rows[i], reviewerID=f"ANEWREVIEWER{i:03d}", summary=f"new {i}"))
    rng.shuffle(lines)
    second = root / "second" / "reviews-2.jsonl"
    second.parent.mkdir()
    second.write_text("".join(json.dumps(r) + "\n" for r in lines))
    changed = {(r["reviewerID"], r["asin"], r["unixReviewTime"], r["reviewText"]) for r in better}
    return first, second, str(root / "gen" / "metadata" / "*.jsonl"), changed


def _land(tmp_path, *paths):
    land = tmp_path / "landing"
    land.mkdir(exist_ok=True)
    for p in paths:
        shutil.copy(p, land / p.name)
    return land


def _batch(reviews, products, output, run_id):
    return run(["--runner=FnApiRunner", "--source=files", f"--reviews={reviews}", f"--products={products}",
                f"--output={output}", f"--run_id={run_id}", "--top_reviewers=5"])


def _content(root, version=None):
    t = tables.read(tables.Location(str(root)), tables.SILVER_REVIEWS, version)
    return sorted(tuple(r[c] for c in CONTENT) for r in t.select(list(CONTENT)).to_pylist())


def _gold(root, columns=None):
    got = {}
    for family in sorted(out.gold_families(root)):
        t = out.gold(root, family)
        if columns is not None:
            t = t.select(columns[family])
        got[family] = sorted(json.dumps(r, sort_keys=True, default=str) for r in t.to_pylist())
    return got


@pytest.fixture(scope="module")
def full(files, tmp_path_factory):
    """One batch run over both files: what the tables must hold after the two runs, in either mode."""
    first, second, products, _ = files
    root = tmp_path_factory.mktemp("survivor_full")
    land = _land(root, first, second)
    _batch(land / "*.jsonl", products, root / "out", "full")
    return root / "out"


def _check_replaced(output, full, files, summary):
    first, second, products, changed = files
    r = summary["reviews"]
    assert r["earlier_copies_replaced"] == N_BETTER
    assert r["duplicates_of_earlier_runs"] == N_WORSE
    assert r["reconciled"]
    assert _content(output) == _content(full)
    silver = out.silver_reviews(output).to_pylist()
    out.check_no_duplicate_content_keys(silver)
    kept = {(s["reviewer_id"], s["asin"], s["unix_review_time"], s["review_text"]): s for s in silver}
    assert all(kept[k]["summary"].endswith("(updated)") for k in changed)
    assert sum(s["summary"] == "worse copy" for s in silver) == 0
    # every family the run writes equals the full run's (streaming computes the review families only)
    full_gold = _gold(full)
    got = _gold(output, {f: out.gold(full, f).column_names for f in out.gold_families(output)})
    assert {f.name for f in gold.FAMILIES if f.source == "reviews"} <= set(got)
    assert got == {f: full_gold[f] for f in got}


def test_batch_second_run_replaces_the_held_copies_the_rule_prefers(files, full, tmp_path):
    first, second, products, changed = files
    land = _land(tmp_path, first)
    output = tmp_path / "out"
    s1 = _batch(land / "*.jsonl", products, output, "b1")
    before = _content(output)
    _land(tmp_path, second)
    s2 = _batch(land / "*.jsonl", products, output, "b2")
    assert s2["files"]["reviews"] == {"new": 1, "changed": 0, "skipped": 1}
    _check_replaced(output, full, files, s2)
    assert len(_content(output)) == len(before) + N_NEW
    # gold equals an independent computation from the silver rows (plain Python)
    out.check_gold(output, out.silver_reviews(output).to_pylist(), out.silver_products(output).to_pylist(), 5)
    # time travel: run 1's silver version still holds the old copies
    assert _content(output, s1["table_versions"][tables.SILVER_REVIEWS]) == before
    # a third run over the same files changes nothing
    s3 = _batch(land / "*.jsonl", products, output, "b3")
    assert s3["reviews"]["records_read"] == 0 and _content(output) == _content(full)


def test_stream_second_run_replaces_the_held_copies_the_rule_prefers(files, full, tmp_path):
    first, second, products, _ = files
    hub = LocalEventHubs(tmp_path / "hub", partitions=2, fsync=False).start()
    output = tmp_path / "stream"
    argv = ["--runner=FnApiRunner", "--source=eventhub", f"--products={products}", f"--output={output}",
            "--max_out_of_orderness=3650d", "--stop_after_idle_s=2", "--top_reviewers=5"]
    try:
        os.environ["EVENTHUB_CONNECTION_STRING"] = hub.connection_string
        publish(hub.connection_string, [str(first)], partitions=2, progress=False)
        s1 = run([*argv, "--run_id=st1"])
        before = _content(output)
        assert len(before) == s1["reviews"]["silver_rows"]
        publish(hub.connection_string, [str(second)], partitions=2, progress=False)
        s2 = run([*argv, "--run_id=st2"])
    finally:
        os.environ.pop("EVENTHUB_CONNECTION_STRING", None)
        hub.stop()
    assert s2["reviews"]["records_read"] == N_BETTER + N_WORSE + N_NEW
    _check_replaced(output, full, files, s2)
    # the second run MERGEd gold: only rows of the windows it touched changed, and some rows went
    # (a rating group emptied when a preferred copy changed the rating)
    loc = tables.Location(str(output))
    merges = [tables.open_table(loc, f"gold/{f.name}").history(1)[0] for f in gold.FAMILIES if f.source == "reviews"]
    assert {h["operation"] for h in merges} == {"MERGE"}
    metrics = [json.loads(h["operationMetrics"]) if isinstance(h.get("operationMetrics"), str)
               else h.get("operationMetrics", {}) for h in merges]
    assert sum(m.get("num_target_rows_deleted", 0) for m in metrics) > 0
    # gold/reviews has a row per day with reviews: the run's 31 reviews touch at most 31 days + all-time
    by_name = dict(zip([f.name for f in gold.FAMILIES if f.source == "reviews"], metrics))
    changed = sum(by_name["reviews"][k] for k in ("num_target_rows_updated", "num_target_rows_inserted",
                                                   "num_target_rows_deleted"))
    assert 0 < changed <= N_BETTER + N_WORSE + N_NEW + 1 < tables.read(loc, "gold/reviews").num_rows
    assert _content(output, s1["table_versions"][tables.SILVER_REVIEWS]) == before
