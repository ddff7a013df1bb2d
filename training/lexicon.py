"""Sentiment-lexicon features: a prior that does not depend on the training categories (issue 20, item 4).

The lexicon is VADER's (``vaderSentiment``'s ``vader_lexicon.txt``, MIT licence, 7,520 entries, each a mean
valence from -4 to +4 rated by ten people), read from the installed package: nothing is downloaded. It is a
candidate feature group measured by ``python -m training.loco --lexicon``, not part of the exported model.

Per review, over the model's tokens (``training.baselines.tokenize``: summary + review text, normalised), and
again over the summary's tokens alone, three numbers:

* ``compound``: the valence sum ``s`` squashed as VADER does, ``s / sqrt(s^2 + 15)`` (in -1 .. 1);
* ``positive`` and ``negative``: the positive and the negative valence mass per token, ``sum / (n + 1)``.

A token inside a negation scope (``training.baselines.negated``: within ``NEGATION_SCOPE`` tokens
after a negator of the same review) counts with its valence times -0.74, VADER's negation factor.
"""
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.baselines import negated, tokenize


NEGATED = -0.74      # VADER's N_SCALAR
SQUASH = 15.0        # VADER's normalisation alpha
NAMES = ("compound", "positive", "negative", "summary_compound", "summary_positive", "summary_negative")


def vader_lexicon():
    """{token: valence} from the installed vaderSentiment package; ValueError (with the fix) when it is absent."""
    try:
        import vaderSentiment  # noqa: PLC0415 - an optional package: only the lexicon candidate needs it
    except ImportError:
        raise ValueError("the lexicon candidate needs the vaderSentiment package (pip install vaderSentiment: "
                         "it ships its lexicon; nothing is downloaded at run time)") from None
    path = os.path.join(os.path.dirname(vaderSentiment.__file__), "vader_lexicon.txt")
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                out[parts[0].lower()] = float(parts[1])
    return out


def _scores(tokens, rows, n, lexicon):
    """(n, 3) compound / positive / negative of each document's tokens."""
    words = list(lexicon)
    values = np.append(np.array([lexicon[w] for w in words], dtype=np.float64), 0.0)   # [-1]: not in it
    idx = pc.fill_null(pc.index_in(tokens, value_set=pa.array(words, pa.string())), -1).to_numpy()
    valence = values[idx] * np.where(negated(tokens, rows), NEGATED, 1.0)
    total = np.bincount(rows, weights=valence, minlength=n)
    pos = np.bincount(rows, weights=np.maximum(valence, 0.0), minlength=n)
    neg = np.bincount(rows, weights=np.maximum(-valence, 0.0), minlength=n)
    count = np.bincount(rows, minlength=n) + 1.0
    return np.stack([total / np.sqrt(total * total + SQUASH), pos / count, neg / count], axis=1)


def lexicon_features(summary, review_text, lexicon=None):
    """Summaries and review texts (sequences of str or None) -> float64 array (n, 6), columns ``NAMES``."""
    lexicon = vader_lexicon() if lexicon is None else lexicon
    tokens, rows, n = tokenize(summary, review_text)
    s_tokens, s_rows, _ = tokenize(summary, [""] * len(summary))
    return np.hstack([_scores(tokens, rows, n, lexicon), _scores(s_tokens, s_rows, n, lexicon)])
