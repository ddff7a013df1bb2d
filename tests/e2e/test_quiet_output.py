"""Quiet, useful output (issue 21): a batch job scoring with a SavedModel, run through its CLI, prints no
TensorFlow start-up chatter and no Beam warning; the streaming graph is built without Beam's warnings
about non-deterministic key coders or Flatten inputs with different windowing, in every trigger setup."""
import logging
import os
import subprocess
import sys

import pytest

from tests._quiet import BEAM_WARNINGS, noise

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_batch_job_with_a_model_prints_no_chatter_and_no_warning(tmp_path):
    pytest.importorskip("tensorflow", reason="the training extra is not installed")
    from runners.generate import generate
    from tests._sentiment_model import save_model

    generate(str(tmp_path / "data"), 300, files=2, seed=4)
    model = save_model(str(tmp_path / "model"))
    res = subprocess.run([sys.executable, "-m", "beam_pipeline", f"--reviews={tmp_path}/data/reviews/*.jsonl",
                          f"--products={tmp_path}/data/metadata/*.jsonl", f"--output={tmp_path}/out",
                          f"--sentiment_model={model}"], check=False, capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert noise(res.stderr) == []
    assert [line for line in res.stderr.splitlines() if " WARNING " in line or " ERROR " in line] == []
    assert "predicted_sentiment" in res.stdout   # the model was used: its gold families are in the summary


@pytest.mark.parametrize("extra", [["--stop_after_idle_s=3"],
                                   ["--stop_after_idle_s=3", "--early_firing=30s", "--allowed_lateness=1d"],
                                   [],                                   # unbounded: a commit every interval
                                   ["--early_firing=30s"]])
def test_streaming_graph_has_no_beam_warning(tmp_path, monkeypatch, caplog, extra):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.pipeline import build_pipeline

    (tmp_path / "products.jsonl").write_text("")
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;"
                                                     "SharedAccessKey=v;UseDevelopmentEmulator=true;EntityPath=r")
    options = PipelineOptions(["--source=eventhub", f"--output={tmp_path}/out", f"--products={tmp_path}/products.jsonl",
                               "--streaming", *extra]
                              # early panes need a runner with processing-time triggers (refused locally)
                              + (["--runner=FlinkRunner"] if any("early_firing" in e for e in extra) else []))
    with caplog.at_level(logging.WARNING):
        build_pipeline(beam.Pipeline(options=options), options)
    assert [r.getMessage()[:200] for r in caplog.records if any(w in r.getMessage() for w in BEAM_WARNINGS)] == []
    assert [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING] == []
