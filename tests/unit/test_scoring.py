"""Unit tests for sentiment scoring (beam_pipeline/scoring.py), the predicted gold families (transforms/gold.py)
and the --sentiment_model option.

The gold tests need no TensorFlow: they fill the prediction columns by hand. The scoring tests use a tiny
REAL SavedModel (tests/_sentiment_model.py; its documented rule gives every expected value) and are
skipped where TensorFlow is not installed.
"""
import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.options import OptionsError, validated
from tests import _sentiment_model as tiny
from tests._tables import silver_table
from transforms import gold
from transforms.schemas import CLEAN_REVIEW_SCHEMA, PREDICTION_FIELDS, SILVER_REVIEW_SCHEMA
from transforms.windows import WindowSpec

DAY = 86400
T0 = 1388534400  # 2014-01-01 00:00:00 UTC
UTC = dt.timezone.utc


silver = silver_table


# ---------------------------------------------------------------------------------------------------
# schema

def test_prediction_columns_are_nullable_silver_columns_the_cleaner_does_not_make():
    for f in PREDICTION_FIELDS:
        assert SILVER_REVIEW_SCHEMA.field(f.name).nullable
        assert f.name not in CLEAN_REVIEW_SCHEMA.names
    assert SILVER_REVIEW_SCHEMA.field("predicted_sentiment").type == pa.string()
    assert SILVER_REVIEW_SCHEMA.field("sentiment_probability").type == pa.float64()


# ---------------------------------------------------------------------------------------------------
# predicted gold families (no TensorFlow)

# (overall, brand, main_cat, predicted, probability, day)
SCORED = [(5.0, "Acme", "Kitchen", "positive", 0.75, 0),   # polar, agrees
          (1.0, "Acme", "Kitchen", "positive", 0.5, 0),    # polar, disagrees
          (3.0, "Acme", None, "positive", 1.0, 0),         # neutral rating: not in the agreement
          (2.0, None, "Tools", "negative", 0.25, 1),       # polar, agrees
          (4.0, "Bolt", "Tools", "negative", 0.0, 1)]      # polar, disagrees


def scored_table():
    return silver([{"overall": o, "brand": b, "main_cat": c, "predicted_sentiment": p, "sentiment_probability": q,
                    "unix_review_time": T0 + d * DAY + 7} for o, b, c, p, q, d in SCORED])


def reference(keys):
    """Plain Python: {(window start or None, *keys): (n, sum prob, n polar, n agree)} with windows of a day."""
    out = {}
    for o, b, c, p, q, d in SCORED:
        row = {"brand": b, "main_cat": c, "predicted_sentiment": p}
        rating = "negative" if o <= 2 else "positive" if o >= 4 else None
        for w in (T0 + d * DAY, None):
            k = (w,) + tuple(row[k] for k in keys)
            n, s, polar, agree = out.get(k, (0, 0.0, 0, 0))
            out[k] = (n + 1, s + q, polar + (rating is not None), agree + (rating == p))
    return out


def test_predicted_families_are_computed_only_when_scored():
    assert gold.review_families(False) == gold.FAMILIES
    assert {f.name for f in gold.review_families(True)} - {f.name for f in gold.FAMILIES} == {
        "predicted_sentiment", "predicted_sentiment_by_brand", "predicted_sentiment_by_main_cat"}
    assert gold.FAMILY_BY_NAME["predicted_sentiment_by_brand"].keys == ("brand", "predicted_sentiment")
    assert gold.FAMILY_BY_NAME["predicted_sentiment_by_main_cat"].keys == ("main_cat", "predicted_sentiment")
    facts = gold.review_facts(scored_table())
    assert "predicted_sentiment" not in facts.column_names  # unscored facts are unchanged
    assert set(gold.partials(facts, WindowSpec(DAY))) == {f.name for f in gold.FAMILIES if f.source == "reviews"}


def test_review_facts_agreement_excludes_neutral_and_null_ratings():
    t = silver([{"overall": 5.0, "predicted_sentiment": "positive", "sentiment_probability": 0.9},
                {"overall": 3.0, "predicted_sentiment": "positive", "sentiment_probability": 0.9},
                {"overall": 3.0, "predicted_sentiment": "negative", "sentiment_probability": 0.1},
                {"overall": 1.0, "predicted_sentiment": "positive", "sentiment_probability": 0.6},
                {"overall": 2.0, "predicted_sentiment": None, "sentiment_probability": None}])
    f = gold.review_facts(t, scored=True)
    assert f["rated_polar"].to_pylist() == [1, 0, 0, 1, 1]
    assert f["agree_with_rating"].to_pylist() == [1, 0, 0, 0, 0]
    assert f["sentiment_probability"].to_pylist() == [0.9, 0.9, 0.1, 0.6, None]


