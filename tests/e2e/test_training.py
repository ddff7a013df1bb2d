"""End to end: the batch job's silver -> tf.Transform -> Keras -> SavedModel -> raw text scored from the
SavedModel alone, on generated data; and the real reviews (skipped when ../shared/data is absent) with the
unseen-category evaluation next to both baselines from the same run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the training extra (tensorflow, tensorflow-transform) is not installed")

from beam_pipeline.pipeline import run  # noqa: E402
from runners.generate import generate  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_gen")
    generate(str(root / "data"), 4000, files=2, seed=21)
    run(["--runner=FnApiRunner", "--source=files", f"--reviews={root}/data/reviews/*.jsonl",
         f"--products={root}/data/metadata/*.jsonl", f"--output={root}/batch", "--run_id=t"])
    out = root / "model"
    proc = subprocess.run([sys.executable, "-m", "training", f"--silver={root}/batch/silver/reviews",
                           "--category=main_cat", "--split=hash", f"--output={out}",
                           "--bootstrap=100"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout, proc.stderr


def test_training_prints_no_tensorflow_start_up_chatter(generated_model):
    """Issue 21: TensorFlow's C++ start-up lines (absl preamble, oneDNN, cuda drivers, cuInit) are held back."""
    from tests._quiet import noise
    assert noise(generated_model[2]) == []
    warnings = [line for line in generated_model[2].splitlines() if " WARNING " in line or "WARNING:" in line]
    assert warnings == []   # tf.Transform's instance-dict and cache-key warnings included


def test_scoring_with_the_trained_model_prints_no_tensorflow_notice(generated_model, tmp_path):
    """The trainer's model made TensorFlow print "oneDNN supports DT_INT64 only on platforms with AVX-512" as an
    E line at its first call: scoring loads it and makes that call inside the filter (issue 21)."""
    from tests._quiet import noise
    out = generated_model[0]
    proc = subprocess.run([sys.executable, "-m", "beam_pipeline", f"--reviews={out.parent}/data/reviews/*.jsonl",
                           f"--output={tmp_path}/scored", f"--sentiment_model={out}/saved_model"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert noise(proc.stderr) == []


def test_progress_per_epoch_and_report_files(generated_model):
    out, stdout, _ = generated_model
    assert "fitted (lbfgs): iterations_run" in stdout and "best_validation" in stdout
    assert "L-BFGS iteration 10: loss" in stdout                      # validation AUC reported as it goes
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"model", "seeds_hashing_tfidf_lr", "tfidf_1_2gram_lr"}
    model = report["results"]["model"]
    assert model["label_counts"] and 0.0 <= model["roc_auc"] <= 1.0
    assert model["ci"]["roc_auc"][0] <= model["roc_auc"] <= model["ci"]["roc_auc"][1]
    assert report["model"]["early_stopping_on"] is None              # auto: lbfgs fits to the minimum
    for name in ("seeds_hashing_tfidf_lr", "tfidf_1_2gram_lr"):    # exported model's scores, paired rows
        versus = model["versus"][name]
        assert versus["roc_auc_difference"] == pytest.approx(model["roc_auc"] - report["results"][name]["roc_auc"],
                                                             abs=1e-4)
        assert versus["ci"][0] <= versus["roc_auc_difference"] <= versus["ci"][1]
    assert (out / "report.md").read_text().count("|") > 20
    assert "paired bootstrap" in (out / "report.md").read_text()
    assert "Limits" in (out / "model_card.md").read_text()


def test_saved_model_alone_scores_raw_text(generated_model, tmp_path):
    """Copied away from its work folder (no transform output beside it), the SavedModel still scores raw
    text through its one signature; generated reviews say what they mean, so the signs must be right."""
    import shutil
    out, _, _ = generated_model
    alone = tmp_path / "alone"
    shutil.copytree(out / "saved_model", alone)
    shutil.rmtree(out / "_work")
    fn = tf.saved_model.load(str(alone)).signatures["serving_default"]
    assert {s.name for s in fn.structured_input_signature[1].values()} == {"summary", "review_text"}
    res = fn(summary=tf.constant(["Five stars", "Terrible", ""]),
             review_text=tf.constant(["Great product, works perfectly, I love it, highly recommend",
                                      "Broke after two days, poor quality, waste of money, do not buy", ""]))
    p, label = res["probability"].numpy(), res["label"].numpy()
    assert p.shape == (3,) and label.shape == (3,) and label.dtype == np.int32
    assert p[0] > 0.5 > p[1] and label[0] == 1 and label[1] == 0
    assert np.all((p >= 0) & (p <= 1))


@pytest.fixture(scope="module")
def real_report(shared_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_real")
    data = shared_data_dir
    proc = subprocess.run([sys.executable, "-m", "training", f"--reviews={data}/reviews/*.jsonl.gz",
                           f"--products={data}/metadata/*.jsonl.gz", f"--output={root}"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((root / "report.json").read_text())


def test_real_data_evaluated_on_unseen_categories(real_report):
    d = real_report["data"]
    assert d["test_categories"] and not set(d["test_categories"]) & set(d["train_categories"])
    assert not set(d["validation_categories"]) & set(d["test_categories"])
    assert real_report["data"]["examples"]["test"] > 5000


def test_real_data_model_beats_the_seeds_baseline(real_report):
    r = real_report["results"]
    assert r["model"]["roc_auc"] > r["seeds_hashing_tfidf_lr"]["ci"]["roc_auc"][1]
    assert r["model"]["macro_f1"] > r["seeds_hashing_tfidf_lr"]["ci"]["macro_f1"][1]


def test_real_data_model_beats_the_tfidf_baseline_and_targets(real_report):
    r = real_report["results"]
    assert r["model"]["roc_auc"] >= 0.95 and r["model"]["macro_f1"] >= 0.80
    assert r["model"]["roc_auc"] > r["tfidf_1_2gram_lr"]["ci"]["roc_auc"][1]
    assert r["model"]["macro_f1"] > r["tfidf_1_2gram_lr"]["ci"]["macro_f1"][1]


def test_three_class_option_trains_and_exports(generated_model, tmp_path):
    """--classes 3 (negative / neutral / positive): the SavedModel adds the class probabilities and its
    label is the most probable class."""
    root = generated_model[0].parent
    out = tmp_path / "three"
    proc = subprocess.run([sys.executable, "-m", "training", f"--silver={root}/batch/silver/reviews",
                           "--category=main_cat", "--split=hash", f"--output={out}", "--epochs=3", "--classes=3",
                           "--bootstrap=50"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "epoch 1:" in proc.stdout and "val_loss" in proc.stdout  # auto: adam for the softmax model
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"model"} and report["model"]["classes"] == 3
    assert set(report["results"]["model"]["label_counts"]) == {"negative", "neutral", "positive"}
    fn = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    res = fn(summary=tf.constant(["Love it", "Awful"]),
             review_text=tf.constant(["Great product, works perfectly, highly recommend", "Broke, waste of money"]))
    probs = res["probabilities"].numpy()
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert res["label"].numpy().tolist() == probs.argmax(axis=1).tolist()
    assert np.allclose(res["probability"].numpy(), probs[:, 2])
