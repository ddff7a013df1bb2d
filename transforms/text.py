"""Text rules over Arrow string arrays: HTML tags, entities, word counts, and the model normalisation.

Silver keeps the words people wrote: tags become spaces, entities are unescaped, whitespace is trimmed.
The model normalisation (``normalize_for_model``) goes further and in the right order: tags, then
entities, then URLs, and only then lower case and punctuation (stripping punctuation first, as the
seeds did, leaves ``br`` and ``http www`` fragments behind).

Only rows that hold ``<`` or ``&`` are touched by the HTML rules; finding them is one numpy pass over
the string bytes.
"""
import html

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TAG_PATTERN = r"<[^<>]*>"
URL_PATTERN = r"(?i)(?:https?://|www\.)\S+"
# Named and numeric character references; the fixed list below handles the common ones vectorised.
ENTITY_PATTERN = r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);"
COMMON_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
                   ("&nbsp;", " "), ("&amp;", "&"))  # &amp; last: one level of unescaping, like html.unescape


def _chunks(col):
    return col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def _rebuild(col, chunks):
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array(chunks, type=col.type)
    return chunks[0]


def _string_buffers(arr):
    """(relative offsets int64, data uint8) of a string array, zero-copy."""
    if arr.type == pa.large_string():
        arr = arr.cast(pa.string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data_buf = arr.buffers()[2]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None
            else np.zeros(0, dtype=np.uint8))[offsets[0]:offsets[-1]]
    return (offsets - offsets[0]).astype(np.int64), data


def _contains_any(arr, needles):
    """Rows holding any of the single-byte ``needles``: one numpy pass over the string bytes (a per-row
    substring search costs several times more)."""
    if len(arr) == 0:
        return pa.array([], type=pa.bool_())
    offsets, data = _string_buffers(arr)
    hit = np.zeros(len(data), dtype=bool)
    for needle in needles:
        hit |= data == ord(needle)
    rows = np.zeros(len(arr), dtype=bool)
    rows[np.searchsorted(offsets, np.flatnonzero(hit), side="right") - 1] = True
    if arr.null_count:
        rows &= np.asarray(arr.is_valid())
    return pa.array(rows)


_COMMON_ENTITY_PATTERN = "&(?:lt|gt|quot|#39|apos|nbsp|amp);"


def unescape_entities(arr):
    """Unescape HTML character references exactly one level, like ``html.unescape`` ("&amp;lt;" ->
    "&lt;"). Rows holding only the common entities are done vectorised; rows with any other reference
    (&rsquo; &#8217; ...) go through ``html.unescape`` from their original text, which is rare."""
    rare = pc.fill_null(pc.match_substring_regex(pc.replace_substring_regex(arr, _COMMON_ENTITY_PATTERN, ""),
                                                 ENTITY_PATTERN), False)
    original = arr
    for entity, repl in COMMON_ENTITIES:
        arr = pc.replace_substring(arr, entity, repl)
    if not pc.any(rare).as_py():
        return arr
    idx = np.flatnonzero(rare.to_numpy(zero_copy_only=False))
    values = arr.to_pylist()
    source = original.take(pa.array(idx)).to_pylist()
    for i, text in zip(idx, source):
        values[i] = html.unescape(text).replace("\xa0", " ")  # &nbsp; -> a plain space, as above
    return pa.array(values, type=arr.type)


def _clean_html_subset(arr):
    arr = pc.replace_substring_regex(arr, TAG_PATTERN, " ")
    arr = unescape_entities(arr)
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s{2,}", " "))


def clean_html(col):
    """Strip tags (as spaces) and unescape entities; rows without ``<`` or ``&`` are left as they are."""
    out = []
    for chunk in _chunks(col):
        mask = _contains_any(chunk, ("<", "&"))
        if pc.any(mask).as_py():
            chunk = pc.replace_with_mask(chunk, mask, _clean_html_subset(pc.filter(chunk, mask)))
        out.append(chunk)
    return _rebuild(col, out)


def unescape_html(col):
    """Entities only (names and the like, where a ``<`` is text, not a tag)."""
    out = []
    for chunk in _chunks(col):
        mask = _contains_any(chunk, ("&",))
        if pc.any(mask).as_py():
            chunk = pc.replace_with_mask(chunk, mask, unescape_entities(pc.filter(chunk, mask)))
        out.append(chunk)
    return _rebuild(col, out)


def word_count(col):
    """Number of runs of non-whitespace bytes per string (0 for null or empty), computed with numpy on
    the Arrow buffers: pyarrow's split kernels materialise every word and cost several times more."""
    out = []
    for chunk in _chunks(col):
        n = len(chunk)
        if n == 0:
            out.append(pa.array([], type=pa.int32()))
            continue
        rel, data = _string_buffers(chunk)
        word = (data != 32) & ((data - np.uint8(9)) > 4)  # not space, not \t \n \v \f \r (9..13)
        # a word starts where a non-space byte follows a space byte, or at the start of a string
        starts = word.copy()
        starts[1:] &= ~word[:-1]
        lengths = np.diff(rel)
        nonempty = lengths > 0
        heads = rel[:-1][nonempty]
        starts[heads] = word[heads]
        counts = np.zeros(n, dtype=np.int32)
        if heads.size:
            counts[nonempty] = np.add.reduceat(starts, heads, dtype=np.int32)
        if chunk.null_count:  # a null slot may still span bytes (e.g. from if_else)
            counts[np.asarray(chunk.is_null())] = 0
        out.append(pa.array(counts, type=pa.int32()))
    return pa.chunked_array(out, type=pa.int32()) if isinstance(col, pa.ChunkedArray) else out[0]


# negation scope, a model text rule (training.features, and its Arrow twin in training.baselines): each of
# the NEGATION_SCOPE tokens after a negator (that is not itself a negator) also counts as NEGATION_PREFIX +
# token ("not very good" -> "NEG_very", "NEG_good"). Tokens are normalised (lower case) text, so the prefix
# cannot collide with a word.
NEGATORS = ("not", "no", "never", "nor", "nothing", "without", "hardly", "don't", "didn't", "doesn't", "isn't",
            "wasn't", "aren't", "weren't", "can't", "won't", "wouldn't", "couldn't", "shouldn't", "haven't",
            "hasn't", "dont", "didnt", "doesnt", "isnt", "wasnt", "cant", "wont")
NEGATION_SCOPE = 3
NEGATION_PREFIX = "NEG_"


def normalize_for_model(col):
    """Model text: tags -> entities -> URLs -> lower case -> punctuation and digits -> single spaces."""
    col = clean_html(col)
    col = pc.replace_substring_regex(col, URL_PATTERN, " ")
    col = pc.utf8_lower(col)
    col = pc.replace_substring(col, "\u2019", "'")
    col = pc.replace_substring_regex(col, r"[^\p{L}\p{N}\s']+|\p{N}+", " ")
    col = pc.replace_substring_regex(col, r"(?:^|\s)'+|'+(?:\s|$)", " ")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(col, r"\s+", " "))
