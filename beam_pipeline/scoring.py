"""Sentiment scoring inside the graph (``--sentiment_model=PATH``): the trainer's SavedModel over Arrow batches.

The model contract (``training/model.py`` exports exactly this): a TensorFlow SavedModel directory whose
``serving_default`` signature takes two string tensors of shape [batch], ``summary`` and ``review_text``
(the raw silver text; the tf.Transform graph is embedded), and returns ``probability`` (float32 [batch],
probability of the positive class) and ``label`` (int [batch], 0/1 at the threshold the trainer chose).

Scoring adds two silver columns (``transforms.schemas.PREDICTION_FIELDS``): ``predicted_sentiment``
("positive" / "negative", from the model's ``label``) and ``sentiment_probability`` (float64, the model's
float32 ``probability`` widened). Without a model both columns are present and null.

It runs inside the steps that already write silver (``DedupeAndEnrichFn`` in batch, ``WriteSilverPaneFn``
in streaming), so it costs no extra shuffle. TensorFlow is imported only when a model is given, and the
model is loaded once per process (cached by path, behind a lock): DoFn instances and the threads of a
worker share it (a loaded concrete function is safe to call from several threads). A model under a URL
(``azfs://``, ``gs://``, any Beam filesystem) is first copied to a local directory through Beam's
``FileSystems`` (TensorFlow's own filesystems know no ``azfs://``), once per process.
"""
import hashlib
import logging
import os
import tempfile
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipeline import quiet
from transforms.labels import NEGATIVE, POSITIVE
from transforms.schemas import PREDICTION_FIELDS

LOG = logging.getLogger("reviews")
PREDICTED, PROBABILITY = PREDICTION_FIELDS.names
INPUTS = ("summary", "review_text")
DEFAULT_BATCH_SIZE = 4096

_lock = threading.Lock()
_models = {}        # path -> (loaded SavedModel, its serving_default signature), one per process
_local_copies = {}  # URL -> local directory


def is_url(path):
    return "://" in path


def local_model_problem(path):
    """Why a local ``path`` cannot be a SavedModel directory (None when it looks like one). URLs are not
    checked here: they are read with the job's credentials when the model is loaded."""
    if is_url(path):
        return None
    if not os.path.isdir(path):
        return f"--sentiment_model {path}: no such directory (a TensorFlow SavedModel directory is expected)"
    if not any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        return f"--sentiment_model {path}: not a SavedModel directory (no saved_model.pb in it)"
    return None


def _copy_to_local(url):
    """Every file under ``url`` (a Beam filesystem path) -> a local directory with the same layout."""
    from apache_beam.io.filesystems import FileSystems
    root = url.rstrip("/")
    files = [m.path for r in FileSystems.match([root + "/**"]) for m in r.metadata_list]
    if not files:
        raise FileNotFoundError(f"--sentiment_model {url}: no files there")
    local = tempfile.mkdtemp(prefix=f"sentiment-model-{hashlib.sha1(root.encode()).hexdigest()[:10]}-")
    for path in files:
        rel = path[len(root):].lstrip("/")
        dst = os.path.join(local, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with FileSystems.open(path, compression_type="uncompressed") as src, open(dst, "wb") as out:
            while True:
                block = src.read(8 << 20)
                if not block:
                    break
                out.write(block)
    LOG.info("sentiment model: copied %d files from %s to %s", len(files), url, local)
    return local


def load_model(path):
    """The ``serving_default`` signature of the SavedModel at ``path`` (local or a Beam filesystem URL),
    loaded once per process."""
    with _lock:
        if path in _models:
            return _models[path][1]
        local = path
        if is_url(path):
            local = _local_copies.get(path) or _copy_to_local(path)
            _local_copies[path] = local
        import tensorflow as tf  # only here: jobs without --sentiment_model never import TensorFlow
        with quiet.stderr_filtered():   # TensorFlow's notices while it loads the graph and picks its kernels
            loaded = tf.saved_model.load(local)
            fn = loaded.signatures["serving_default"]
            missing = [name for name in INPUTS if name not in fn.structured_input_signature[1]]
            if missing:
                raise ValueError(f"--sentiment_model {path}: serving_default takes no {', '.join(missing)} input "
                                 f"(it takes {sorted(fn.structured_input_signature[1])})")
            fn(**{name: tf.constant([""]) for name in INPUTS})   # the first call, inside the window
        _models[path] = (loaded, fn)  # the signature's variables live as long as the loaded object
        LOG.info("sentiment model loaded from %s", path)
        return fn


def _text(column):
    """A string column -> numpy object array for tf (nulls -> "")."""
    return np.asarray(pc.fill_null(column, "").to_numpy(zero_copy_only=False), dtype=object)


def score_table(model_fn, table, batch_size=DEFAULT_BATCH_SIZE):
    """Rows with ``summary`` and ``review_text`` -> (label int8 numpy array of 0/1, probability float64 numpy
    array), calling ``model_fn(summary=..., review_text=...)`` on slices of at most ``batch_size`` rows."""
    n = table.num_rows
    labels, probabilities = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float64)
    if not n:
        return labels, probabilities
    import tensorflow as tf
    for lo in range(0, n, batch_size):  # Python strings exist for one slice at a time
        part = table.slice(lo, batch_size)
        hi = lo + part.num_rows
        out = model_fn(summary=tf.constant(_text(part["summary"]), dtype=tf.string),
                       review_text=tf.constant(_text(part["review_text"]), dtype=tf.string))
        label = np.asarray(out["label"]).reshape(-1)
        if label.size != hi - lo or np.any((label != 0) & (label != 1)):
            raise ValueError(f"the sentiment model returned labels other than one 0/1 per review: {label[:8]}")
        labels[lo:hi] = label
        probabilities[lo:hi] = np.asarray(out["probability"], dtype=np.float64).reshape(-1)
    return labels, probabilities


def prediction_columns(labels, probabilities):
    """Model outputs -> the two silver columns (``predicted_sentiment``, ``sentiment_probability``)."""
    names = pa.array([NEGATIVE, POSITIVE], pa.string())
    predicted = names.take(pa.array(labels.astype(np.int32)))
    return predicted, pa.array(probabilities, pa.float64())


def with_predictions(table, model_fn, batch_size=DEFAULT_BATCH_SIZE):
    """A silver review table (prediction columns null) -> the same rows with the prediction columns set."""
    predicted, probability = prediction_columns(*score_table(model_fn, table, batch_size))
    for name, values in ((PREDICTED, predicted), (PROBABILITY, probability)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, PREDICTION_FIELDS.field(name), values) if i >= 0 else \
            table.append_column(PREDICTION_FIELDS.field(name), values)
    return table


class Scorer:
    """What a DoFn carries (picklable: a path and a batch size); the model is loaded on first use, once per
    process."""

    def __init__(self, path, batch_size=DEFAULT_BATCH_SIZE):
        self.path, self.batch_size = path, batch_size

    def __repr__(self):
        return f"Scorer({self.path!r})"

    def load(self):
        return load_model(self.path)

    def score(self, table):
        """Silver rows -> the same rows with ``predicted_sentiment`` and ``sentiment_probability`` set."""
        return with_predictions(table, self.load(), self.batch_size)


def scorer(path, batch_size=DEFAULT_BATCH_SIZE):
    """``--sentiment_model`` value -> a Scorer, or None when no model is given."""
    return Scorer(path, batch_size) if path else None
