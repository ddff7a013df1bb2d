"""``python -m training --split all``: the exported model is refitted on every labelled review (no held-out
split; the generalisation figure is training.loco's), its threshold comes from the rule chosen by
leave-one-category-out cross-validation, and it equals the numpy twin refitted on the same reviews: by default
the ensemble (the linear model's logit plus its naive-Bayes-scaled twin's), with --ensemble none the linear
model alone."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the training extra (tensorflow, tensorflow-transform) is not installed")

from beam_pipeline.pipeline import run  # noqa: E402
from runners.generate import generate  # noqa: E402
from training import data as data_mod  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_split_all_exports_the_all_data_refit(tmp_path):
    generate(str(tmp_path / "data"), 3000, files=2, seed=23)
    run(["--runner=FnApiRunner", "--source=files", f"--reviews={tmp_path}/data/reviews/*.jsonl",
         f"--products={tmp_path}/data/metadata/*.jsonl", f"--output={tmp_path}/batch", "--run_id=t"])
    silver = f"{tmp_path}/batch/silver/reviews"
    out = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-m", "training", f"--silver={silver}", "--category=main_cat",
                           "--split=all", f"--output={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    labelled = data_mod.examples(data_mod.read_silver(silver), split="all", category_source="main_cat")
    assert report["data"]["examples"] == {"train": len(labelled), "validation": 0, "test": 0}
    assert report["model"]["threshold_rule"] == "cv-categories" and 0 < report["model"]["threshold"] < 1
    assert report["model"]["ensemble"] == "nb" and report["model"]["nb_iterations_run"] > 0
    eq = report["equivalence"]
    assert eq["rows"] == len(labelled) and eq["procedure"] == "model+nb"
    assert eq["max_abs_probability_difference"] < 0.02 and eq["labels_agreeing"] > 0.995, eq
    loaded = tf.saved_model.load(str(out / "saved_model"))
    assert len(loaded.nb_tables) == len(loaded.nb_ratios) == 3
    signature = loaded.signatures["serving_default"]
    got = signature(summary=tf.constant(["Great, love it"]), review_text=tf.constant(["works great, love it"]))
    assert np.isfinite(got["probability"].numpy()).all()
    assert "all-data refit" in (out / "report.md").read_text()
    assert "leave-one-category-out" in (out / "model_card.md").read_text()
    # the linear model alone: no NB variables, the numpy twin of the model procedure
    alone = tmp_path / "alone"
    proc = subprocess.run([sys.executable, "-m", "training", f"--silver={silver}", "--category=main_cat",
                           "--split=all", "--ensemble=none", f"--output={alone}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report_alone = json.loads((alone / "report.json").read_text())
    assert report_alone["model"]["ensemble"] == "none" and report_alone["equivalence"]["procedure"] == "model"
    assert report_alone["equivalence"]["max_abs_probability_difference"] < 0.02
    assert not tf.saved_model.load(str(alone / "saved_model")).nb_tables
    # --ensemble belongs to the all-data refit only
    proc = subprocess.run([sys.executable, "-m", "training", f"--silver={silver}", "--split=category",
                           "--ensemble=nb", f"--output={tmp_path / 'refused'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--ensemble applies to --split all only" in proc.stderr, proc.stderr[-2000:]
