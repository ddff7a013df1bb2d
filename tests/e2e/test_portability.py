"""Offline portability checks of the batch and streaming graphs (feasibility notes §6): the runner-API round trip, a
Dataflow ``--dry_run`` translation, and a real run through the portable job service (embed, LOOPBACK)."""
from __future__ import annotations

import collections
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.pipeline import build_pipeline, run
from runners.generate import generate
from tests.e2e import _outputs as out

pytestmark = pytest.mark.e2e

LABELS = ("ReadReviews", "ParseReviews", "CleanReviews", "DedupeAndEnrich", "ComputeGold", "WriteDeadLetters",
          "StageRunOutputs")
# what only the local runners understand; none of it may reach a Dataflow/Flink proto
DIRECT_ONLY_URNS = ("beam:transform:direct", "beam:runner:direct")


def _unique_names(proto):
    return {t.unique_name for t in proto.components.transforms.values()}


def _top_level_names(proto):
    return {name.split("/", 1)[0] for name in _unique_names(proto)}


def _job_args(tmp_path, *extra):
    return ["--source=files", f"--reviews={tmp_path}/in/reviews/*.jsonl", f"--products={tmp_path}/in/metadata/*.jsonl",
            f"--output={tmp_path}/out", "--run_id=port", *extra]


def test_runner_api_round_trip(tmp_path):
    options = PipelineOptions(["--runner=FnApiRunner", *_job_args(tmp_path)])
    p = beam.Pipeline(options=options)
    outputs = build_pipeline(p, options)
    assert set(outputs) >= {"silver", "gold", "dead_letters", "published", "plan"}
    proto = p.to_runner_api()
    assert set(LABELS) <= _top_level_names(proto)
    assert set(LABELS) <= _unique_names(proto)

    again = beam.Pipeline.from_runner_api(proto, p.runner, p._options)
    proto2 = again.to_runner_api()
    assert _unique_names(proto2) == _unique_names(proto)
    assert len(proto2.components.pcollections) == len(proto.components.pcollections)
    assert sorted(t.spec.urn for t in proto2.components.transforms.values()) == \
        sorted(t.spec.urn for t in proto.components.transforms.values())
    assert list(proto2.root_transform_ids) and list(proto.root_transform_ids)
    # nothing was read or written while building
    assert not (tmp_path / "out").exists()


def test_dataflow_dry_run_builds_the_batch_graph_offline(tmp_path, monkeypatch):
    from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401  (the dev extra installs [gcp])
    from apache_beam.runners.runner import PipelineState

    # credentials for the azfs paths come from a production-style endpoint + DefaultAzureCredential; nothing
    # is listed or opened while the graph is translated (the job matches files at run time, with MatchAll)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--project=offline-project", "--region=us-central1",
        "--temp_location=gs://offline-bucket/tmp", "--source=adls",
        "--reviews=azfs://prodaccount/raw/amazon/reviews/*.jsonl.gz",
        "--products=azfs://prodaccount/raw/amazon/metadata/*.jsonl.gz",
        "--output=azfs://prodaccount/curated/reviews", "--blob_service_endpoint=https://prodaccount.blob.core.windows.net",
        "--run_id=dry"])
    p = beam.Pipeline(options=options)
    build_pipeline(p, options)
    result = p.run()
    assert result.state == PipelineState.DONE
    job = result.job
    assert set(LABELS) <= _unique_names(job.proto_pipeline)
    urns = {t.spec.urn for t in job.proto_pipeline.components.transforms.values()}
    assert not [u for u in urns if u.startswith(DIRECT_ONLY_URNS)]
    envs = list(job.proto_pipeline.components.environments.values())
    assert envs and all(e.urn == "beam:env:docker:v1" for e in envs)
    assert json.loads(job.json())["type"] == "JOB_TYPE_BATCH"
    assert not options.view_as(StandardOptions).streaming


STREAM_LABELS = ("ReadEventHub", "EventsToReviews", "Commit")


