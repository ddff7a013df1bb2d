"""End to end, the insights: two batch runs (the second with a new file) and the insight tables equal
the rules applied to every silver row, recomputed here with plain Python (recent brands, daily counts,
distinct counts) and the pure trending rule over those plain-Python daily counts; ``--no_insights``
leaves them out."""
from __future__ import annotations

import collections
import datetime
import shutil

import pyarrow as pa
import pytest

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from runners.generate import generate
from tests.e2e import _outputs as out
from transforms import gold, recent_brands, trending

pytestmark = pytest.mark.e2e
UTC = datetime.timezone.utc
N_RECENT = 3
TRENDING = {"insights/trending_products": ("asin", "daily_products"),
            "insights/trending_brands": ("brand", "daily_brands"),
            "insights/trending_main_cats": ("main_cat", "daily_main_cats")}


def _argv(land, output, run_id, *extra):
    return ["--runner=FnApiRunner", "--source=files", f"--reviews={land}/reviews/*.jsonl",
            f"--products={land}/metadata/*.jsonl", f"--output={output}", f"--run_id={run_id}",
            f"--recent_brands={N_RECENT}", "--trending_min_count=1", "--trending_top=3", "--trending_days=5", *extra]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("insights")
    generate(str(root / "all"), 2500, files=3, seed=47, gzip=False)
    files = sorted((root / "all" / "reviews").glob("*.jsonl"))
    land = root / "landing"
    (land / "reviews").mkdir(parents=True)
    shutil.copytree(root / "all" / "metadata", land / "metadata")
    for f in files[:2]:
        shutil.copy(f, land / "reviews" / f.name)
    output = root / "out"
    first = run(_argv(land, output, "first"))
    before = tables.read(tables.Location(str(output)), "insights/recent_brands")
    shutil.copy(files[2], land / "reviews" / files[2].name)
    second = run(_argv(land, output, "second"))
    assert second["files"]["reviews"] == {"new": 1, "changed": 0, "skipped": 2}
    return root, output, first, second, before


def _silver(output):
    return out.silver_reviews(output).to_pylist()


def _day(t):
    return datetime.datetime.fromtimestamp(t, UTC).date()


def test_recent_brands_equal_the_rule_over_all_silver(two_runs):
    _, output, first, second, before = two_runs
    rows = _silver(output)
    events = collections.defaultdict(list)
    for r in rows:
        events[r["reviewer_id"]].append((r["unix_review_time"], r["brand"]))
    expected = {k: recent_brands.recent_list(v, N_RECENT) for k, v in events.items()}
    expected = {k: v for k, v in expected.items() if v}
    got = {r["reviewer_id"]: [(int(t.timestamp()), b) for t, b in zip(r["brand_times"], r["brands"])]
           for r in out.table(output, "insights/recent_brands").to_pylist()}
    assert got == expected
    assert max(len(v) for v in got.values()) == N_RECENT
    assert before.num_rows < len(got)   # the second run added reviewers (merged with the stored table)


def test_the_second_run_merges_recent_brands_only_for_its_reviewers(two_runs):
    """The incremental run's commit to insights/recent_brands is a Delta MERGE on reviewer_id whose source
    is the rows of the reviewers the new file has events of: every other row is left as the first run
    wrote it (checked row by row against the table before the run)."""
    root, output, first, second, before = two_runs
    new_file = sorted((root / "all" / "reviews").glob("*.jsonl"))[2].name
    loc = tables.Location(str(output))
    version = second["table_versions"]["insights/recent_brands"]
    commit = next(h for h in tables.open_table(loc, "insights/recent_brands").history() if h["version"] == version)
    assert commit["operation"] == "MERGE" and commit["run_id"] == "second"
    new_rows = [r for r in _silver(output) if r["source"].endswith("/" + new_file)]   # the second run's rows
    after = {r["reviewer_id"]: r for r in out.table(output, "insights/recent_brands").to_pylist()}
    old = {r["reviewer_id"]: r for r in before.to_pylist()}
    changed = {k for k in after if old.get(k) != after[k]}
    metrics = commit["operationMetrics"]
    assert metrics["num_source_rows"] == metrics["num_target_rows_updated"] + metrics["num_target_rows_inserted"]
    assert metrics["num_target_rows_inserted"] == len(set(after) - set(old)) > 0
    touched = {r["reviewer_id"] for r in new_rows}
    assert changed and changed <= touched                  # only the new file's reviewers changed
    assert len(changed) <= metrics["num_source_rows"] < len(after)
    assert set(old) <= set(after)   # nobody disappears
    # the source: every reviewer of the new rows who has a brand, in those rows or in the stored list
    assert new_rows and metrics["num_source_rows"] == len({r["reviewer_id"] for r in new_rows
                                                           if r["brand"] or r["reviewer_id"] in old})


