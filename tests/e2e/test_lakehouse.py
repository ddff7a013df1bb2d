"""End to end, the Delta tables: incremental ingestion, atomic commits under failures and real kills,
concurrent runs, time travel, DuckDB. Generated reviews, local paths (Azurite: test_lakehouse_azurite.py).

What a reader sees is read the way a consumer reads it: ``tables.read`` (the versions the last committed
run names), and where it matters each table's latest version straight from delta-rs too."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from runners.generate import generate
from tests._waiting import wait_until
from tests.e2e import _outputs as out

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CONTENT = ("reviewer_id", "asin", "unix_review_time", "review_text", "overall", "summary")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three review files + metadata; ``extra`` holds a fourth file to add between runs."""
    root = tmp_path_factory.mktemp("lake_data")
    manifest = generate(str(root / "all"), 3000, files=3, seed=31, gzip=False)
    files = sorted((root / "all" / "reviews").glob("*.jsonl"))
    return root, manifest, files


def _argv(reviews, products, output, run_id, *extra):
    return ["--runner=FnApiRunner", "--source=files", f"--reviews={reviews}", f"--products={products}",
            f"--output={output}", f"--run_id={run_id}", "--top_reviewers=5", *extra]


def _landing(data, tmp_path, n):
    """A landing folder holding the first ``n`` review files (copied: modification times are the copies')."""
    root, _, files = data
    land = tmp_path / "landing"
    (land / "reviews").mkdir(parents=True, exist_ok=True)
    (land / "metadata").mkdir(exist_ok=True)
    for f in files[:n]:
        if not (land / "reviews" / f.name).exists():
            shutil.copy(f, land / "reviews" / f.name)
    for f in (root / "all" / "metadata").glob("*.jsonl"):
        if not (land / "metadata" / f.name).exists():
            shutil.copy(f, land / "metadata" / f.name)
    return land


def _job(land, output, run_id, *extra, **kw):
    return run(_argv(land / "reviews" / "*.jsonl", land / "metadata" / "*.jsonl", output, run_id, *extra), **kw)


def _content(table):
    return sorted(tuple(r[c] for c in CONTENT) for r in table.select(list(CONTENT)).to_pylist())


def _gold_state(output):
    return {f: _rows(out.gold(output, f)) for f in out.gold_families(output)}


def _rows(table):
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def _reader_view(output):
    """Everything a reader of the last committed run sees."""
    return {"silver": _content(out.silver_reviews(output)), "products": _rows(out.silver_products(output)),
            "dead": sorted(json.dumps(d, sort_keys=True) for d in out.dead_letters(output)),
            "gold": _gold_state(output)}


