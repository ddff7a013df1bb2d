"""Sentiment labels from star ratings: the one definition the gold metrics and the trainer share.

    rating <= 2        negative
    2 < rating < 4     neutral   (3 stars)
    rating >= 4        positive

Binary polarity (the trainer's default task) is 1 for positive, 0 for negative, and null for neutral
(3-star reviews are excluded from binary training, not guessed).
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NEGATIVE, NEUTRAL, POSITIVE = "negative", "neutral", "positive"
CLASSES = (NEGATIVE, NEUTRAL, POSITIVE)      # 3-class label ids 0, 1, 2
NEGATIVE_MAX, POSITIVE_MIN = 2.0, 4.0


def sentiment_id(overall):
    """Ratings -> int8 array of 0 (negative), 1 (neutral), 2 (positive); null rating -> null."""
    r = overall.to_numpy(zero_copy_only=False) if not isinstance(overall, np.ndarray) else overall
    r = np.asarray(r, dtype=float)
    ids = np.where(r <= NEGATIVE_MAX, 0, np.where(r >= POSITIVE_MIN, 2, 1)).astype(np.int8)
    return pa.array(ids, type=pa.int8(), mask=np.isnan(r))


def sentiment(overall):
    """Ratings -> "negative" / "neutral" / "positive"."""
    return pa.array(np.asarray(CLASSES, dtype=object)).take(pc.cast(sentiment_id(overall), pa.int32()))


def polarity(overall):
    """Ratings -> 1 (positive) / 0 (negative) / null (neutral or no rating)."""
    ids = sentiment_id(overall)
    return pc.if_else(pc.equal(ids, 1), pa.scalar(None, pa.int8()),
                      pc.cast(pc.equal(ids, 2), pa.int8()))


def sentiment_of(rating):
    """One rating -> its sentiment name (per-record code paths)."""
    if rating <= NEGATIVE_MAX:
        return NEGATIVE
    return POSITIVE if rating >= POSITIVE_MIN else NEUTRAL
