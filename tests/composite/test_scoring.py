"""Scoring in the graph (``--sentiment_model``), batch and streaming, with a tiny REAL SavedModel
(tests/_sentiment_model.py: probability = clip(0.5 + 0.25 * (good/great - bad/awful tokens)), label =
probability >= 0.6).

Batch: the whole job (``run``) on the FnApiRunner over hand-written reviews and products; silver read back
and the predicted gold families checked against values derived by hand from the model's rule and the
ratings. Streaming: ``EventsToReviews`` under TestStream on the BundleBasedDirectRunner, gold panes checked
per window with ``equal_to_per_window``.
"""
import glob
import json
import shutil

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline import tables
from beam_pipeline.pipeline import run
from beam_pipeline.streaming import EventsToReviews, StreamTarget
from tests import _sentiment_model as tiny
from tests.e2e import _outputs as out
from transforms import gold, keys
from transforms.enrich import dedupe_products
from transforms.events import REVIEW_TIME, EventBatch, event_times
from transforms.windows import WindowSpec

pytest.importorskip("tensorflow")

DAY = 86400
D1, D2 = 1388534400, 1388534400 + DAY   # 2014-01-01, 2014-01-02 (UTC)
PREDICTED = ("predicted_sentiment", "predicted_sentiment_by_brand", "predicted_sentiment_by_main_cat")
PRODUCTS = {"A1": ("Acme", "Kitchen"), "A2": ("Bolt", "Tools")}   # A3 has no metadata: null brand / main_cat

#         reviewer asin  stars day  summary   review text          -> model: probability, label
REVIEWS = [("r1", "A1", 5.0, D1, "Great", "good pan"),            # k=2: 1.0 positive; rating positive: agrees
           ("r2", "A1", 1.0, D1, "Bad", "awful lid"),             # k=-2: 0.0 negative; negative: agrees
           ("r3", "A2", 3.0, D1, "ok", "good"),                   # k=1: 0.75 positive; 3 stars: no polarity
           ("r4", "A2", 4.0, D2, "meh", "fine"),                  # k=0: 0.5 negative (0.5 < 0.6); disagrees
           ("r5", "A3", 2.0, D2, None, "great but bad"),          # k=0: 0.5 negative; negative: agrees
           ("r6", "A1", 5.0, D2, "Good", "Great, great!")]        # k=3: 1.0 (clipped) positive; agrees
EXPECTED_SILVER = {"r1": ("positive", 1.0), "r2": ("negative", 0.0), "r3": ("positive", 0.75),
                   "r4": ("negative", 0.5), "r5": ("negative", 0.5), "r6": ("positive", 1.0)}


def review_json(reviewer, asin, stars, t, summary, text):
    obj = {"reviewerID": reviewer, "asin": asin, "overall": stars, "unixReviewTime": t, "reviewText": text}
    if summary is not None:
        obj["summary"] = summary
    return json.dumps(obj)


def test_expected_values_follow_the_model_rule():
    """Guard on the hand-written expectations: they are what the documented model rule gives."""
    for reviewer, _, _, _, summary, text in REVIEWS:
        p, label = tiny.expected(summary, text)
        assert EXPECTED_SILVER[reviewer] == (("positive" if label else "negative"), p)


