"""Text features, defined once in TensorFlow so training and serving cannot drift apart.

``normalize_text`` is the TF twin of ``transforms.text.normalize_for_model`` (tags, then entities, then
URLs, then lower case, then punctuation and digits, single spaces; a test keeps the two equal).
``preprocessing_fn`` is the tf.Transform function: its analyzers (the vocabulary and the document
frequencies of tf-idf) run over the training split only, and the graph it yields is embedded in the
exported model, so serving applies exactly what training saw.

    text   = summary + " " + review_text, normalised
    terms  = tokens + bigrams ("great pan" next to "great" and "pan")
    term_ids, term_weights = tf-idf over a vocabulary of the TOP_K most frequent terms (min frequency 2)
"""
import tensorflow as tf
import tensorflow_transform as tft

from transforms.text import ENTITY_PATTERN, TAG_PATTERN, URL_PATTERN

RAW_TEXT_FEATURES = ("summary", "review_text")
LABEL = "label"
TOP_K = 100_000
FREQUENCY_THRESHOLD = 2
VOCABULARY = "terms"
TERM_IDS, TERM_WEIGHTS = "term_ids", "term_weights"
OOV_BUCKETS = 1

# the entities that matter in review text; the Arrow side unescapes every entity, TF (no unescape op)
# these, and drops the rest as punctuation would
_ENTITIES = (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
             ("&#34;", '"'), ("&amp;", "&"))


def normalize_text(text):
    """tf.string tensor -> normalised model text (same rules as transforms.text.normalize_for_model)."""
    text = tf.strings.regex_replace(text, TAG_PATTERN, " ")
    for entity, char in _ENTITIES:
        text = tf.strings.regex_replace(text, entity, char)
    text = tf.strings.regex_replace(text, ENTITY_PATTERN, " ")
    text = tf.strings.regex_replace(text, URL_PATTERN, " ")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, "\u2019", "'")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}\s']+|\p{N}+", " ")
    text = tf.strings.regex_replace(text, r"(?:^|\s)'+|'+(?:\s|$)", " ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    return tf.strings.strip(text)


def terms(summary, review_text):
    """-> RaggedTensor of tokens and bigrams per review."""
    text = normalize_text(tf.strings.join([summary, review_text], separator=" "))
    tokens = tf.strings.split(text)
    bigrams = tf.strings.ngrams(tokens, 2, separator=" ")
    return tf.concat([tokens, bigrams], axis=1)


def preprocessing_fn(inputs, norm="l2"):
    """tf.Transform: raw ``summary``/``review_text`` (+ ``label``) -> tf-idf term ids and weights; with
    ``norm="l2"`` each review's weights are scaled to unit length (long and short reviews weigh alike)."""
    summary = _dense(inputs["summary"])
    review = _dense(inputs["review_text"])
    ids = tft.compute_and_apply_vocabulary(terms(summary, review).to_sparse(), top_k=TOP_K,
                                           frequency_threshold=FREQUENCY_THRESHOLD, num_oov_buckets=OOV_BUCKETS,
                                           vocab_filename=VOCABULARY)
    term_ids, term_weights = tft.tfidf(ids, TOP_K + OOV_BUCKETS)
    if norm == "l2":
        term_weights = l2_normalize_rows(term_weights)
    out = {TERM_IDS: term_ids, TERM_WEIGHTS: term_weights}
    if LABEL in inputs:
        out[LABEL] = inputs[LABEL]
    return out


def l2_normalize_rows(weights):
    """SparseTensor [batch, terms] -> the same with each row scaled to unit L2 norm (empty rows stay empty)."""
    norms = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(weights.values), weights.indices[:, 0],
                                                 tf.cast(weights.dense_shape[0], tf.int32)))
    scale = tf.gather(norms, weights.indices[:, 0])
    return tf.SparseTensor(weights.indices, weights.values / tf.maximum(scale, 1e-12), weights.dense_shape)


def _dense(t):
    """A [batch] or [batch, 1] string feature (sparse when parsed as VarLen) -> [batch] strings."""
    if isinstance(t, tf.SparseTensor):
        t = tf.sparse.to_dense(t, default_value="")
    if t.shape.rank == 2:
        t = tf.squeeze(t, axis=1)
    return t
