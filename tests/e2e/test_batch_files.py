"""End to end, local files: generated reviews (with a manifest of what the job must find) through
``beam_pipeline.pipeline.run`` on the FnApiRunner, outputs read back with pyarrow and checked."""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from beam_pipeline.options import OptionsError, ReviewsOptions
from beam_pipeline.pipeline import run
from runners.generate import generate
from tests.e2e import _outputs as out

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
N_REVIEWS = 3000
TOP_N = 5
TAG = re.compile(r"<[^<>]*>")


def _argv(data, output, run_id, reviews=None, *extra):
    return ["--runner=FnApiRunner", "--source=files",
            f"--reviews={reviews or os.path.join(data, 'reviews', '*.jsonl*')}",
            f"--products={os.path.join(data, 'metadata', '*.jsonl*')}",
            f"--output={output}", f"--run_id={run_id}", "--window_size=1d", f"--top_reviewers={TOP_N}", *extra]


def _source_lines(data, manifest):
    return {os.path.join(str(data), rel): out.read_lines(os.path.join(str(data), rel)) for rel in manifest["files"]}


@pytest.fixture(scope="module")
def gz_run(tmp_path_factory):
    """3000 generated reviews in 2 gzipped files + product metadata, run once for the module."""
    data = tmp_path_factory.mktemp("gz_data")
    manifest = generate(str(data), N_REVIEWS, files=2, seed=11, gzip=True)
    assert sorted(manifest["files"]) == ["metadata/products-00000-of-00001.jsonl.gz",
                                         "reviews/part-00000-of-00002.jsonl.gz", "reviews/part-00001-of-00002.jsonl.gz"]
    output = tmp_path_factory.mktemp("gz_out")
    # 1 MiB chunks: the larger file is read in several chunks (and one line is longer than a chunk), so
    # line positions must carry across chunk boundaries
    summary = run(_argv(data, output, "gz1", None, "--shuffle_buckets=3", "--chunk_mb=1"))
    return data, manifest, output, summary


def test_outputs_match_manifest(gz_run):
    data, manifest, output, summary = gz_run
    out.check_against_manifest(output, manifest, _source_lines(data, manifest))
    # the event log holds the summary as it was when committed; the commit adds its versions and time
    logged = out.run_summary(output)
    assert logged == {k: v for k, v in summary.items() if k not in ("table_versions", "commit_seconds")}
    from beam_pipeline import tables
    assert summary["table_versions"] == tables.snapshot_versions(tables.Location(str(output)))
    assert summary["reviews"]["files_read"] == 2 and summary["products"]["files_read"] == 1
    assert summary["options"]["run_id"] == "gz1"
    # guard: with --chunk_mb=1 at least one review file spans several chunks
    assert max(sum(len(x) + 1 for x in lines) for src, lines in _source_lines(data, manifest).items()
               if "/reviews/" in src) > 1 << 20


def test_every_defect_kind_of_the_manifest_was_exercised(gz_run):
    """Guard on the generated input: the manifest promises each review defect kind at least once."""
    _, manifest, _, _ = gz_run
    huge_ok = {"huge_line"}  # at most 1 per 100k rows: may be 0 or 1 at this size
    assert all(n >= 1 for k, n in manifest["reviews"]["defects"].items() if k not in huge_ok)


def test_gold_recomputed_from_silver(gz_run):
    _, _, output, _ = gz_run
    rows = out.silver_reviews(output).to_pylist()
    products = out.silver_products(output).to_pylist()
    out.check_gold(output, rows, products, TOP_N)