# ------------------------------------------------------------------------------------------ incremental
def test_incremental_runs_equal_one_full_run(data, tmp_path):
    """Run 1 over two files; run 2 after a third arrives reads only that one; run 3 after a copy of a file
    under a new name and an appended line in another reads those two and adds only the new line; run 4
    with nothing new reads nothing. The tables then equal one full run over the final files."""
    root, manifest, files = data
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "inc"
    s1 = _job(land, output, "r1")
    assert s1["files"]["reviews"] == {"new": 2, "changed": 0, "skipped": 0}

    _landing(data, tmp_path, 3)
    s2 = _job(land, output, "r2")
    assert s2["files"]["reviews"] == {"new": 1, "changed": 0, "skipped": 2}
    assert s2["reviews"]["files_read"] == 1
    assert s2["reviews"]["records_read"] == sum(1 for x in out.read_lines(files[2]) if x.strip())

    shutil.copy(files[0], land / "reviews" / "copy-of-first.jsonl")           # overlaps run 1 entirely
    extra = {"reviewerID": "RNEW", "asin": "B000NEW001", "overall": 4.0, "unixReviewTime": 1400000000,
             "reviewText": "appended later", "summary": "new line"}
    with open(land / "reviews" / files[1].name, "a") as fh:                    # a changed file
        fh.write(json.dumps(extra) + "\n")
    os.utime(land / "reviews" / files[1].name, (time.time() + 5, time.time() + 5))
    s3 = _job(land, output, "r3")
    assert s3["files"]["reviews"] == {"new": 1, "changed": 1, "skipped": 2}
    assert s3["reviews"]["silver_rows"] == 1                                  # the appended line only
    assert s3["reviews"]["duplicates_of_earlier_runs"] > 0
    assert s3["reviews"]["reconciled"]

    s4 = _job(land, output, "r4")
    assert s4["files"]["reviews"] == {"new": 0, "changed": 0, "skipped": 4}
    assert s4["reviews"]["records_read"] == 0

    full = tmp_path / "full"
    _job(land, full, "full")
    assert _content(out.silver_reviews(output)) == _content(out.silver_reviews(full))
    out.check_no_duplicate_content_keys(out.silver_reviews(output).to_pylist())
    assert _rows(out.silver_products(output)) == _rows(out.silver_products(full))
    assert out.gold_families(output) == out.gold_families(full)
    for family in out.gold_families(full):
        assert _rows(out.gold(output, family)) == _rows(out.gold(full, family)), family
    rows = out.silver_reviews(output).to_pylist()
    out.check_gold(output, rows, out.silver_products(output).to_pylist(), 5)
    # the ingested-file log holds each file once per version read, and the event log every run
    loc = tables.Location(str(output))
    ingested = tables.read(loc, tables.INGESTED).to_pylist()
    assert sorted(r["run_id"] for r in ingested) == ["r1", "r1", "r1", "r2", "r3", "r3"]   # + metadata in r1
    committed = [e["run_id"] for e in tables.events(loc) if e["event"] == "committed"]
    assert committed == ["r1", "r2", "r3", "r4"]


def test_full_refresh_option_rereads_everything(data, tmp_path):
    land = _landing(data, tmp_path, 3)
    output = tmp_path / "fr"
    s1 = _job(land, output, "a1")
    s2 = _job(land, output, "a2", "--full_refresh")
    assert s2["files"]["reviews"] == {"new": 3, "changed": 0, "skipped": 0} and s2["reviews"]["files_read"] == 3
    assert s2["reviews"]["records_read"] == s1["reviews"]["records_read"]
    assert s2["reviews"]["silver_rows"] == s1["reviews"]["silver_rows"]
    assert _content(out.silver_reviews(output)) == _content(tables.read(
        tables.Location(str(output)), tables.SILVER_REVIEWS, s1["table_versions"][tables.SILVER_REVIEWS]))


# ------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("phase", ["written", "intent", "claim", "silver/reviews", "gold/reviews"])
def test_a_failure_at_each_commit_phase_keeps_the_previous_run(data, tmp_path, phase):
    """Run 1 commits; run 2 (a new file) fails after ``phase``: readers still see run 1 exactly. Run 3
    then finishes or discards run 2 and ingests every file exactly once."""
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "fail"
    _job(land, output, "ok1")
    before = _reader_view(output)
    versions = tables.snapshot_versions(tables.Location(str(output)))
    _landing(data, tmp_path, 3)
    with pytest.raises(tables.TableError, match="test hook"):
        _job(land, output, "bad2", fail_after=phase)
    assert _reader_view(output) == before
    assert tables.snapshot_versions(tables.Location(str(output))) == versions
    if phase in ("written", "intent"):   # before the claim: no table's latest version moved either
        for rel, v in versions.items():
            assert tables.table_version(tables.Location(str(output)), rel) == v, rel

    s3 = _job(land, output, "ok3")
    full = tmp_path / "full"
    _job(land, full, "full")
    assert _content(out.silver_reviews(output)) == _content(out.silver_reviews(full))
    assert s3["files"]["reviews"]["new"] == (1 if phase in ("written", "intent") else 0)
    assert not out.staged_files(output)
    committed = [e["run_id"] for e in tables.events(tables.Location(str(output))) if e["event"] == "committed"]
    assert committed == (["ok1", "ok3"] if phase in ("written", "intent") else ["ok1", "bad2", "ok3"])


