"""Review cleaning rules, vectorised: a ParsedBatch -> silver-shaped rows + dead letters.

One function per rule, each from Arrow arrays to Arrow arrays; ``clean_reviews`` applies the value rules
to every parsed row, then the expectations of ``transforms.expectations`` to the clean rows.

Rejection rules: the drop expectations (first failing one gives the reason; stage ``clean``):
    asin null or blank                      -> missing_asin
    reviewerID null or blank                -> missing_reviewer_id
    overall null or absent                  -> missing_overall
    overall outside 1..5 (0 included)       -> overall_out_of_range
    unixReviewTime null or absent           -> missing_review_time
(``overall_not_numeric`` and ``wrong_type`` are decided where the raw value is still at hand, in
``transforms.parse``.) The warn/fail expectations (review time range, empty text, asin shape) keep the
row and are counted: ``clean_reviews(...).expectations``.

Value rules:
    vote            "1,234" -> 1234; absent -> the 2014 schema's helpful[0] if present, else 0;
                    anything that is not digits after removing commas -> null
    unixReviewTime  -> review_time (UTC timestamp), review_date, year, month
    reviewerName, summary, reviewText   the markup rule of ``transforms.text`` (``clean_html``): no markup
                    left, escaped markup included (``&lt;script&gt;`` too), entities unescaped, whitespace
                    trimmed on touched rows
    reviewText null -> summary (review_text_from_summary = true)
    review_length_words   runs of non-whitespace in review_text
    style           map with keys trimmed of spaces and the trailing ':' ("Size:" -> "Size"), values trimmed,
                    entries in key order; keys and values follow the markup rule too
    image           only entries that start with http (drops the corrupt "88" entries); image_count
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.dead_letters import DEFAULT_PAYLOAD_BYTES
from transforms.expectations import EXPECTATIONS, apply_expectations
from transforms.parse import STYLE_TYPE, raw_payloads
from transforms.schemas import CLEAN_REVIEW_SCHEMA
from transforms.text import clean_html, word_count


def _np(mask):
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def parse_vote(vote, helpful=None):
    """"1,234" -> 1234; absent -> helpful[0] (2014 schema) or 0; non-numeric -> null."""
    digits = pc.replace_substring(vote, ",", "")
    is_num = pc.match_substring_regex(digits, r"^\s*[0-9]{1,18}\s*$")
    parsed = pc.if_else(pc.fill_null(is_num, False), digits, None)
    out = pc.cast(pc.utf8_trim_whitespace(parsed), pa.int64())
    absent = pc.is_null(vote)
    fallback = pa.scalar(0, pa.int64())
    if helpful is not None:
        fallback = pc.fill_null(pc.list_element(pc.if_else(pc.greater(pc.list_value_length(helpful), 0),
                                                           helpful, None), 0), 0)
    return pc.if_else(absent, fallback, out)


def clean_style(style):
    """map<string,string>: keys "Size:" -> "Size", values trimmed, entries sorted by key (the parser's
    order depends on which lines share a batch; sorted, a review's row is the same however it was read);
    empty maps stay empty."""
    style = style.combine_chunks() if isinstance(style, pa.ChunkedArray) else style
    keys = pc.utf8_trim(clean_html(style.keys), characters=" :\t\n")  # the markup rule, as for all text
    items = pc.utf8_trim_whitespace(clean_html(style.items))
    raw = style.offsets.to_numpy()
    lengths = np.diff(raw)
    if len(keys) == raw[-1] - raw[0] and lengths.size and lengths.max() > 1:
        rows = np.repeat(np.arange(len(lengths)), lengths)
        order = pc.sort_indices(pa.table({"row": rows, "key": keys}),
                                sort_keys=[("row", "ascending"), ("key", "ascending")])
        keys, items = keys.take(order), items.take(order)
    offsets = style.offsets
    if style.null_count:
        offsets = pa.array(offsets.to_numpy(), mask=np.append(_np(style.is_null()), False))
    return pa.MapArray.from_arrays(offsets, keys, items, type=STYLE_TYPE)


def clean_images(image):
    """list<string> keeping only http(s) URLs -> (image_urls, image_count)."""
    image = image.combine_chunks() if isinstance(image, pa.ChunkedArray) else image
    n = len(image)
    flat = pc.list_flatten(image)
    parents = pc.list_parent_indices(image).to_numpy()
    keep = _np(pc.fill_null(pc.starts_with(flat, "http"), False))
    counts = np.bincount(parents[keep], minlength=n).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    urls = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)),
                                    mask=image.is_null() if image.null_count else None)
    return urls, pa.array(counts, type=pa.int32())


def review_time_columns(unix_seconds):
    ts = pc.cast(unix_seconds, pa.timestamp("s", tz="UTC"))
    return {
        "review_time": pc.cast(ts, pa.timestamp("ms", tz="UTC")),
        "review_date": pc.cast(pc.cast(unix_seconds, pa.timestamp("s")), pa.date32()),
        "year": pc.cast(pc.year(ts), pa.int32()),
        "month": pc.cast(pc.month(ts), pa.int32()),
    }


def clean_columns(t, source):
    """The value rules over parsed rows -> a table in CLEAN_REVIEW_SCHEMA."""
    summary = clean_html(t["summary"])
    text = clean_html(t["reviewText"])
    from_summary = pc.and_(pc.is_null(text), pc.is_valid(summary))
    text = pc.coalesce(text, summary)
    urls, n_images = clean_images(t["image"])
    cols = {
        "reviewer_id": t["reviewerID"],
        "asin": t["asin"],
        "overall": t["overall"],
        "verified": t["verified"],
        "vote": parse_vote(t["vote"], t["helpful"]),
        "unix_review_time": t["unixReviewTime"],
        **review_time_columns(t["unixReviewTime"]),
        "reviewer_name": clean_html(t["reviewerName"]),
        "summary": summary,
        "review_text": text,
        "review_text_from_summary": from_summary,
        "review_length_words": word_count(text),
        "style": clean_style(t["style"]),
        "image_urls": urls,
        "image_count": n_images,
        "variant_asin": t["variant_asin"],
        "schema_version": t["schema_version"],
        "_rescued_data": t["_rescued_data"],
        "source": pa.repeat(pa.scalar(source, pa.string()), t.num_rows),
        "source_position": t["source_position"],
    }
    return pa.Table.from_pydict({f.name: cols[f.name] for f in CLEAN_REVIEW_SCHEMA}, schema=CLEAN_REVIEW_SCHEMA)


class CleanResult(tuple):
    """What ``clean_reviews`` returns: the pair ``(table, dead letters)`` it always returned (it unpacks
    and concatenates as that 2-tuple), with the expectation counts of the batch as ``.expectations``
    (``{name: {"action": a, "failed_rows": n}}``, see ``transforms.expectations``)."""

    def __new__(cls, table, dead, expectations=None):
        self = super().__new__(cls, (table, dead))
        self.expectations = {} if expectations is None else expectations
        return self

    def __reduce__(self):
        return CleanResult, (self[0], self[1], self.expectations)

    @property
    def table(self):
        return self[0]

    @property
    def dead(self):
        return self[1]


def clean_reviews(batch, max_payload_bytes=DEFAULT_PAYLOAD_BYTES, expectations=EXPECTATIONS, now_s=None):
    """ParsedBatch -> CleanResult: (clean table in CLEAN_REVIEW_SCHEMA, dead letters for the rows a drop
    expectation rejects), counts in ``.expectations``. ``expectations``: e.g.
    ``transforms.expectations.configure({...})``; ``now_s``: the "now" of the review time range."""
    t = batch.table
    rows = t["_row"]
    table, dead, counts = apply_expectations(
        clean_columns(t, batch.source), expectations, lambda idx: raw_payloads(batch, rows.take(pa.array(idx))),
        max_payload_bytes=max_payload_bytes, now_s=now_s)
    return CleanResult(table, dead, counts)
