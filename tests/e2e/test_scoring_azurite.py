"""End to end against Azurite: the sentiment model read from azfs:// (``--sentiment_model=azfs://...``),
copied to the worker through Beam's azfs filesystem and used by the batch job."""
from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from beam_pipeline.pipeline import run
from runners.local_stack import azfs_url, upload_tree
from tests import _sentiment_model as tiny

pytestmark = pytest.mark.e2e
pytest.importorskip("tensorflow")

CONTAINER = "e2emodels"
TEXTS = {"m1": ("Great", "good"), "m2": (None, "awful"), "m3": ("fine", "ok")}


def test_model_from_azfs(azurite_env, tmp_path):
    model = tiny.save_model(tmp_path / "model")
    names = upload_tree(azurite_env.connection_string, CONTAINER, model, prefix="models/sentiment/v1")
    assert "models/sentiment/v1/saved_model.pb" in names
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"reviewerID": r, "asin": "A1", "overall": 4.0, "summary": s,
                                           "reviewText": t, "unixReviewTime": 1388534400}) + "\n"
                               for r, (s, t) in TEXTS.items()))
    output = tmp_path / "out"
    summary = run(["--runner=FnApiRunner", "--source=files", f"--reviews={reviews}", f"--output={output}",
                   f"--sentiment_model={azfs_url(CONTAINER, 'models/sentiment/v1')}"])
    assert summary["reviews"]["scored_rows"] == 3
    rows = ds.dataset(str(output / "silver" / "reviews"), partitioning="hive").to_table().to_pylist()
    got = {r["reviewer_id"]: (r["predicted_sentiment"], r["sentiment_probability"]) for r in rows}
    assert got == {r: ("positive" if tiny.expected(s, t)[1] else "negative", tiny.expected(s, t)[0])
                   for r, (s, t) in TEXTS.items()}
    assert got == {"m1": ("positive", 1.0), "m2": ("negative", 0.25), "m3": ("negative", 0.5)}