def _cli(land, output, run_id, env_extra=None, *extra):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "beam_pipeline",
                             *_argv(land / "reviews" / "*.jsonl", land / "metadata" / "*.jsonl", output, run_id,
                                    *extra)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("phase", ["written", "claim", "silver/reviews"])
def test_a_killed_run_keeps_the_previous_run_and_the_next_run_recovers(data, tmp_path, phase):
    """A real SIGKILL of the job's process at a known point of its commit (the test hook stops it there):
    readers still see the previous run, none of the killed run's files is referenced, and the next run
    leaves every file ingested exactly once and no stray file."""
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "kill"
    _job(land, output, "k1")
    before = _reader_view(output)
    _landing(data, tmp_path, 3)
    release = tmp_path / "release"
    proc = _cli(land, output, "k2", {"REVIEWS_TEST_PAUSE_AT": phase, "REVIEWS_TEST_PAUSE_FILE": str(release)})
    try:
        assert wait_until(lambda: Path(str(release) + ".reached").exists() or proc.poll() is not None, 300)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _reader_view(output) == before
    _job(land, output, "k3")
    full = tmp_path / "full"
    _job(land, full, "full")
    assert _content(out.silver_reviews(output)) == _content(out.silver_reviews(full))
    assert not out.staged_files(output)
    for family in out.gold_families(full):
        assert _rows(out.gold(output, family)) == _rows(out.gold(full, family)), family


def test_two_runs_committing_at_once_one_wins_the_other_fails_cleanly(data, tmp_path):
    """Run A stops just before its commit; run B runs and commits; A goes on and its claim fails: exit
    status 3, a message saying what happened, nothing of A visible. A rerun then adds exactly what B did
    not read."""
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "conc"
    _job(land, output, "c0")
    _landing(data, tmp_path, 3)
    release = tmp_path / "release"
    proc = _cli(land, output, "cA", {"REVIEWS_TEST_PAUSE_AT": "written", "REVIEWS_TEST_PAUSE_FILE": str(release)})
    try:
        assert wait_until(lambda: Path(str(release) + ".reached").exists() or proc.poll() is not None, 300)
        assert proc.poll() is None
        b = _job(land, output, "cB")
        assert b["files"]["reviews"]["new"] == 1
        view_b = _reader_view(output)
        release.write_text("go")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr[-3000:]
    assert "another run committed" in stderr and "nothing of run cA was committed" in stderr
    assert "Traceback" not in stderr
    assert _reader_view(output) == view_b
    again = _job(land, output, "cA2")
    assert again["files"]["reviews"] == {"new": 0, "changed": 0, "skipped": 3}
    full = tmp_path / "full"
    _job(land, full, "full")
    assert _content(out.silver_reviews(output)) == _content(out.silver_reviews(full))
    assert not out.staged_files(output)


