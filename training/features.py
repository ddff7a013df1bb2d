"""Text features, defined once in TensorFlow so training and serving cannot drift apart.

``normalize_text`` is the TF twin of ``transforms.text.normalize_for_model`` (tags, then entities, then
URLs, then lower case, then punctuation and digits, single spaces; a test keeps the two equal).
``preprocessing_fn`` is the tf.Transform function: its analyzers (the vocabulary and the document
frequencies of tf-idf) run over the training split only, and the graph it yields is embedded in the
exported model, so serving applies exactly what training saw.

    text    = summary + " " + review_text, normalised, split into tokens
    word    = tokens + bigrams ("great pan" next to "great" and "pan") + negation scope: each of the 3
              tokens after a negator ("not", "don't", "never", ... transforms.text.NEGATORS) also counts
              as "NEG_" + token ("not very good" -> "NEG_very", "NEG_good")
    char    = the 3-, 4- and 5-character n-grams of each token wrapped in "<" and ">" ("<pan>" -> "<pa",
              "pan", "an>", "<pan", "pan>", "<pan>"): they carry what a word means into categories where the
              word itself is rare ("disappointing" and "disappointed" share "<disappoint")
    summary = the summary's own tokens + bigrams, apart from the text's: a headline word ("Great",
              "Disappointed") weighs as a headline, not as one more word of the review
    {group}_ids, {group}_weights = sublinear tf-idf, (1 + ln count) * idf, over the group's vocabulary of
              the TOP_K terms in most training reviews (at least MIN_DF of them); other terms dropped

Without the negation terms the word group is exactly the tf-idf 1-2-gram baseline's features
(``training.baselines.TfidfBigramBaseline``); with them it is ``training.baselines.NegationTfidf``, and the
summary group is the baseline's features of the summary alone (tests check both, term by term).

Each group's weights are scaled to unit L2 length per review (long reviews weigh as much as short ones),
then to the group's GROUP_WEIGHTS: words lead, character n-grams and the summary fill in. The groups,
their weights and the model's L2 were chosen by leave-one-category-out cross-validation over the
non-test categories of the real data (``bench/model_selection.py``).
"""
import tensorflow as tf
import tensorflow_transform as tft

from transforms.text import (ENTITY_PATTERN, NEGATION_PREFIX, NEGATION_SCOPE, NEGATORS, TAG_PATTERN,
                             UNCLOSED_TAG_PATTERN, URL_PATTERN)

RAW_TEXT_FEATURES = ("summary", "review_text")
LABEL = "label"
TOP_K = 200_000                    # per group, the terms in most training reviews (the tf-idf baseline's cap)
MIN_DF = 2                         # ... that are in at least this many training reviews
CHAR_NGRAMS = (3, 4, 5)
# the feature groups, each with its own vocabulary (named after the group), and the L2 length of a review's
# weights in each
GROUP_WEIGHTS = {"word": 1.0, "char": 0.5, "summary": 0.3}
GROUPS = tuple(GROUP_WEIGHTS)


def ids_name(group):
    return f"{group}_ids"


def weights_name(group):
    return f"{group}_weights"


# the entities that matter in review text; the Arrow side unescapes every entity, TF (no unescape op)
# these, and drops the rest as punctuation would
_ENTITIES = (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
             ("&#34;", '"'), ("&amp;", "&"))


def _strip_markup(text):
    """Complete tags and an unclosed one at the end; a lone opener's '<' goes with the punctuation below."""
    text = tf.strings.regex_replace(text, TAG_PATTERN, " ")
    return tf.strings.regex_replace(text, UNCLOSED_TAG_PATTERN, " ")