def test_dataflow_dry_run_builds_the_streaming_graph_offline(monkeypatch):
    """The same graph with the hub as source translates to a Dataflow streaming job: the SDF reader, the
    shared composites, the commit made from inside the pipeline every --commit_interval (a truly unbounded
    run: the runner checkpoints), and no secret anywhere in the job (a connection string in the environment
    must not leak into it)."""
    from apache_beam.runners.runner import PipelineState

    secret = "Endpoint=sb://prod.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET=;EntityPath=reviews"
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", secret)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--project=offline-project", "--region=us-central1",
        "--temp_location=gs://offline-bucket/tmp", "--streaming", "--source=eventhub",
        "--event_hub_namespace=prod.servicebus.windows.net", "--event_hub=reviews",
        "--products=azfs://prodaccount/raw/amazon/metadata/*.jsonl.gz", "--allowed_lateness=1d",
        "--early_firing=5m", "--output=azfs://prodaccount/curated/stream",
        "--blob_service_endpoint=https://prodaccount.blob.core.windows.net", "--run_id=dry"])
    p = beam.Pipeline(options=options)
    outputs = build_pipeline(p, options)
    assert outputs["target"].commit_interval_s == 60          # commits from inside the pipeline
    result = p.run()
    assert result.state == PipelineState.DONE
    job = result.job
    names = _unique_names(job.proto_pipeline)
    assert set(STREAM_LABELS) <= {n.split("/", 1)[0] for n in names}
    assert any(n.startswith("EventsToReviews/ParseReviews") for n in names)  # the batch composites, reused
    assert any(n.startswith("EventsToReviews/CleanReviews") for n in names)
    assert any(n.startswith("Commit/WriteDeadLetters") for n in names)
    assert any(n.startswith("Commit/StageCommit") for n in names)
    assert json.loads(job.json())["type"] == "JOB_TYPE_STREAMING"
    assert "TOPSECRET" not in job.json() and "TOPSECRET" not in str(job.proto_pipeline)


def test_portable_runner_embed_loopback(tmp_path):
    manifest = generate(str(tmp_path / "in"), 2000, files=2, seed=31)
    summary = run(["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK",
                   *_job_args(tmp_path)])
    output = tmp_path / "out"
    lines = {os.path.join(str(tmp_path / "in"), rel): out.read_lines(os.path.join(str(tmp_path / "in"), rel))
             for rel in manifest["files"]}
    rows, _, letters, stored = out.check_against_manifest(output, manifest, lines)
    assert {k: v for k, v in summary.items() if k not in ("table_versions", "commit_seconds")} == stored
    assert len(rows) == manifest["reviews"]["silver_rows"] == summary["reviews"]["silver_rows"]
    assert collections.Counter(d["reason"] for d in letters if d["record_type"] == "review") == \
        collections.Counter(manifest["reviews"]["dead_by_reason"])


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_dataflow_dry_run_from_the_cli(tmp_path, mode):
    """`python -m beam_pipeline --runner=DataflowRunner --dry_run=True ...` (issue 21): exit 0, nothing read
    or written (no credentials for the account, no hub), the translated graph saved as JSON where it says,
    and no secret from the environment in it."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    secret = "Endpoint=sb://prod.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET=;EntityPath=reviews"
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(PYTHONPATH=root, EVENTHUB_CONNECTION_STRING=secret)
    common = ["--runner=DataflowRunner", "--dry_run=True", "--project=offline-project", "--region=us-central1",
              "--temp_location=gs://offline-bucket/tmp", "--blob_service_endpoint=https://prodaccount.blob.core.windows.net",
              "--products=azfs://prodaccount/raw/amazon/metadata/*.jsonl.gz", f"--run_id=cli{mode}"]
    if mode == "batch":
        args = ["--source=adls", "--reviews=azfs://prodaccount/raw/amazon/reviews/*.jsonl.gz",
                "--output=azfs://prodaccount/curated/reviews"]
    else:
        args = ["--streaming", "--source=eventhub", "--event_hub_namespace=prod.servicebus.windows.net",
                "--event_hub=reviews", "--output=azfs://prodaccount/curated/stream"]
    res = subprocess.run([sys.executable, "-m", "beam_pipeline", *common, *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    path = tmp_path / f"dataflow-dry-run-cli{mode}.json"
    assert f"Job JSON: {path}" in res.stdout and "NOT submitted" in res.stdout
    text = path.read_text()
    assert "TOPSECRET" not in text and "TOPSECRET" not in res.stdout + res.stderr
    job = json.loads(text)
    assert job["job"]["type"] == ("JOB_TYPE_BATCH" if mode == "batch" else "JOB_TYPE_STREAMING")
    names = {t["uniqueName"].split("/", 1)[0] for t in job["pipeline"]["components"]["transforms"].values()}
    assert ({"ReadReviews", "DedupeAndEnrich"} if mode == "batch" else {"ReadEventHub", "Commit"}) <= names
