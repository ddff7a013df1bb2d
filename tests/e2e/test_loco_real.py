"""Leave-one-category-out on the real reviews (../shared/data/amazon and amazon2023), a small subset of
categories so it stays under a minute: the CLI runs, writes report.json and report.md, and the table it
prints has every held-out category with the model and the baseline refitted in the same folds. The full
run over every category with >= 50 negatives is `python -m training.loco --output out/loco` (docs/model.md)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_AMAZON_2023_DIR, SHARED_AMAZON_DIR

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ONLY = "Baby,Grocery_and_Gourmet_Food,Video_Games,Prime_Pantry,Patio_Lawn_and_Garden,Software,Magazine_Subscriptions"
FOLDS = "Baby,Software"


@pytest.mark.skipif(not (SHARED_AMAZON_DIR / "reviews").is_dir() or not (SHARED_AMAZON_2023_DIR / "reviews").is_dir(),
                    reason="the real review data (../shared/data/amazon and ../shared/data/amazon2023) is absent")
def test_loco_on_real_categories_reports_the_table(tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "training.loco", "--data", str(SHARED_AMAZON_DIR),
                           str(SHARED_AMAZON_2023_DIR), "--only", ONLY, "--categories", FOLDS, "--inner_folds", "2",
                           "--bootstrap", "200", "--output", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report["per_category"]) == ["Baby", "Software"]
    # Software is one category made of both folders' files
    assert report["data"]["categories"]["Software"]["sources"] == ["amazon/Software", "amazon2023/Software"]
    for cat, row in report["per_category"].items():
        for proc_name in (report["model"], report["baseline"]):
            e = row["procedures"][proc_name]
            assert 0.8 < e["roc_auc"] <= 1 and 0.5 < e["macro_f1"] <= 1, (cat, proc_name, e)
            assert e["ci"]["roc_auc"][0] <= e["roc_auc"] <= e["ci"]["roc_auc"][1]
    table = (tmp_path / "report.md").read_text()
    assert "| Baby |" in table and "| Software |" in table and "| mean |" in table and "| worst |" in table
    print(f"LOCO subset took {time.monotonic() - started:.0f} s")