def test_cleaned_defect_kinds_land_in_silver_with_their_rules(gz_run):
    """Rows the generator made dirty-but-valid are in silver with the cleaning rules applied."""
    data, manifest, output, _ = gz_run
    rows = out.silver_reviews(output).to_pylist()
    raw = {}
    for rel in manifest["files"]:
        if rel.startswith("reviews/"):
            path = os.path.join(str(data), rel)
            for i, line in enumerate(out.read_lines(path), 1):
                raw[(path, i)] = line
    for r in rows:
        obj = json.loads(raw[(r["source"], r["source_position"])])
        assert r["reviewer_id"] == obj["reviewerID"] and r["asin"] == obj["asin"]
        assert r["overall"] == float(obj["overall"]) and 1.0 <= r["overall"] <= 5.0
        assert r["unix_review_time"] == int(obj["unixReviewTime"])
        if "helpful" in obj and "vote" not in obj:  # 2014 schema
            assert r["verified"] is None and r["vote"] == obj["helpful"][0]
        elif "vote" in obj:
            assert r["vote"] == int(str(obj["vote"]).replace(",", ""))
        else:
            assert r["vote"] == 0
        if isinstance(obj.get("verified"), str):
            assert r["verified"] == (obj["verified"].strip().lower() == "true")
        if obj.get("reviewText") is None and obj.get("summary") is not None:
            assert r["review_text_from_summary"] is True and r["review_text"]
        assert r["image_count"] == len([u for u in obj.get("image") or [] if u.startswith("http")])
        for col in ("review_text", "summary"):  # tags are stripped
            assert r[col] is None or TAG.search(r[col]) is None, r[col]
        style = obj.get("style")
        if isinstance(style, str):
            style = json.loads(style)
        if style is None:
            assert r["style"] is None
        else:  # keys "Size:" -> "Size", values trimmed
            assert sorted(r["style"]) == sorted((k.strip(" :\t\n"), v.strip()) for k, v in style.items()
                                                if v is not None)


def test_silver_file_schema_is_exactly_the_declared_one(gz_run):
    """The Parquet files of the silver Delta table hold exactly SILVER_REVIEW_SCHEMA as Delta stores it
    (timestamps in microseconds, UTC: Delta's one timestamp type), and the table's own schema agrees."""
    _, _, output, _ = gz_run
    from beam_pipeline import tables
    from transforms.schemas import SILVER_REVIEW_SCHEMA

    expected = tables.delta_schema(SILVER_REVIEW_SCHEMA)
    for path in out.silver_review_files(output):
        schema = pq.read_schema(path).remove_metadata()
        diff = [(f.name, str(f.type), str(schema.field(f.name).type)) for f in expected
                if not schema.field(f.name).type.equals(f.type)]
        assert not diff and schema.names == expected.names
    table = tables.open_table(tables.Location(str(output)), tables.SILVER_REVIEWS)
    assert [f.name for f in table.schema().fields] == expected.names


# ------------------------------------------------------------------------------------------ rerun
@pytest.fixture(scope="module")
def plain_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("plain_data")
    manifest = generate(str(data), N_REVIEWS, files=2, seed=12, gzip=False)
    return data, manifest


def _table_rows(table, key):
    return sorted(table.to_pylist(), key=key)


def test_full_refresh_replaces_outputs_without_mixing(plain_data, tmp_path):
    """A --full_refresh rerun over one file replaces every table with exactly what a run of that file
    into a fresh folder writes; the first run's version stays readable (time travel)."""
    data, manifest = plain_data
    output = tmp_path / "out"
    first = run(_argv(data, output, "first"))
    out.check_against_manifest(output, manifest)
    first_rows = out.silver_reviews(output)
    assert {r["source"] for r in first_rows.to_pylist()} == {
        os.path.join(str(data), rel) for rel in manifest["files"] if rel.startswith("reviews/")}

    one_file = os.path.join(str(data), "reviews", "part-00000-of-00002.jsonl")
    second = run(_argv(data, output, "second", one_file, "--full_refresh"))
    assert second["reviews"]["files_read"] == 1 and second["full_refresh"] is True
    assert second["reviews"]["records_read"] == sum(1 for line in out.read_lines(one_file) if line.strip())
    assert second["reviews"]["records_read"] < first["reviews"]["records_read"]

    rows = out.silver_reviews(output).to_pylist()
    assert {r["source"] for r in rows} == {one_file}
    assert len(rows) == second["reviews"]["silver_rows"]
    letters = out.dead_letters(output)
    assert {d["source"] for d in letters if d["record_type"] == "review"} <= {one_file}
    assert sum(d["record_type"] == "review" for d in letters) == second["reviews"]["dead_letters"]
    assert out.gold(output, "reviews").filter(
        out.gold(output, "reviews")["window_start"].is_null())["n_reviews"].to_pylist() == [len(rows)]
    assert out.run_summary(output)["options"]["run_id"] == "second"
    assert not out.staged_files(output)

    # time travel: the first run's version reads back equal to what it wrote
    from beam_pipeline import tables
    loc = tables.Location(str(output))
    previous = tables.read(loc, tables.SILVER_REVIEWS, first["table_versions"][tables.SILVER_REVIEWS])
    key = lambda r: (r["source"], r["source_position"])  # noqa: E731
    assert _table_rows(previous, key) == _table_rows(first_rows, key)

    # the rerun's output equals a run of the same inputs into a fresh directory, table by table
    fresh = tmp_path / "fresh"
    run(_argv(data, fresh, "fresh", one_file))
    assert _table_rows(out.silver_reviews(output), key) == _table_rows(out.silver_reviews(fresh), key)
    assert _table_rows(out.silver_products(output), key) == _table_rows(out.silver_products(fresh), key)
    assert sorted(letters, key=key) == sorted(out.dead_letters(fresh), key=key)
    assert out.gold_families(output) == out.gold_families(fresh)
    for family in out.gold_families(fresh):
        assert out.gold(output, family).equals(out.gold(fresh, family)), family
    out.check_gold(output, rows, out.silver_products(output).to_pylist(), TOP_N)


