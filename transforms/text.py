"""Text rules over Arrow string arrays: HTML tags, entities, word counts, and the model normalisation.

Silver keeps the words people wrote: tags become spaces, entities are unescaped, whitespace is trimmed.

The markup rule (one rule for every text silver holds: review text, summary, reviewer name, and the
product title, brand, main category and categories through ``clean_markup``, its per-value twin).
Contract: silver text holds no markup, and cleaning is idempotent.

* Markup is what an HTML parser reads as markup: ``<`` followed by an ASCII letter (a tag), ``/`` (an
  end tag), ``!`` (a comment or declaration) or ``?`` (a processing instruction): ``MARKUP_PATTERN``.
  Any other ``<`` is text: ``<3``, ``a < b > c``, ``1<2``.
* Stripping: a complete tag ``<x ...>`` becomes a space; an unclosed one at the end of the text (a cut
  ``<span class="...``) is cut off; any other opener (``<b`` before another ``<``) loses its ``<``.
* Entities: character references ending in ``;`` (``&amp;`` ``&#39;`` ``&#x2019;`` ``&rsquo;``, names of
  2..32 characters, at most 7 decimal or 6 hex digits; ``AT&T`` and ``&bogus;`` stay) are unescaped,
  ``&nbsp;`` as a plain space.
* Unescaping can make markup (``&lt;script&gt;`` is ``<script>``) and more entities (``&amp;lt;``), so
  strip-then-unescape is repeated until the text stops changing: the result is a fixed point, with no
  markup and nothing left to unescape. Escaping nested more than ``MAX_MARKUP_PASSES`` levels deep is
  hostile: what still changes then has the ``<`` of each opener and the ``&`` of each entity that would
  still decode replaced by a space, which is a fixed point too.
* Rows that were touched (they hold ``<`` or ``&``) then have whitespace runs collapsed and are trimmed.

The model normalisation (``normalize_for_model``) goes further and in the right order: tags, then
entities, then URLs, and only then lower case and punctuation (stripping punctuation first, as the
seeds did, leaves ``br`` and ``http www`` fragments behind).

Only rows that hold ``<`` or ``&`` are touched by the HTML rules; finding them is one numpy pass over
the string bytes.
"""
import html
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MARKUP_PATTERN = r"<[A-Za-z/!?]"
TAG_PATTERN = r"<[A-Za-z/!?][^<>]*>"
UNCLOSED_TAG_PATTERN = r"<[A-Za-z/!?][^<>]*$"   # RE2: $ is the end of the text
URL_PATTERN = r"(?i)(?:https?://|www\.)\S+"
# Named and numeric character references (bounded: a 5,000-digit reference would make html.unescape
# raise); the fixed list below handles the common ones vectorised.
ENTITY_PATTERN = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
MAX_MARKUP_PASSES = 8
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
_ENTITY = re.compile(ENTITY_PATTERN)
_TAG, _UNCLOSED_TAG = re.compile(TAG_PATTERN), re.compile(UNCLOSED_TAG_PATTERN.replace("$", r"\Z"))
_OPENER = re.compile(r"<([A-Za-z/!?])")


def _unescape_entity(match):
    return html.unescape(match.group()).replace("\xa0", " ")  # &nbsp; -> a plain space


def unescape_text(text):
    """One level of unescaping of one string ("&amp;lt;" -> "&lt;"), every reference on its own."""
    return _ENTITY.sub(_unescape_entity, text) if "&" in text else text


def strip_markup_text(text):
    """Strip the markup of one string (the rule in the module docstring), one pass."""
    if "<" not in text:
        return text
    return _OPENER.sub(r" \1", _UNCLOSED_TAG.sub(" ", _TAG.sub(" ", text)))


def _neutralise_text(text):
    """Still changing after MAX_MARKUP_PASSES: break every opener and every entity that would decode
    with a space (a space can neither complete nor join an entity or a tag, so this is a fixed point)."""
    text = _OPENER.sub(r" \1", text)
    return _ENTITY.sub(lambda m: m.group() if _unescape_entity(m) == m.group() else " " + m.group()[1:], text)


def clean_markup(text):
    """One string -> its markup-free fixed point (module docstring); no whitespace rule. The per-value
    twin of the vectorised ``clean_html`` (product fields are cleaned one record at a time)."""
    for _ in range(MAX_MARKUP_PASSES):
        out = unescape_text(strip_markup_text(text))
        if out == text:
            return out
        text = out
    return _settle(text)


def _settle(text):
    """After MAX_MARKUP_PASSES: the text if it is a fixed point, else neutralised."""
    return text if unescape_text(strip_markup_text(text)) == text else _neutralise_text(text)


def unescape_entities(arr):
    """Unescape HTML character references one level ("&amp;lt;" -> "&lt;"). Rows holding only the
    common entities are done vectorised; rows with any other reference (&rsquo; &#8217; ...) go through
    ``unescape_text`` from their original text, which is rare."""
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
        values[i] = unescape_text(text)
    return pa.array(values, type=arr.type)


def strip_markup(arr):
    """``strip_markup_text`` over an Arrow string array, one pass."""
    arr = pc.replace_substring_regex(arr, TAG_PATTERN, " ")
    arr = pc.replace_substring_regex(arr, UNCLOSED_TAG_PATTERN, " ")
    return pc.replace_substring_regex(arr, r"<([A-Za-z/!?])", " \\1")


def _markup_fixed_point(arr):
    """Strip, unescape, again while anything changed; only the rows that changed go round again."""
    todo = pa.array(np.arange(len(arr)))
    for _ in range(MAX_MARKUP_PASSES):
        part = arr.take(todo)
        out = unescape_entities(strip_markup(part))
        changed = pc.fill_null(pc.not_equal(out, part), False)
        if not pc.any(changed).as_py():
            return arr
        keep = np.zeros(len(arr), dtype=bool)
        keep[todo.to_numpy()] = True
        arr = pc.replace_with_mask(arr, pa.array(keep), out)
        todo = pc.filter(todo, changed)
    values = arr.to_pylist()  # hostile: escaping nested deeper than MAX_MARKUP_PASSES
    for i in todo.to_pylist():
        values[i] = _settle(values[i])
    return pa.array(values, type=arr.type)


def _clean_html_subset(arr):
    # most rows holding "<" or "&" hold no markup or reference ("AT&T", "1 < 2"): they are fixed points
    # already, and only the whitespace rule applies to them
    live = pc.fill_null(pc.match_substring_regex(arr, f"{MARKUP_PATTERN}|{ENTITY_PATTERN}"), False)
    if pc.any(live).as_py():
        arr = pc.replace_with_mask(arr, live, _markup_fixed_point(pc.filter(arr, live)))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(arr, r"\s{2,}", " "))


def clean_html(col):
    """The markup rule (module docstring): no markup left, entities unescaped to a fixed point, then
    whitespace collapsed and trimmed; rows without ``<`` or ``&`` are left as they are."""
    out = []
    for chunk in _chunks(col):
        mask = _contains_any(chunk, ("<", "&"))
        if pc.any(mask).as_py():
            chunk = pc.replace_with_mask(chunk, mask, _clean_html_subset(pc.filter(chunk, mask)))
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

# Spark ML StopWordsRemover's default English list (StopWordsRemover.loadDefaultStopWords("english")), the
# list the seeds removed before their word cloud and their baseline classifier (training.baselines).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is
are was were be been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very s t can will just don should now
d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn
weren won wouldn
""".split())
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