# ------------------------------------------------------------------------------------------ readers
def test_duckdb_reads_every_table_and_time_travel(data, tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra")
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "duck"
    s1 = _job(land, output, "d1")
    _landing(data, tmp_path, 3)
    s2 = _job(land, output, "d2")
    loc = tables.Location(str(output))
    names = tables.all_tables(loc)
    assert {"silver/reviews", "silver/products", "dead_letters", "gold/reviews", "_pipeline/events",
            "_pipeline/ingested_files"} <= set(names)
    for rel in names:
        dataset = tables.dataset(loc, rel)  # noqa: F841 - DuckDB finds it by name
        (n,) = duckdb.sql("SELECT count(*) FROM dataset").fetchall()[0]
        assert n == tables.read(loc, rel).num_rows, rel
    silver = tables.dataset(loc, tables.SILVER_REVIEWS)  # noqa: F841
    (n,) = duckdb.sql("SELECT count(*) FROM silver").fetchall()[0]
    assert n == s1["reviews"]["silver_rows"] + s2["reviews"]["silver_rows"]
    old = tables.dataset(loc, tables.SILVER_REVIEWS, s1["table_versions"][tables.SILVER_REVIEWS])  # noqa: F841
    (n_old,) = duckdb.sql("SELECT count(*) FROM old").fetchall()[0]
    assert n_old == s1["reviews"]["silver_rows"]
    # pandas reads the same table
    assert len(tables.open_table(loc, tables.SILVER_REVIEWS).to_pandas()) == n
    # filters on text columns return every matching row, long values included (delta-rs's statistics
    # expressions once turned "no min/max" into "col >= null" and dropped whole files)
    rows = tables.read(loc, tables.SILVER_REVIEWS).to_pylist()
    for column in ("title", "summary", "reviewer_id", "review_text"):
        value = max((r[column] for r in rows if r[column]), key=len)
        (got,) = duckdb.sql(f"SELECT count(*) FROM silver WHERE {column} = $v", params={"v": value}).fetchall()[0]
        assert got == sum(1 for r in rows if r[column] == value), column


def test_a_script_reading_every_table_exits_cleanly(data, tmp_path):
    """A user's script that reads the tables into Arrow ends with exit 0. Through delta-rs's own
    ``to_pyarrow_table`` it printed the right numbers, then aborted at interpreter exit (134, "terminate
    called without an active exception"); ``tables.read`` reads local files through Arrow's filesystem."""
    land = _landing(data, tmp_path, 2)
    output = tmp_path / "script"
    summary = _job(land, output, "s1")
    script = ("import sys\nfrom beam_pipeline import tables\nloc = tables.Location(sys.argv[1])\n"
              "for rel in tables.all_tables(loc):\n    print(rel, tables.read(loc, rel).num_rows)\n")
    done = subprocess.run([sys.executable, "-c", script, str(output)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    rows = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    assert int(rows[tables.SILVER_REVIEWS]) == summary["reviews"]["silver_rows"] > 0
    assert int(rows[tables.DEAD_LETTERS]) == summary["reviews"]["dead_letters"] + summary["products"]["dead_letters"]


def test_tables_cli_show_history_optimize_vacuum(data, tmp_path):
    land = _landing(data, tmp_path, 3)
    output = tmp_path / "cli"
    for i, n in enumerate((1, 2, 3)):
        _landing(data, tmp_path, n)
        _job(land, output, f"m{i}", "--shuffle_buckets=4")
    before = _reader_view(output)
    files_before = out.silver_review_files(output)

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "beam_pipeline.tables", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    shown = cli("show", str(output))
    assert "silver/reviews" in shown and "rows/file" in shown
    assert "committed" in cli("history", str(output)) and "m2" in cli("history", str(output))
    assert "WRITE" in cli("history", str(output), "--table", "silver/reviews")
    cli("optimize", str(output))
    files_after = out.silver_review_files(output)
    assert len(files_after) < len(files_before)
    assert _reader_view(output) == before
    cli("vacuum", str(output), "--retention_hours", "0")
    assert _reader_view(output) == before
    assert all(p.exists() for p in out.silver_review_files(output))
    assert not any(p.exists() for p in files_before if p not in files_after)
    help_text = cli("--help")
    for command in ("show", "history", "optimize", "vacuum", "recover"):
        assert command in help_text
    r = subprocess.run([sys.executable, "-m", "beam_pipeline.tables", "show", str(tmp_path / "none")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no Delta tables" in r.stderr


# ------------------------------------------------------------------------------------------ expectations
def _quality_landing(tmp_path):
    land = tmp_path / "quality"
    (land / "reviews").mkdir(parents=True)
    (land / "metadata").mkdir()
    base = {"reviewerID": "R1", "asin": "B000000001", "overall": 5.0, "unixReviewTime": 1400000000,
            "reviewText": "fine", "summary": "ok"}
    rows = [dict(base, reviewerID=f"R{i}") for i in range(6)]
    rows[1]["unixReviewTime"] = 600000000                      # 1989: review_time_range
    rows[2]["reviewText"] = "   "                               # empty_review_text
    rows[3]["asin"] = "not-an-asin"                             # asin_shape
    rows[4]["crawl"] = {"batch": 7}                             # an unknown field: rescued
    rows[5]["crawl"] = {"batch": 8}
    rows[5]["source_site"] = "x"
    (land / "reviews" / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (land / "metadata" / "p.jsonl").write_text(json.dumps({"asin": "B000000001", "title": "T", "brand": "B",
                                                           "main_cat": "C", "features": ["f"]}) + "\n")
    return land


def test_expectations_warn_drop_fail_and_rescued_data_counts(tmp_path):
    land = _quality_landing(tmp_path)
    warn = _job(land, tmp_path / "warn", "w1")
    assert warn["expectations"] == {"review_time_range": {"action": "warn", "failed_rows": 1},
                                    "empty_review_text": {"action": "warn", "failed_rows": 1},
                                    "asin_shape": {"action": "warn", "failed_rows": 1}}
    assert warn["reviews"]["silver_rows"] == 6 and warn["reviews"]["dead_letters"] == 0
    assert warn["reviews"]["rows_with_rescued_field"] == {"crawl": 2, "source_site": 1}
    versions = warn["reviews"]["rows_by_schema_version"]
    assert sum(versions.values()) == 6 and set(versions) <= {"2014", "2018"}
    rescued = {r["reviewer_id"]: r["_rescued_data"] for r in out.silver_reviews(tmp_path / "warn").to_pylist()}
    assert json.loads(rescued["R5"]) == {"crawl": {"batch": 8}, "source_site": "x"} and rescued["R0"] is None
    logged = json.loads([e for e in tables.events(tables.Location(str(tmp_path / "warn")))
                         if e["event"] == "committed"][-1]["summary"])
    assert logged["expectations"] == warn["expectations"]

    drop = _job(land, tmp_path / "drop", "d1", "--expectation=review_time_range=drop",
                "--expectation=asin_shape=drop")
    assert drop["reviews"]["silver_rows"] == 4 and drop["reviews"]["dead_letters"] == 2
    assert sorted(d["reason"] for d in out.dead_letters(tmp_path / "drop")) == ["asin_shape", "review_time_range"]
    assert drop["reviews"]["reconciled"]

    output = tmp_path / "fail"
    _job(land, output, "f0")
    before = _reader_view(output)
    (land / "reviews" / "more.jsonl").write_text(json.dumps({"reviewerID": "RX", "asin": "B000000001",
                                                             "overall": 1.0, "unixReviewTime": 1400000000,
                                                             "reviewText": ""}) + "\n")
    with pytest.raises(tables.ExpectationFailed, match="empty_review_text on 1 rows"):
        _job(land, output, "f1", "--expectation=empty_review_text=fail")
    assert _reader_view(output) == before
    ok = _job(land, output, "f2")
    assert ok["files"]["reviews"]["new"] == 1 and not out.staged_files(output)


def test_orphan_cleanup_never_touches_other_tools_tables_under_the_root(data, tmp_path):
    """A Delta table another tool keeps beside the job's (ROOT/recommendations, as training.recommend and the
    dashboard do) keeps every file of every version across job runs: the cleanup only looks in the job's
    own folders."""
    import deltalake
    import pyarrow as pa

    land = _landing(data, tmp_path, 1)
    output = tmp_path / "out"
    _job(land, output, "o1")
    foreign = output / "recommendations" / "recommendations"
    deltalake.write_deltalake(str(foreign), pa.table({"reviewer_id": ["a"], "rank": [1]}), mode="overwrite")
    deltalake.write_deltalake(str(foreign), pa.table({"reviewer_id": ["b"], "rank": [1]}), mode="overwrite")
    files = sorted(p.name for p in foreign.glob("*.parquet"))
    assert len(files) == 2   # version 1 no longer references the first file: an "orphan" to a careless cleanup
    _landing(data, tmp_path, 2)
    _job(land, output, "o2")
    assert sorted(p.name for p in foreign.glob("*.parquet")) == files
    assert deltalake.DeltaTable(str(foreign), version=0).to_pyarrow_table()["reviewer_id"].to_pylist() == ["a"]