def reference_gold(keys_of):
    """Plain Python over REVIEWS and EXPECTED_SILVER: {(window start or None, *keys): (n, sum p, polar, agree)}."""
    out = {}
    for reviewer, asin, stars, t, _, _ in REVIEWS:
        predicted, p = EXPECTED_SILVER[reviewer]
        brand, main_cat = PRODUCTS.get(asin, (None, None))
        rating = "negative" if stars <= 2 else "positive" if stars >= 4 else None
        row = {"brand": brand, "main_cat": main_cat, "predicted_sentiment": predicted}
        for w in (t // DAY * DAY, None):
            k = (w,) + tuple(row[c] for c in keys_of)
            n, s, polar, agree = out.get(k, (0, 0.0, 0, 0))
            out[k] = (n + 1, s + p, polar + (rating is not None), agree + (rating == predicted))
    return out


# ---------------------------------------------------------------------------------------------------
# batch

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny.save_model(tmp_path_factory.mktemp("model") / "sentiment")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring_data")
    lines = [review_json(*r) for r in REVIEWS]
    lines.append(lines[0])             # a duplicate: dropped before scoring, counted once
    lines.append('{"overall": 5.0, "reviewerID": "rx", "asin": "A1", "reviewText": "good')  # malformed
    (d / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    (d / "products.jsonl").write_text("\n".join(json.dumps({"asin": a, "brand": b, "main_cat": c, "title": a})
                                                for a, (b, c) in PRODUCTS.items()) + "\n")
    return d


def _argv(data, output, *extra):
    return ["--runner=FnApiRunner", "--source=files", f"--reviews={data / 'reviews.jsonl'}",
            f"--products={data / 'products.jsonl'}", f"--output={output}", "--run_id=t", "--shuffle_buckets=2",
            *extra]


@pytest.fixture(scope="module")
def scored_run(model, data, tmp_path_factory):
    output = tmp_path_factory.mktemp("scored_out")
    summary = run(_argv(data, output, f"--sentiment_model={model}"))
    return output, summary


def silver(output):
    return out.silver_reviews(output)


def gold_table(output, name):
    return out.gold(output, name)


def test_batch_silver_carries_the_predictions(scored_run):
    output, summary = scored_run
    assert summary["reviews"]["silver_rows"] == 6 and summary["reviews"]["duplicates_dropped"] == 1
    assert summary["reviews"]["scored_rows"] == 6 and summary["reviews"]["reconciled"]
    assert summary["options"]["sentiment_model"].endswith("sentiment")
    rows = silver(output).to_pylist()
    assert {r["reviewer_id"]: (r["predicted_sentiment"], r["sentiment_probability"]) for r in rows} == \
        EXPECTED_SILVER
    assert silver(output).schema.field("sentiment_probability").type == pa.float64()


@pytest.mark.parametrize("name", PREDICTED)
def test_batch_predicted_gold_families(scored_run, name):
    output, _ = scored_run
    family = gold.FAMILY_BY_NAME[name]
    table = gold_table(output, name)
    assert tiny.predicted_gold(table, family.keys) == reference_gold(family.keys)
    for r in table.to_pylist():
        assert r["mean_sentiment_probability"] == r["sum_sentiment_probability"] / r["n_reviews"]
        assert r["agreement_share"] == (r["n_agree_with_rating"] / r["n_rated_polar"] if r["n_rated_polar"]
                                        else None)


def test_batch_predicted_sentiment_hand_values(scored_run):
    """All-time rows of predicted_sentiment, by hand from the table at the top."""
    output, _ = scored_run
    totals = {r["predicted_sentiment"]: r for r in gold_table(output, "predicted_sentiment").to_pylist()
              if r["window_start"] is None}
    pos, neg = totals["positive"], totals["negative"]
    # positive: r1 (1.0, agrees), r3 (0.75, 3 stars), r6 (1.0, agrees)
    assert (pos["n_reviews"], pos["sum_sentiment_probability"], pos["n_rated_polar"], pos["n_agree_with_rating"],
            pos["agreement_share"]) == (3, 2.75, 2, 2, 1.0)
    # negative: r2 (0.0, agrees), r4 (0.5, 4 stars: disagrees), r5 (0.5, agrees)
    assert (neg["n_reviews"], neg["sum_sentiment_probability"], neg["n_rated_polar"], neg["n_agree_with_rating"],
            neg["mean_sentiment_probability"]) == (3, 1.0, 3, 2, 1.0 / 3)


def test_batch_rating_families_unchanged_by_the_model(scored_run, data, tmp_path):
    """The rating-derived gold is the same with and without a model; without one the prediction columns
    are null and the predicted families are not written, and a run without a model into the root of one
    with a model removes the predicted tables it left."""
    output, _ = scored_run
    plain = tmp_path / "plain"
    shutil.copytree(output, plain)
    assert "predicted_sentiment" in out.gold_families(plain)
    summary = run(_argv(data, plain, "--full_refresh", "--run_id=plain"))
    assert summary["reviews"]["scored_rows"] == 0 and summary["options"]["sentiment_model"] is None
    table = silver(plain)
    assert table.num_rows == 6
    assert table["predicted_sentiment"].null_count == table["sentiment_probability"].null_count == 6
    assert table.schema.field("predicted_sentiment").type == pa.string()
    predicted = {f.name for f in gold.PREDICTED_FAMILIES}
    assert predicted <= out.gold_families(output)
    # the same rating-derived tables (families with rows, and the tables derived from them), no predicted one
    assert out.gold_families(plain) == out.gold_families(output) - predicted
    assert {f.name for f in gold.FAMILIES} & out.gold_families(plain) >= {"reviews", "reviews_by_rating"}
    for name in out.gold_families(plain):
        a, b = gold_table(output, name), gold_table(plain, name)
        assert a.equals(b), name
    drop = ["predicted_sentiment", "sentiment_probability"]
    key = [("reviewer_id", "ascending")]
    assert silver(output).drop_columns(drop).sort_by(key).equals(table.drop_columns(drop).sort_by(key))


# ---------------------------------------------------------------------------------------------------
# streaming (TestStream)

H = 3600
T0 = 1_400_000_400 - 1_400_000_400 % H
A, B = IntervalWindow(T0, T0 + H), IntervalWindow(T0 + H, T0 + 2 * H)
# reviewer, asin, stars, time, summary, text (model: probability, label)
EVENTS_1 = [("s1", "A1", 5.0, T0 + 10, "great", "good"),       # A: 1.0 positive, agrees
            ("s2", "A1", 1.0, T0 + 20, None, "bad"),            # A: 0.25 negative, agrees
            ("s3", "A2", 3.0, T0 + 30, "fine", "ok"),           # A: 0.5 negative (< 0.6), 3 stars
            ("s4", "A3", 2.0, T0 + H + 5, "good", "good")]      # B: 1.0 positive, disagrees
EVENTS_2 = [("s1", "A1", 5.0, T0 + 10, "great", "good"),       # same content as s1: a duplicate
            ("s5", "A2", 4.0, T0 + 40, "good", "")]             # A: 0.75 positive, agrees


def _batch(partition, first_seq, events, watermark_s):
    bodies = [review_json(*e).encode() for e in events]
    enqueued = np.full(len(bodies), 1_700_000_000_000, dtype=np.int64)
    times = event_times(bodies, enqueued, REVIEW_TIME, 1 << 20)
    b = EventBatch("reviews", partition, first_seq, tuple(str(first_seq + i) for i in range(len(bodies))),
                   enqueued, times, tuple(bodies), watermark_s)
    return TimestampedValue(b, Timestamp(seconds=max(watermark_s or 0, int(times.max()))))


def _products(n_buckets):
    rows = [{"asin": a, "brand": b, "main_cat": c, "source": "p", "source_position": i + 1}
            for i, (a, (b, c)) in enumerate(PRODUCTS.items())]
    table, _ = dedupe_products(rows)
    return [(int(bucket), part) for bucket, part in
            keys.split_by_bucket(table, keys.buckets(table["asin"], n_buckets))]


def _rows(element):
    _, table = element
    return tuple(sorted((r.get("brand"), r["predicted_sentiment"], r["n_reviews"], r["sum_sentiment_probability"],
                         r["n_rated_polar"], r["n_agree_with_rating"], r["pane_timing"], r["pane_is_last"])
                        for r in table.to_pylist()))


@pytest.fixture(scope="module")
def streamed(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored_stream")
    target = StreamTarget(tables.Location(str(out)), "test")
    p = TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    events = p | "Events" >> (TestStream()
                              .advance_watermark_to(T0)
                              .add_elements([_batch("0", 0, EVENTS_1, None)])
                              .add_elements([_batch("1", 0, EVENTS_2, T0)])
                              .advance_watermark_to_infinity())
    products = p | "Products" >> beam.Create(_products(2))
    result = (events, products) | EventsToReviews(target, WindowSpec(H), REVIEW_TIME, 0, None, n_buckets=2,
                                                  top_reviewers=10, max_record_bytes=1 << 20, payload_bytes=4096,
                                                  sentiment_model=model)
    on_time = ("ON_TIME", True)
    assert_that(result["gold"] | "Predicted" >> beam.Filter(lambda kv: kv[0] == "predicted_sentiment")
                | "PredictedRows" >> beam.Map(_rows),
                equal_to_per_window({
                    A: [((None, "negative", 2, 0.75, 1, 1) + on_time, (None, "positive", 2, 1.75, 2, 2) + on_time)],
                    B: [((None, "positive", 1, 1.0, 1, 0) + on_time,)],
                }), label="PredictedPanes")
    assert_that(result["gold"] | "ByBrand" >> beam.Filter(lambda kv: kv[0] == "predicted_sentiment_by_brand")
                | "ByBrandRows" >> beam.Map(_rows),
                equal_to_per_window({
                    A: [(("Acme", "negative", 1, 0.25, 1, 1) + on_time, ("Acme", "positive", 1, 1.0, 1, 1) + on_time,
                         ("Bolt", "negative", 1, 0.5, 0, 0) + on_time, ("Bolt", "positive", 1, 0.75, 1, 1) + on_time)],
                    B: [((None, "positive", 1, 1.0, 1, 0) + on_time,)],
                }), label="ByBrandPanes")
    # the rating-derived families are still there, unchanged
    assert_that(result["gold"] | "Reviews" >> beam.Filter(lambda kv: kv[0] == "reviews")
                | "ReviewRows" >> beam.Map(lambda kv: (kv[1]["n_reviews"][0].as_py(), kv[1]["sum_overall"][0].as_py())),
                equal_to_per_window({A: [(4, 13.0)], B: [(1, 2.0)]}), label="ReviewPanes")
    p.run().wait_until_finish()
    return out


def test_streaming_gold_panes(streamed):
    """Asserted per window inside the pipeline (the fixture's run fails when they do not hold); the files exist."""
    for name in PREDICTED:
        assert glob.glob(f"{streamed}/gold_changelog/{name}/test-*.parquet"), name


def test_streaming_silver_carries_the_predictions(streamed):
    files = glob.glob(f"{streamed}/silver/reviews/test-*.parquet")
    rows = ds.dataset(files, format="parquet").to_table().to_pylist()
    assert sorted((r["reviewer_id"], r["brand"], r["predicted_sentiment"], r["sentiment_probability"])
                  for r in rows) == [("s1", "Acme", "positive", 1.0), ("s2", "Acme", "negative", 0.25),
                                     ("s3", "Bolt", "negative", 0.5), ("s4", None, "positive", 1.0),
                                     ("s5", "Bolt", "positive", 0.75)]
    for reviewer, _, _, _, summary, text in EVENTS_1 + EVENTS_2:
        p, label = tiny.expected(summary, text)
        assert [(r["predicted_sentiment"], r["sentiment_probability"]) for r in rows if r["reviewer_id"] == reviewer
                ][0] == ("positive" if label else "negative", p)
