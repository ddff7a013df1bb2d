"""The model's text features: the TF normalisation equals the Arrow one, and ``preprocessing_fn`` gives the
documented tf-idf on a handful of rows (analyzers over the given data only).

Expected values are computed here from the documented rules: text = summary + " " + review_text,
normalised; three groups of terms: words = tokens + bigrams + "NEG_" + each of the 3 tokens after a negator
(not a negator itself), chars = the 3-, 4- and 5-character n-grams of each "<token>", summary = the
normalised summary's own tokens + bigrams; per group, the vocabulary keeps terms in at least MIN_DF (2) of
the analysed reviews; weight = (1 + ln count of the term in the review) * idf, idf = 1 + ln((1 + N) /
(1 + df)); terms outside the vocabulary are dropped; each review's weights are then scaled to unit L2
length, then multiplied by the group's GROUP_WEIGHTS. The word group must equal the numpy twin
(NegationTfidf: the tf-idf baseline's terms + negation terms) and the summary group the tf-idf baseline's
features of the summaries.
"""
import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

tf = pytest.importorskip("tensorflow", reason="the training extra (tensorflow, tensorflow-transform) is not installed")
tft = pytest.importorskip("tensorflow_transform")

from training.features import (GROUP_WEIGHTS, GROUPS, LABEL, MIN_DF, char_terms, ids_name,  # noqa: E402
                               negation_terms, normalize_text, preprocessing_fn, weights_name)
from transforms.text import NEGATORS, normalize_for_model  # noqa: E402

TEXTS = [
    "Great <b>pan</b> &amp; lid!!",
    "Visit https://example.com/x?y=1 or WWW.Example.org now",
    "It's   the BEST\u2019s café — 100% naïve",
    "'quoted' words and don't stop",
    "&lt;tag&gt; &nbsp;&#39;x&#39; &eacute;",
    "",
    "Five stars. 5/5, would buy again :)",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tf_normalisation_equals_the_arrow_one(text):
    got = normalize_text(tf.constant([text])).numpy()[0].decode("utf-8")
    want = normalize_for_model(pa.array([text]))[0].as_py()
    if "&eacute;" in text:  # TF has no entity decoder: the rare named entities become spaces, not letters
        want = want.replace("é", "").strip()
    assert " ".join(got.split()) == " ".join(want.split())


ROWS = [("Great pan", "great pan, love it"), ("Awful", "broke fast"), ("great lid", "love it"),
        ("<b>Awful</b> lid", "it broke; awful &amp; sad"), ("", "Love the pan. 5 stars, love it!"),
        ("Not great", "did not love it"), ("No lid", "not great, never again")]


def _negated(tokens):
    """The negation rule, token by token: after a negator, the next 3 tokens that are not negators (a new
    negator starts the count again)."""
    out, left = [], 0
    for t in tokens:
        if t in NEGATORS:
            left = 3
        elif left:
            out.append("NEG_" + t)
            left -= 1
    return out


NEGATION_CASES = [["not", "very", "good", "at", "all"], ["no", "not", "great", "never", "again", "ok", "fine", "x"],
                  ["good"], [], ["never"], ["it", "isn't", "bad"], ["don't", "buy", "nothing", "works", "here", "sadly", "no"]]


def test_negation_terms_follow_the_rule_in_tf_and_in_arrow():
    from training.baselines import negation_terms as arrow_negation_terms
    want = [_negated(case) for case in NEGATION_CASES]
    assert want[0] == ["NEG_very", "NEG_good", "NEG_at"]       # the scope is 3 tokens, "all" is outside it
    assert want[1] == ["NEG_great", "NEG_again", "NEG_ok", "NEG_fine"]
    got = negation_terms(tf.ragged.constant(NEGATION_CASES, dtype=tf.string)).to_list()
    assert [[t.decode() for t in row] for row in got] == want  # scopes never cross into the next review
    flat = pa.array([t for case in NEGATION_CASES for t in case], pa.string())
    rows = np.repeat(np.arange(len(NEGATION_CASES)), [len(c) for c in NEGATION_CASES])
    terms, term_rows = arrow_negation_terms(flat, rows)
    assert [[t for t, r in zip(terms.to_pylist(), term_rows) if r == i] for i in range(len(NEGATION_CASES))] == want


def _char_ngrams(tokens):
    return [w[j:j + n] for w in (f"<{t}>" for t in tokens) for n in (3, 4, 5) for j in range(len(w) - n + 1)]


def test_char_terms_are_the_3_to_5_character_ngrams_of_each_wrapped_token():
    got = char_terms(tf.ragged.constant([["pan", "a"], [], ["café"]])).to_list()
    assert [sorted(t.decode("utf-8") for t in row) for row in got] == \
        [sorted(_char_ngrams(["pan", "a"])), [], sorted(_char_ngrams(["café"]))]
    assert sorted(_char_ngrams(["pan"])) == sorted(["<pa", "pan", "an>", "<pan", "pan>", "<pan>"])


def _expected(rows, group):
    docs = []
    for s, r in rows:
        tokens = normalize_for_model(pa.array([s if group == "summary" else f"{s} {r}"]))[0].as_py().split()
        ngrams = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]
        docs.append({"word": ngrams + _negated(tokens), "char": _char_ngrams(tokens), "summary": ngrams}[group])
    n = len(docs)
    df = Counter(t for d in docs for t in set(d))
    vocab = {t for t, c in df.items() if c >= MIN_DF}
    out = []
    for d in docs:
        counts = Counter(t for t in d if t in vocab)          # terms outside the vocabulary are dropped
        w = {t: (1 + math.log(c)) * (1 + math.log((1 + n) / (1 + df[t]))) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in w.values()))  # each review's weights scaled to unit length
        out.append({t: GROUP_WEIGHTS[group] * v / norm for t, v in w.items()})
    return vocab, out


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """ROWS through preprocessing_fn (analyzers over ROWS): ({group: vocabulary list}, [{group: {term:
    weight}}] per row, in ROWS order)."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    tmp_path = tmp_path_factory.mktemp("tft")
    spec = {"summary": tf.io.FixedLenFeature([], tf.string), "review_text": tf.io.FixedLenFeature([], tf.string),
            LABEL: tf.io.FixedLenFeature([], tf.int64)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    rows = [{"summary": s.encode(), "review_text": r.encode(), LABEL: i} for i, (s, r) in enumerate(ROWS)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p, \
            tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        data = p | beam.Create(rows)
        (transformed, _), transform_fn = (data, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "tft"))
        _ = (transformed
             | beam.Map(lambda r: json.dumps({k: np.asarray(v).tolist() for k, v in r.items()}))
             | beam.io.WriteToText(str(tmp_path / "rows"), shard_name_template=""))
    with open(tmp_path / "rows", encoding="utf-8") as fh:
        results = sorted((json.loads(line) for line in fh), key=lambda r: r[LABEL])  # LABEL = the row number
    out = tft.TFTransformOutput(str(tmp_path / "tft"))
    vocabularies = {g: [t.decode() if isinstance(t, bytes) else t for t in out.vocabulary_by_name(g)] for g in GROUPS}
    docs = [{g: {vocabularies[g][int(i)]: float(w) for i, w in zip(r[ids_name(g)], r[weights_name(g)])}
             for g in GROUPS} for r in results]
    return vocabularies, docs


def test_preprocessing_fn_gives_the_documented_tfidf(transformed):
    vocabularies, docs = transformed
    assert len(docs) == len(ROWS)
    for group in GROUPS:
        want_vocab, want = _expected(ROWS, group)
        assert set(vocabularies[group]) == want_vocab
        assert "great pan" not in want_vocab                  # twice in one review is one document
        for row, (got, w) in enumerate(zip((d[group] for d in docs), want)):
            assert got.keys() == w.keys(), (group, row)
            for t in w:
                assert got[t] == pytest.approx(w[t], rel=1e-5), (group, row, t)
    assert set(docs[1]["word"]) == {"awful", "broke"}         # "fast" and both bigrams are in one review only
    assert [t for t in vocabularies["word"] if t.startswith("NEG_")] == ["NEG_great"]  # the others: one review
    assert set(docs[6]["word"]) >= {"NEG_great", "not great"} and "NEG_lid" not in docs[6]["word"]
    assert sorted(vocabularies["summary"]) == ["awful", "great", "lid"]
    assert set(docs[6]["summary"]) == {"lid"} and docs[4]["summary"] == {}


@pytest.mark.parametrize("group", ["word", "summary"])
def test_word_and_summary_groups_equal_their_numpy_twins(transformed, group):
    """word: the tf-idf baseline's terms + the negation terms (NegationTfidf); summary: the tf-idf
    baseline's features of the summaries alone."""
    from training.baselines import NegationTfidf, TfidfBigramBaseline
    vocabularies, docs = transformed
    s, r = [s for s, _ in ROWS], [r for _, r in ROWS]
    if group == "summary":
        r = [""] * len(ROWS)
    base = (NegationTfidf if group == "word" else TfidfBigramBaseline)().fit_features(s, r)
    assert base.vocabulary_.to_pylist() == sorted(vocabularies[group])
    rows, terms = base.transform(s, r), base.vocabulary_.to_pylist()
    for i, got in enumerate({t: v / GROUP_WEIGHTS[group] for t, v in d[group].items()} for d in docs):
        lo, hi = rows.indptr[i], rows.indptr[i + 1]
        want = {terms[j]: v for j, v in zip(rows.indices[lo:hi], rows.values[lo:hi])}
        assert got.keys() == want.keys()
        assert [got[t] for t in want] == pytest.approx(list(want.values()), rel=1e-5)