def test_no_stray_files_after_a_finished_run(plain_data, tmp_path):
    data, _ = plain_data
    output = tmp_path / "out"
    run(_argv(data, output, "only"))
    assert not out.staged_files(output)
    # what a reader sees: the Delta tables, the pipeline's own tables, nothing else
    visible = {p.relative_to(output).parts[0] for p in output.rglob("*") if p.is_file()}
    assert visible == {"silver", "gold", "dead_letters", "_pipeline", "_state", "insights"}
    assert not (output / "_pipeline" / "_staged").exists()


# ------------------------------------------------------------------------------------------ sliding windows
SIZE, PERIOD = 86400, 6 * 3600


@pytest.fixture(scope="module")
def sliding_run(plain_data, tmp_path_factory):
    data, manifest = plain_data
    output = tmp_path_factory.mktemp("sliding")
    run(_argv(data, output, "slide", None, "--window_size=1d", "--window_period=6h"))
    return manifest, output, out.silver_reviews(output).to_pylist()


def _sliding_starts(t):
    base = t // PERIOD * PERIOD
    return [base - k * PERIOD for k in range(SIZE // PERIOD)]


def test_sliding_windows_per_window_counts(sliding_run):
    manifest, output, rows = sliding_run
    assert len(rows) == manifest["reviews"]["silver_rows"]
    n, by_rating = collections.Counter(), collections.Counter()
    for r in rows:
        for w in _sliding_starts(r["unix_review_time"]):
            n[w] += 1
            by_rating[(w, r["overall"])] += 1
    g = out.gold(output, "reviews").to_pylist()
    windows = [x for x in g if x["window_start"] is not None]
    assert {out.epoch(x["window_end"]) - out.epoch(x["window_start"]) for x in windows} == {SIZE}
    assert {out.epoch(x["window_start"]): x["n_reviews"] for x in windows} == dict(n)
    g = out.gold(output, "reviews_by_rating").to_pylist()
    assert {(out.epoch(x["window_start"]), x["overall"]): x["n_reviews"] for x in g
            if x["window_start"] is not None} == dict(by_rating)


def test_sliding_windows_all_time_totals_count_each_review_once(sliding_run):
    """Each review is in size/period sliding windows, but once in the all-time rows."""
    _, output, rows = sliding_run
    (total,) = [x for x in out.gold(output, "reviews").to_pylist() if x["window_start"] is None]
    assert total["n_reviews"] == len(rows)
    assert total["sum_overall"] == sum(r["overall"] for r in rows)
    totals = {x["overall"]: x["n_reviews"] for x in out.gold(output, "reviews_by_rating").to_pylist()
              if x["window_start"] is None}
    assert totals == dict(collections.Counter(r["overall"] for r in rows))
    top = sorted((x for x in out.gold(output, "top_reviewers").to_pylist() if x["window_start"] is None),
                 key=lambda x: x["rank"])
    counts = collections.Counter(r["reviewer_id"] for r in rows)
    assert [(x["reviewer_id"], x["n_reviews"]) for x in top] == \
        [(k, counts[k]) for k in sorted(counts, key=lambda k: (-counts[k], k))[:TOP_N]]


def test_sliding_windows_distinct_family_totals(sliding_run):
    """reviews_by_main_cat computes its all-time rows from the facts (distinct products cannot be summed)."""
    _, output, rows = sliding_run
    got = {x["main_cat"]: x["n_reviews"] for x in out.gold(output, "reviews_by_main_cat").to_pylist()
           if x["window_start"] is None}
    assert got == dict(collections.Counter(r["main_cat"] for r in rows))


# ------------------------------------------------------------------------------------------ options
@pytest.fixture
def no_pipeline(monkeypatch):
    """Any attempt to build a Beam pipeline fails the test: validation must come first."""
    class Boom:
        def __init__(self, *a, **k):
            raise AssertionError("a pipeline was constructed before the options were validated")

    monkeypatch.setattr(beam, "Pipeline", Boom)


SECRET = "AccountKey=c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.mark.parametrize("case,extra,message", [
    ("adls_with_local_paths", ["--source=adls"], "azfs://"),
    ("missing_reviews", [], "--reviews is required"),
    ("period_not_dividing_size", ["--window_size=1d", "--window_period=7h"], "--window_period"),
    ("connection_string_option", [f"--azure_connection_string=DefaultEndpointsProtocol=http;{SECRET}"],
     "AZURE_STORAGE_CONNECTION_STRING"),
    ("streaming", ["--streaming"], "--streaming"),
])
def test_invalid_options_fail_before_any_work(case, extra, message, tmp_path, monkeypatch, no_pipeline):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")  # only the case's problem
    data = tmp_path / "in"
    output = tmp_path / "out"
    argv = ["--runner=FnApiRunner", "--source=files", f"--reviews={data}/reviews/*.jsonl",
            f"--products={data}/metadata/*.jsonl", f"--output={output}", "--run_id=x"]
    if case == "missing_reviews":
        argv = [a for a in argv if not a.startswith("--reviews=")]
    argv += extra
    with pytest.raises(OptionsError) as exc:
        run(argv)
    assert message in str(exc.value)
    assert SECRET not in str(exc.value)
    assert not output.exists()