@pytest.mark.parametrize("name", [f.name for f in gold.PREDICTED_FAMILIES])
def test_predicted_family_matches_reference_and_merges(name):
    family = gold.FAMILY_BY_NAME[name]
    facts = gold.review_facts(scored_table(), scored=True)
    whole = gold.partials(facts, WindowSpec(DAY), families=gold.review_families(True))[name]
    # partials of two slices merge to the partial of the whole (the additive rule: n_*, sum_* add up)
    halves = [gold.partials(facts.slice(a, b), WindowSpec(DAY), families=gold.PREDICTED_FAMILIES)[name]
              for a, b in ((0, 2), (2, 3))]
    merged = gold.merge(halves)
    assert sorted(merged.to_pylist(), key=repr) == sorted(whole.to_pylist(), key=repr)
    assert tiny.predicted_gold(gold.finalize(family, merged), family.keys[:-1] + ("predicted_sentiment",)) == \
        reference(family.keys)


def test_predicted_sentiment_hand_values():
    facts = gold.review_facts(scored_table(), scored=True)
    family = gold.FAMILY_BY_NAME["predicted_sentiment"]
    table = gold.finalize(family, gold.partials(facts, WindowSpec(DAY), families=gold.PREDICTED_FAMILIES)[
        "predicted_sentiment"])
    totals = {r["predicted_sentiment"]: r for r in table.to_pylist() if r["window_start"] is None}
    pos, neg = totals["positive"], totals["negative"]
    assert (pos["n_reviews"], pos["sum_sentiment_probability"], pos["n_rated_polar"], pos["n_agree_with_rating"]) \
        == (3, 2.25, 2, 1)
    assert (pos["mean_sentiment_probability"], pos["agreement_share"]) == (0.75, 0.5)
    assert (neg["n_reviews"], neg["sum_sentiment_probability"], neg["n_rated_polar"], neg["n_agree_with_rating"]) \
        == (2, 0.25, 2, 1)
    assert table.column_names == ["window_start", "window_end", "predicted_sentiment", "n_reviews",
                                  "sum_sentiment_probability", "n_rated_polar", "n_agree_with_rating",
                                  "mean_sentiment_probability", "agreement_share"]


def test_agreement_share_is_null_without_polar_ratings():
    t = silver([{"overall": 3.0, "predicted_sentiment": "positive", "sentiment_probability": 0.75}])
    family = gold.FAMILY_BY_NAME["predicted_sentiment"]
    table = gold.finalize(family, gold.partials(gold.review_facts(t, scored=True), WindowSpec(DAY),
                                                families=gold.PREDICTED_FAMILIES)["predicted_sentiment"])
    assert table["agreement_share"].to_pylist() == [None, None]
    assert table["mean_sentiment_probability"].to_pylist() == [0.75, 0.75]


def test_window_partials_carry_the_predicted_families():
    facts = gold.review_facts(scored_table().slice(0, 3), scored=True)
    parts = gold.window_partials(facts, T0, T0 + DAY, families=gold.review_families(True))
    family = gold.FAMILY_BY_NAME["predicted_sentiment_by_brand"]
    rows = gold.finalize(family, parts[family.name], totals=False).to_pylist()
    assert [(r["brand"], r["predicted_sentiment"], r["n_reviews"], r["n_rated_polar"], r["n_agree_with_rating"])
            for r in rows] == [("Acme", "positive", 3, 2, 1)]


# ---------------------------------------------------------------------------------------------------
# the option

def _options(*extra):
    return PipelineOptions(["--reviews=x.jsonl", "--output=out", *extra])


def test_option_absent_by_default():
    o, _, _ = validated(_options())
    assert o.sentiment_model is None


def test_option_checks_a_local_path(tmp_path, monkeypatch):
    with pytest.raises(OptionsError, match="no such directory"):
        validated(_options(f"--sentiment_model={tmp_path / 'missing'}"))
    with pytest.raises(OptionsError, match="not a SavedModel directory"):
        validated(_options(f"--sentiment_model={tmp_path}"))
    (tmp_path / "saved_model.pb").write_bytes(b"")
    o, _, _ = validated(_options(f"--sentiment_model={tmp_path}"))
    assert o.sentiment_model == str(tmp_path)
    with pytest.raises(OptionsError, match="Dataflow workers cannot read"):
        validated(_options(f"--sentiment_model={tmp_path}", "--runner=DataflowRunner"))
    # URLs are read with the job's credentials when the model is loaded; only the credentials are checked here
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(OptionsError, match=r"^invalid options: --sentiment_model needs Azure credentials: set "
                                           r"AZURE_STORAGE_CONNECTION_STRING"):
        validated(_options("--sentiment_model=azfs://account/models/sentiment"))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    validated(_options("--sentiment_model=azfs://account/models/sentiment"))


