"""The sentiment-lexicon candidate features (training.lexicon) against a plain per-review computation."""
import math

import numpy as np
import pyarrow as pa
import pytest

from training import loco
from training.lexicon import NEGATED, SQUASH, lexicon_features
from transforms.text import NEGATION_SCOPE, NEGATORS, normalize_for_model

LEXICON = {"great": 3.1, "love": 3.2, "bad": -2.5, "broke": -1.5, "awful": -2.0, "good": 1.9}


def _plain(text):
    """compound, positive, negative of one text, token by token (the module docstring's definition)."""
    normal = normalize_for_model(pa.array([text], pa.string()))[0].as_py()
    tokens = [t for t in normal.split(" ") if t]
    values = []
    for i, tok in enumerate(tokens):
        v = LEXICON.get(tok, 0.0)
        negated = tok not in NEGATORS and any(tokens[j] in NEGATORS for j in range(max(0, i - NEGATION_SCOPE), i))
        values.append(v * NEGATED if negated else v)
    s = sum(values)
    n = len(tokens) + 1.0
    return [s / math.sqrt(s * s + SQUASH), sum(v for v in values if v > 0) / n, -sum(v for v in values if v < 0) / n]


@pytest.mark.parametrize("summary,text", [
    ("Great pan", "I love it, not bad at all"),
    ("Awful", "it broke. never good, never great"),
    (None, "nothing here"),
    ("", ""),
    ("GOOD", "not  really   great or good ... bad"),
])
def test_features_equal_a_plain_per_review_computation(summary, text):
    got = lexicon_features([summary, "filler"], [text, "filler"], LEXICON)[0]
    want = _plain(f"{summary or ''} {text or ''}") + _plain(summary or "")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_negation_turns_a_positive_word_negative():
    f = lexicon_features(["", ""], ["good", "not good"], LEXICON)
    assert f[0, 0] > 0 > f[1, 0]
    assert f[1, 1] == 0 and f[1, 2] > 0


def test_the_lexicon_candidate_adds_fixed_columns_and_refit_procedures():
    rev = loco.Reviews(*(np.asarray(v, dtype=object) for v in (
        ["Great"] * 6 + ["Awful"] * 6, ["love it good"] * 6 + ["it broke bad"] * 6)),
        np.asarray([1] * 6 + [0] * 6, np.int64), np.asarray(list("ABCABC") * 2, dtype=object),
        np.asarray(list("ABCABC") * 2, dtype=object))
    tc = loco.TermCounts(rev.summary, rev.review_text, lexicon=LEXICON)
    train = np.flatnonzero(rev.category != "C")
    x = tc.fold_features("model+lexicon", train).toarray()
    model = tc.fold_features("model", train).toarray()
    np.testing.assert_allclose(x[:, :model.shape[1]], model)
    np.testing.assert_allclose(x[:, model.shape[1]:], lexicon_features(rev.summary, rev.review_text, LEXICON)
                               * loco.LEXICON_WEIGHT)
    out = loco.fold(tc, rev, "C", inner_folds=2, baseline_current=False, progress=lambda _: None)
    assert {f"model+lexicon/refit/{r}" for r in loco.THRESHOLD_RULES} <= set(out)
