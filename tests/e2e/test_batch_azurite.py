"""End to end against Azurite: generated reviews uploaded to blob containers, read by the job through
Beam's azfs:// filesystem (``--source=adls``), outputs written to a container (and to a local dir),
downloaded again and checked with pyarrow against the generator's manifest."""
from __future__ import annotations

import collections
import os

import pytest

from beam_pipeline.pipeline import run
from runners.generate import generate
from runners.local_stack import azfs_url, download_tree, ensure_container, upload_tree
from tests.e2e import _outputs as out

pytestmark = pytest.mark.e2e

IN_CONTAINER = "e2ereviews"
OUT_CONTAINER = "e2eoutput"
N_REVIEWS = 2000
TOP_N = 4


@pytest.fixture(scope="module")
def uploaded(azurite, tmp_path_factory):
    """Generated data (2 review files + metadata) uploaded under IN_CONTAINER/landing/."""
    data = tmp_path_factory.mktemp("az_data")
    manifest = generate(str(data), N_REVIEWS, files=2, seed=21, gzip=False)
    names = upload_tree(azurite.connection_string, IN_CONTAINER, data, prefix="landing")
    assert sorted(names) == sorted(f"landing/{rel}" for rel in list(manifest["files"]) + ["manifest.json"])
    # dead letters name their source as the job saw it: the azfs URL of the blob
    lines = {azfs_url(IN_CONTAINER, f"landing/{rel}"): out.read_lines(os.path.join(str(data), rel))
             for rel in manifest["files"]}
    return manifest, lines


def _argv(output, run_id, reviews="landing/reviews/*.jsonl"):
    return ["--runner=FnApiRunner", "--source=adls", f"--reviews={azfs_url(IN_CONTAINER, reviews)}",
            f"--products={azfs_url(IN_CONTAINER, 'landing/metadata/*.jsonl')}",
            f"--output={output}", f"--run_id={run_id}", f"--top_reviewers={TOP_N}", "--shuffle_buckets=2"]


def test_azfs_to_azfs(azurite_env, uploaded, tmp_path):
    """Delta tables in a blob container, written and committed through delta-rs's Azure object store:
    read back straight from Azurite and from a downloaded copy; a full refresh over one file replaces
    them; the first version stays readable (time travel); an incremental rerun reads nothing new."""
    from beam_pipeline import tables
    manifest, lines = uploaded
    cs = azurite_env.connection_string
    ensure_container(cs, OUT_CONTAINER)
    output = azfs_url(OUT_CONTAINER, "run1")
    summary = run(_argv(output, "az1"))
    assert summary["output"] == output
    assert summary["reviews"]["files_read"] == 2

    local = tmp_path / "run1"
    got = download_tree(cs, OUT_CONTAINER, "run1", local)
    rels = {p.relative_to(local).as_posix() for p in got}
    assert {r.split("/", 1)[0] for r in rels} == {"silver", "gold", "dead_letters", "_pipeline", "_state", "insights"}
    assert not out.staged_files(local), "staged or unreferenced blobs left behind"

    rows, products, letters, stored = out.check_against_manifest(local, manifest, lines)
    assert stored == {k: v for k, v in summary.items() if k not in ("table_versions", "commit_seconds")}
    assert {r["source"] for r in rows} == {u for u in lines if "/reviews/" in u}
    out.check_gold(local, rows, products, TOP_N)
    loc = tables.Location(output)    # the same tables straight from the container, through delta-rs
    direct = tables.read(loc, tables.SILVER_REVIEWS)
    assert direct.num_rows == len(rows)
    assert sorted(direct["source_position"].to_pylist()) == sorted(r["source_position"] for r in rows)

    # nothing new: an incremental rerun reads no file and changes no data table
    again = run(_argv(output, "az1b"))
    assert again["files"]["reviews"] == {"new": 0, "changed": 0, "skipped": 2}
    assert tables.read(loc, tables.SILVER_REVIEWS).num_rows == len(rows)

    # a full refresh over one of the two files replaces the tables: nothing of run 1 is visible
    one = "landing/reviews/part-00000-of-00002.jsonl"
    summary2 = run(_argv(output, "az2", one) + ["--full_refresh"])
    assert summary2["reviews"]["records_read"] == sum(1 for line in lines[azfs_url(IN_CONTAINER, one)] if line.strip())
    local2 = tmp_path / "run2"
    download_tree(cs, OUT_CONTAINER, "run1", local2)
    assert out.run_summary(local2)["options"]["run_id"] == "az2"
    rows2 = out.silver_reviews(local2).to_pylist()
    assert {r["source"] for r in rows2} == {azfs_url(IN_CONTAINER, one)}
    assert len(rows2) == summary2["reviews"]["silver_rows"] < len(rows)
    assert {d["source"] for d in out.dead_letters(local2) if d["record_type"] == "review"} <= {azfs_url(IN_CONTAINER, one)}
    out.check_silver_layout(local2, rows2)
    out.check_gold(local2, rows2, out.silver_products(local2).to_pylist(), TOP_N)
    # time travel on the container: run 1's version is still there
    v1 = summary["table_versions"][tables.SILVER_REVIEWS]
    assert tables.read(loc, tables.SILVER_REVIEWS, version=v1).num_rows == len(rows)


def test_azfs_to_local_dir(azurite_env, uploaded, tmp_path):
    manifest, lines = uploaded
    output = tmp_path / "local_out"
    summary = run(_argv(str(output), "azlocal"))
    rows, products, letters, _ = out.check_against_manifest(output, manifest, lines)
    assert summary["reviews"]["records_read"] == manifest["reviews"]["records_in"]
    assert collections.Counter(d["source"].rsplit("/", 2)[-2] for d in letters) == collections.Counter(
        {"reviews": manifest["reviews"]["dead"], "metadata": manifest["products"]["dead"]})
    out.check_gold(output, rows, products, TOP_N)


def test_adls_source_without_credentials_is_rejected(monkeypatch, tmp_path):
    from beam_pipeline.options import OptionsError

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(OptionsError, match="credentials"):
        run(_argv(str(tmp_path / "o"), "nocreds"))
    assert not (tmp_path / "o").exists()