def test_the_exported_nb_twin_features_equal_the_numpy_twin():
    """The ensemble's TF side (training.model.nb_weights with ratios from training.train.nb_twin_features)
    equals training.loco.nb_scaled at the group's weight, for every row, empty ones included."""
    import scipy.sparse as sp

    from training import loco
    from training.train import nb_twin_features
    rng = np.random.default_rng(11)
    vocab, features, dense = {}, {}, {}
    for g in GROUPS:
        size = int(rng.integers(3, 9))
        d = rng.random((8, size)) * (rng.random((8, size)) < 0.5)
        d[3] = 0.0                                           # a review with no term of the group
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300) * GROUP_WEIGHTS[g]
        rows, cols = np.nonzero(d)
        slots = np.concatenate([np.arange((rows == r).sum()) for r in range(8)])
        indices = np.stack([rows, slots], axis=1).astype(np.int64)
        shape = [8, int(slots.max()) + 1]
        features[ids_name(g)] = tf.SparseTensor(indices, cols.astype(np.int64), shape)
        features[weights_name(g)] = tf.SparseTensor(indices, d[rows, cols].astype(np.float32), shape)
        vocab[g], dense[g] = size, d
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    got, ratios = nb_twin_features(features, y, vocab)
    for g in GROUPS:
        present = dense[g] > 0
        np.testing.assert_allclose(ratios[g], loco.log_count_ratios(present[y == 1].sum(0), present[y == 0].sum(0)))
        want = loco.nb_scaled(sp.csr_matrix(dense[g]), 8, y).toarray() * GROUP_WEIGHTS[g]
        w = got[weights_name(g)]
        out = np.zeros_like(want)
        out[w.indices[:, 0].numpy(), features[ids_name(g)].values.numpy()] = w.values.numpy()
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(out, dense[g])             # the scaling changed the weights
