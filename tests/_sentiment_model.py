"""A tiny REAL TensorFlow SavedModel with the trainer's serving contract, for the scoring tests.

    serving_default(summary: string[batch], review_text: string[batch])
        -> probability: float32[batch], label: int32[batch]

Text = summary + " " + review_text, lower-cased, split on anything that is not a letter. With
``k = (# "good" or "great" tokens) - (# "bad" or "awful" tokens)``:

    probability = clip(0.5 + 0.25 * k, 0, 1)     (exact in float32: 0, 0.25, 0.5, 0.75, 1)
    label       = probability >= THRESHOLD       (0.6, not 0.5: a text with k = 0 is "negative", so
                                                  tests see that the job uses the model's label)
"""
THRESHOLD = 0.6
POSITIVE_WORDS = ("good", "great")
NEGATIVE_WORDS = ("bad", "awful")


def expected(summary, review_text):
    """What the model returns for one review (plain Python): (probability, label)."""
    import re
    tokens = re.split(r"[^a-z]+", f"{summary or ''} {review_text or ''}".lower())
    k = sum(t in POSITIVE_WORDS for t in tokens) - sum(t in NEGATIVE_WORDS for t in tokens)
    probability = min(1.0, max(0.0, 0.5 + 0.25 * k))
    return probability, int(probability >= THRESHOLD)


def save_model(path):
    """Build and save the model at ``path`` (a new directory); returns ``path``."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.threshold = tf.Variable(THRESHOLD, dtype=tf.float32, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="summary"),
                                      tf.TensorSpec([None], tf.string, name="review_text")])
        def serve(self, summary, review_text):
            text = tf.strings.lower(tf.strings.join([summary, review_text], separator=" "))
            tokens = tf.strings.split(tf.strings.strip(tf.strings.regex_replace(text, "[^a-z]+", " ")))

            def count(words):
                hit = tf.zeros_like(tokens, dtype=tf.bool)
                for w in words:
                    hit = tf.logical_or(hit, tf.equal(tokens, w))
                return tf.reduce_sum(tf.cast(hit, tf.float32), axis=1)

            k = count(POSITIVE_WORDS) - count(NEGATIVE_WORDS)
            probability = tf.clip_by_value(0.5 + 0.25 * k, 0.0, 1.0)
            return {"probability": probability, "label": tf.cast(probability >= self.threshold, tf.int32)}

    model = Model()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve.get_concrete_function()})
    return str(path)


def predicted_gold(table, keys):
    """A predicted-sentiment gold table -> {(window start s or None, *keys): (n_reviews,
    sum_sentiment_probability, n_rated_polar, n_agree_with_rating)}, checking each row's derived columns
    (mean probability, agreement share) against its counts on the way."""
    got = {}
    for r in table.to_pylist():
        w = r["window_start"]
        k = (None if w is None else int(w.timestamp()),) + tuple(r[x] for x in keys)
        got[k] = (r["n_reviews"], r["sum_sentiment_probability"], r["n_rated_polar"], r["n_agree_with_rating"])
        assert r["mean_sentiment_probability"] == r["sum_sentiment_probability"] / r["n_reviews"]
        assert r["agreement_share"] == (None if not r["n_rated_polar"]
                                        else r["n_agree_with_rating"] / r["n_rated_polar"])
    return got