def normalize_text(text):
    """tf.string tensor -> normalised model text (same rules as transforms.text.normalize_for_model)."""
    text = _strip_markup(text)
    for entity, char in _ENTITIES:
        text = tf.strings.regex_replace(text, entity, char)
    text = tf.strings.regex_replace(text, ENTITY_PATTERN, " ")
    text = _strip_markup(text)  # unescaped "&lt;b&gt;" is a tag too (the markup rule of transforms.text)
    text = tf.strings.regex_replace(text, URL_PATTERN, " ")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, "\u2019", "'")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}\s']+|\p{N}+", " ")
    text = tf.strings.regex_replace(text, r"(?:^|\s)'+|'+(?:\s|$)", " ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    return tf.strings.strip(text)


def tokens(summary, review_text=None):
    """-> RaggedTensor [batch, tokens] of the normalised ``summary + " " + review_text`` (the summary's
    alone without ``review_text``)."""
    text = summary if review_text is None else tf.strings.join([summary, review_text], separator=" ")
    return tf.strings.split(normalize_text(text))


def ngram_terms(tokens):
    """Tokens -> RaggedTensor of the tokens followed by their bigrams, per review."""
    return tf.concat([tokens, tf.strings.ngrams(tokens, 2, separator=" ")], axis=1)


def negation_terms(tokens):
    """Tokens -> RaggedTensor of NEGATION_PREFIX + each token within NEGATION_SCOPE tokens after a negator
    (NEGATORS) of its review and not a negator itself, per review."""
    flat, rows = tokens.flat_values, tokens.value_rowids()
    negator = tf.reduce_any(tf.equal(flat[:, None], tf.constant(NEGATORS)[None, :]), axis=1)
    scoped = tf.zeros_like(negator)
    for k in range(1, NEGATION_SCOPE + 1):   # the token k places back is a negator of the same review
        before = tf.concat([tf.zeros([k], tf.bool), negator[:-k]], 0)[:tf.size(negator)]
        same = tf.concat([tf.zeros([k], tf.bool), tf.equal(rows[:-k], rows[k:])], 0)[:tf.size(negator)]
        scoped = scoped | (before & same)
    marked = scoped & ~negator
    return tf.RaggedTensor.from_value_rowids(tf.strings.join([NEGATION_PREFIX, tf.boolean_mask(flat, marked)]),
                                             tf.boolean_mask(rows, marked), nrows=tokens.nrows())


def word_terms(tokens):
    """Tokens -> RaggedTensor of the tokens, their bigrams and their negation terms, per review."""
    return tf.concat([ngram_terms(tokens), negation_terms(tokens)], axis=1)


def char_terms(tokens):
    """Tokens -> RaggedTensor of the CHAR_NGRAMS-character n-grams of each "<token>", per review (token by
    token, widths in CHAR_NGRAMS order; a token shorter than a width has none of that width)."""
    wrapped = tokens.with_flat_values(tf.strings.join(["<", tokens.flat_values, ">"]))
    chars = tf.strings.unicode_split(wrapped, "UTF-8")                     # [batch, tokens, chars]
    return tf.strings.ngrams(chars, CHAR_NGRAMS, separator="").merge_dims(1, 2)


def preprocessing_fn(inputs, norm="l2"):
    """tf.Transform: raw ``summary``/``review_text`` (+ ``label``) -> per group (GROUPS) tf-idf ids and
    weights; with ``norm="l2"`` each group's weights in a review are scaled to unit length, then to the
    group's GROUP_WEIGHTS."""
    summary = _dense(inputs["summary"])
    toks = tokens(summary, _dense(inputs["review_text"]))
    out = {}
    groups = {"word": word_terms(toks), "char": char_terms(toks), "summary": ngram_terms(tokens(summary))}
    for group in GROUPS:
        terms = groups[group]
        distinct = distinct_per_row(terms)
        # unit weights count the same documents; tf.Transform's weighted path analyses them ~1.6x faster
        # than its unweighted one here, with the same vocabularies (make train-real; docs/model.md)
        vocabulary = tft.vocabulary(distinct, top_k=TOP_K, frequency_threshold=MIN_DF, vocab_filename=group,
                                    weights=tf.ones_like(distinct, dtype=tf.float32))
        ids = tft.apply_vocabulary(terms.to_sparse(), vocabulary, default_value=-1)
        out[ids_name(group)], weights = sublinear_tfidf(ids, TOP_K, name=f"{group}_tfidf")
        if norm == "l2":
            weights = l2_normalize_rows(weights)
        out[weights_name(group)] = weights * GROUP_WEIGHTS[group]
    if LABEL in inputs:
        out[LABEL] = inputs[LABEL]
    return out


def distinct_per_row(terms):
    """RaggedTensor [batch, terms] -> 1-D tensor of each review's distinct terms (the vocabulary analyzer
    then counts documents, not occurrences)."""
    keyed = tf.strings.join([tf.strings.as_string(terms.value_rowids()), terms.flat_values], separator="\x1f")
    return tf.strings.regex_replace(tf.unique(keyed).y, "^[0-9]+\x1f", "")


def sublinear_tfidf(ids, vocab_size, name=None):
    """SparseTensor [batch, terms] of vocabulary ids (-1: not in the vocabulary, dropped) -> (ids, weights),
    SparseTensors [batch, distinct terms] with weight = (1 + ln count) * idf per distinct term of a review,
    idf = 1 + ln((1 + N) / (1 + df)) over the analysed (training) reviews."""
    ids = tf.sparse.retain(ids, ids.values >= 0)
    idf = tft.experimental.idf(ids, vocab_size, name=name)          # per occurrence, analysed on training
    key = ids.indices[:, 0] * vocab_size + ids.values
    distinct, at, count = tf.unique_with_counts(key)
    weight = (1.0 + tf.math.log(tf.cast(count, tf.float32))) * \
        tf.math.unsorted_segment_max(tf.cast(idf.values, tf.float32), at, tf.size(distinct))
    row = distinct // vocab_size
    slot = tf.cast(tft.segment_indices(row), tf.int64)               # rows come in order: 0, 1, ... per row
    indices = tf.stack([row, slot], axis=1)
    shape = tf.stack([ids.dense_shape[0], tf.reduce_max(tf.concat([slot, tf.constant([-1], tf.int64)], 0)) + 1])
    return (tf.SparseTensor(indices, distinct % vocab_size, tf.cast(shape, tf.int64)),
            tf.SparseTensor(indices, weight, tf.cast(shape, tf.int64)))


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