def test_valid_options_pass_validation(tmp_path, no_pipeline):
    """Control for the cases above: the same argv without the problem gets past validation (to the
    pipeline constructor, which the fixture turns into an AssertionError)."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.jsonl").write_text("")
    argv = ["--runner=FnApiRunner", "--source=files", f"--reviews={tmp_path}/r/*.jsonl", f"--output={tmp_path}/o",
            "--window_size=1d", "--window_period=6h"]
    with pytest.raises(AssertionError, match="before the options were validated"):
        run(argv)


def _job_options():
    parser = argparse.ArgumentParser()
    ReviewsOptions._add_argparse_args(parser)
    return sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))


def test_cli_help_lists_every_job_option():
    r = subprocess.run([sys.executable, "-m", "beam_pipeline", "--help"], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
    options = _job_options()
    assert len(options) >= 12
    missing = [o for o in options if o not in r.stdout]
    assert not missing, f"--help does not mention {missing}:\n{r.stdout}"
    assert "--runner" in r.stdout  # and Beam's own options after the job's


def test_cli_reports_invalid_options_with_status_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    r = subprocess.run([sys.executable, "-m", "beam_pipeline", "--runner=FnApiRunner", "--source=adls",
                        f"--reviews={tmp_path}/x.jsonl", f"--output={tmp_path}/o"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    assert "invalid options" in r.stderr and "azfs://" in r.stderr and "credentials" in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_runs_the_job(plain_data, tmp_path):
    data, manifest = plain_data
    output = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "beam_pipeline", *_argv(data, output, "cli")], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reconciled" in r.stdout and "DOES NOT RECONCILE" not in r.stdout
    summary = out.run_summary(output)
    assert summary["reviews"]["silver_rows"] == manifest["reviews"]["silver_rows"]
    assert collections.Counter(d["reason"] for d in out.dead_letters(output) if d["record_type"] == "review") == \
        collections.Counter(manifest["reviews"]["dead_by_reason"])
    shutil.rmtree(output)