def test_option_in_help():
    from beam_pipeline.options import help_text
    assert "--sentiment_model" in help_text()


def test_no_model_no_tensorflow_import():
    """A job without --sentiment_model builds and validates without importing TensorFlow."""
    code = ("import sys, apache_beam as beam\n"
            "from apache_beam.options.pipeline_options import PipelineOptions\n"
            "from beam_pipeline.pipeline import build_pipeline\n"
            "p = beam.Pipeline(options=PipelineOptions(['--reviews=x.jsonl', '--output=o']))\n"
            "build_pipeline(p, p.options)\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------
# scoring with a real SavedModel

@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    pytest.importorskip("tensorflow")
    return tiny.save_model(tmp_path_factory.mktemp("model") / "sentiment")


TEXTS = [("Great", "good pan"), (None, "awful"), ("ok", None), ("bad BAD bad", "GOOD"), (None, None),
         ("meh", "great, great & good!"), ("good", "bad")]


def test_score_table_follows_the_model(model_path):
    from beam_pipeline import scoring
    fn = scoring.load_model(model_path)
    assert scoring.load_model(model_path) is fn  # once per process
    table = pa.table({"summary": [s for s, _ in TEXTS], "review_text": [t for _, t in TEXTS]})
    labels, probabilities = scoring.score_table(fn, table)
    assert labels.dtype == np.int8 and probabilities.dtype == np.float64
    expected = [tiny.expected(s, t) for s, t in TEXTS]
    assert probabilities.tolist() == [p for p, _ in expected] == [1.0, 0.25, 0.5, 0.0, 0.5, 1.0, 0.5]
    assert labels.tolist() == [label for _, label in expected] == [1, 0, 0, 0, 0, 1, 0]
    for batch_size in (1, 3, 7):  # slices give the same answers
        got = scoring.score_table(fn, table, batch_size=batch_size)
        assert got[0].tolist() == labels.tolist() and got[1].tolist() == probabilities.tolist()
    empty = scoring.score_table(fn, table.slice(0, 0))
    assert empty[0].size == 0 and empty[1].size == 0


def test_scorer_fills_the_silver_columns(model_path):
    from beam_pipeline import scoring
    t = silver([{"summary": s, "review_text": t} for s, t in TEXTS])
    assert t["predicted_sentiment"].null_count == t.num_rows
    scored = scoring.Scorer(model_path, batch_size=2).score(t)
    assert scored.schema == SILVER_REVIEW_SCHEMA
    assert scored["predicted_sentiment"].to_pylist() == ["positive", "negative", "negative", "negative", "negative",
                                                         "positive", "negative"]
    assert scored["sentiment_probability"].to_pylist() == [1.0, 0.25, 0.5, 0.0, 0.5, 1.0, 0.5]
    assert scored.drop_columns(PREDICTION_FIELDS.names).equals(t.drop_columns(PREDICTION_FIELDS.names))


def test_scorer_pickles_without_the_model(model_path):
    import pickle
    from beam_pipeline import scoring
    s = scoring.Scorer(model_path)
    s.load()
    assert pickle.loads(pickle.dumps(s)).path == model_path


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_model_copied_through_beam_filesystems(model_path):
    """A URL model is copied to a local directory through Beam's FileSystems, then loaded (Beam has no
    in-memory URL filesystem, so the copy is exercised on a local root here; tests/e2e/test_scoring_azurite.py
    loads one from azfs://)."""
    from beam_pipeline import scoring
    local = scoring._copy_to_local(model_path)
    assert _files(local) == _files(model_path) and "variables/variables.index" in _files(local)
    fn = scoring.load_model(local)
    assert scoring.score_table(fn, pa.table({"summary": ["good"], "review_text": [""]}))[1].tolist() == [0.75]


def test_a_model_without_the_inputs_is_refused(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from beam_pipeline import scoring

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"probability": tf.zeros_like(text, dtype=tf.float32)}

    m = Other()
    tf.saved_model.save(m, str(tmp_path / "other"), signatures={"serving_default": m.serve.get_concrete_function()})
    with pytest.raises(ValueError, match="takes no summary, review_text input"):
        scoring.load_model(str(tmp_path / "other"))