def _daily(rows, key):
    counts = collections.Counter((_day(r["unix_review_time"]), r[key]) for r in rows)
    return pa.Table.from_pylist([{"day": d, key: k, "n_reviews": n} for (d, k), n in counts.items()],
                                schema=pa.schema([("day", pa.date32()), (key, pa.string()), ("n_reviews", pa.int64())]))


@pytest.mark.parametrize("rel", sorted(TRENDING))
def test_trending_tables_equal_the_rule_over_all_silver(two_runs, rel):
    _, output, *_ = two_runs
    key, family = TRENDING[rel]
    rows = _silver(output)
    daily = _daily(rows, key)
    got = out.table(output, rel)
    want = trending.trending(daily, key, days=5, top=3, rule="zscore", min_count=1)
    assert got.num_rows > 10
    assert sorted(map(repr, got.to_pylist())) == sorted(map(repr, want.to_pylist()))
    # the daily family is the series itself
    series = {(r["day"], r[key]): r["n_reviews"] for r in out.gold(output, family).to_pylist()}
    assert series == {(r["day"], r[key]): r["n_reviews"] for r in daily.to_pylist()}


def test_distinct_counts_equal_plain_python(two_runs):
    _, output, *_ = two_runs
    rows = _silver(output)
    per_window = collections.defaultdict(lambda: (set(), set()))
    for r in rows:
        w = r["unix_review_time"] // 86400 * 86400
        per_window[w][0].add(r["reviewer_id"])
        per_window[w][1].add(r["asin"])
    got = out.gold(output, "distinct_counts").to_pylist()
    assert {int(r["window_start"].timestamp()): (r["n_reviewers"], r["n_products"]) for r in got
            if r["window_start"] is not None} == {w: (len(a), len(b)) for w, (a, b) in per_window.items()}
    (total,) = [r for r in got if r["window_start"] is None]
    assert (total["n_reviewers"], total["n_products"]) == (len({r["reviewer_id"] for r in rows}),
                                                           len({r["asin"] for r in rows}))


def test_incremental_insights_equal_one_full_run(two_runs, tmp_path):
    root, output, *_ = two_runs
    full = tmp_path / "full"
    run(_argv(root / "landing", full, "full"))
    for rel in ["insights/recent_brands", *TRENDING, "gold/distinct_counts"] + \
            [f"gold/{f.name}" for f in gold.INSIGHT_FAMILIES]:
        a, b = out.table(output, rel), out.table(full, rel)
        assert sorted(map(repr, a.to_pylist())) == sorted(map(repr, b.to_pylist())), rel


def test_no_insights_leaves_them_out(two_runs, tmp_path):
    root, *_ = two_runs
    output = tmp_path / "plain"
    summary = run(_argv(root / "landing", output, "plain", "--no_insights"))
    names = set(summary["table_versions"])
    assert not [n for n in names if n.startswith("insights/")]
    assert {f"gold/{f.name}" for f in gold.INSIGHT_FAMILIES} & names == set()
    assert "gold/distinct_counts" not in names
    assert {f"gold/{f.name}" for f in gold.FAMILIES if not f.insight} <= names
