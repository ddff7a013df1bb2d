"""JSON lines -> Arrow record batches, with every bad line split off as a dead letter.

``pyarrow.json`` is fast but strict: one malformed line, one invalid UTF-8 byte or one field whose JSON
type changes (``"overall": "5.0"`` among numbers) fails the whole block. So parsing goes in three steps:

1. A vectorised suspicion test over the chunk's bytes (numpy): lines that do not start with ``{`` or
   end with ``}``, lines over the size limit, lines holding a string ``overall`` (the one type quirk
   seen in real feeds), and lines whose shape could exceed the bounds below are *suspects*. Only
   suspects are judged one by one with orjson.
2. Arrow parses the rest. If it still fails (a defect the cheap test cannot see: a wrong type, a
   truncated line that happens to end in ``}``), its error names the row: that line is judged alone and
   the lines before and after it go back on the work stack as two pieces. A failure that names no row
   (or two objects on one line, a NaN rating, a style no rule reads) splits the piece in halves down to
   single lines. A bad line costs itself, never its neighbours. Invalid UTF-8, which Arrow's reader
   lets through, is found first by validating the chunk as Arrow strings (bisecting only if it fails).
3. Judged lines are either dead (a reason from ``transforms.reasons``), blank (not a record), or
   coerced to the canonical types (``coerce_review``) and appended as rows.

Schemas. Each record follows the 2014, 2018 or 2023 review schema, decided per record by the fields it
holds (``transforms.schema_versions``; the rule is there, once, with its vectorised twin). Arrow reads
the 2014/2018 fields with fixed types and infers the 2023 ones (declared, they would cost every older
line); inferred types the mapping does not take send their rows to be judged alone, and a rating given
as a string makes the chunk be scanned for them once (as ``overall`` strings always are). Every row is
then mapped onto the canonical (2014/2018-named) columns of ``RAW_REVIEW_SCHEMA``, so the cleaner has one
set of columns whatever the source:

    2023 field              canonical column
    rating                  overall
    title                   summary
    text                    reviewText
    user_id                 reviewerID
    parent_asin             asin             (the product key; metadata is keyed by parent_asin too)
    asin                    variant_asin     (null for 2014/2018 records)
    timestamp (ms)          unixReviewTime   (seconds: floor division by 1000)
    helpful_vote            vote
    verified_purchase       verified
    images                  image            (each entry's large_image_url, else medium, else small)
    -                       reviewerName, helpful, style: null

A record's fields of the *other* schema are not read: they are rescued, with any field no schema knows,
into ``_rescued_data`` (JSON text of the record's own values, re-read from its line only for the rows
that have such fields, so the common case costs one validity test per column). ``schema_version`` says
which schema the row followed.

Shape bounds. Arrow must never see a record it cannot take: a value nested a few hundred levels deep
made the job raise a RecursionError, a few thousand levels crashed the interpreter inside pyarrow, and
objects with thousands of distinct keys make Arrow's type inference slow (a struct field per key). So a
record nested deeper than ``MAX_NESTING_DEPTH`` is dead (``too_deep``), and one whose objects hold more
than ``MAX_RECORD_FIELDS`` keys in all is dead (``too_many_fields``). The cheap test: a line with more
``{``/``[`` bytes than the depth bound, or more ``:`` bytes than the key bound, is a suspect (every
level opens a bracket and every key is followed by a colon, so a line under both counts is within both
bounds whatever its strings hold); suspects are measured exactly on their parsed object. Arrays are
bounded by ``--max_record_bytes`` only (a 100,000-entry array parses in a quarter of a second).

Review time. One rule for every schema (2014/2018 ``unixReviewTime`` in seconds, 2023 ``timestamp`` in
milliseconds, floored to seconds): a time that is not an integer (or integral number) is ``wrong_type``;
an integer outside ``MIN_REVIEW_TIME_S`` .. ``MAX_REVIEW_TIME_S`` (1900-01-01 .. 2199-12-31 23:59:59
UTC) is ``review_time_out_of_range``. That hard bound is what every consumer of silver and gold can
represent with room to spare (nanosecond timestamps end in 2262, Python dates in 9999, a window end
must still be a date); 1e12 seconds (year 33658) or 2**62 are not review times. Times inside the bound
but implausible (before Amazon's first reviews, or in the future) are kept and counted by the
``review_time_range`` warn expectation (``transforms.expectations``), whose range lies inside this one.

The result is a ``ParsedBatch``: a table in ``PARSED_REVIEW_SCHEMA`` plus the chunk's raw lines as a
zero-copy Arrow binary array, so later stages can quote the raw payload of a row they reject.
"""
import re
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from transforms import reasons
from transforms import schema_versions as sv
from transforms.dead_letters import DEFAULT_PAYLOAD_BYTES, dead_letter
from transforms.schemas import RAW_REVIEW_2023_SCHEMA, RAW_REVIEW_SCHEMA, SCHEMA_FIELDS

DEFAULT_MAX_RECORD_BYTES = 1 << 20
STYLE_TYPE = pa.map_(pa.string(), pa.string())
PARSED_REVIEW_SCHEMA = pa.schema([
    *RAW_REVIEW_SCHEMA,
    ("style", STYLE_TYPE),
    ("variant_asin", pa.string()),
    *SCHEMA_FIELDS,
    ("source_position", pa.int64()),
    ("_row", pa.int32()),  # index of the row's line in ParsedBatch.lines
])
# The 2023 fields are inferred, not declared: each declared field costs every line of every block (about
# 3 % of the read for the nine 2023 fields on 2018 data), so _conform checks their inferred types instead.
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=RAW_REVIEW_SCHEMA, unexpected_field_behavior="infer")
_ROW_IN_ERROR = re.compile(r"in row (\d+)")
_OPEN, _CLOSE, _NEWLINE, _CR = 0x7B, 0x7D, 0x0A, 0x0D
# "overall" given as a JSON string; the only per-field check paid on every line
_SUSPECT_NEEDLES = (b'"overall": "', b'"overall":"')
# the 2023 "rating" as a string: looked for only once Arrow has met one in the chunk (a scan costs about
# 0.35 us per line, paid on every line; a chunk without 2023 records would pay it for nothing)
_RATING_NEEDLES = (b'"rating": "', b'"rating":"')
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# the hard bound of a review time (module docstring): 1900-01-01 00:00:00 .. 2199-12-31 23:59:59 UTC
MIN_REVIEW_TIME_S, MAX_REVIEW_TIME_S = -2208988800, 7258118399
# shape bounds (module docstring): nesting levels (the record itself is level 1) and object keys in all
MAX_NESTING_DEPTH = 32
MAX_RECORD_FIELDS = 1000


class Chunk(NamedTuple):
    """Whole lines of one source: ``data`` starts at line ``first_line`` (1-based) of ``source``.
    Streaming chunks are events (one per line, ``first_line`` = first sequence number) and carry the
    reader's ``meta`` (``transforms.events.EventMeta``) through parsing and cleaning."""
    data: bytes
    source: str
    first_line: int
    meta: object = None


class ParsedBatch(NamedTuple):
    table: pa.Table     # PARSED_REVIEW_SCHEMA
    lines: pa.Array     # binary, one entry per line of the chunk (trailing newline included)
    source: str
    meta: object = None


class Verdict(NamedTuple):
    """A judged line: ``record`` (coerced dict) or ``reason`` (dead), neither for a blank line."""
    record: dict | None = None
    stage: str | None = None
    reason: str | None = None
    detail: str | None = None


BLANK = Verdict()


# ---------------------------------------------------------------------------------------------------
# one line at a time (suspects, and the rare line Arrow rejects)

def classify_line(line, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
    """bytes -> (obj, None) for a JSON object, or (None, Verdict) for a blank or dead line."""
    if len(line) > max_record_bytes:
        return None, Verdict(stage=reasons.PARSE, reason=reasons.TOO_LARGE,
                             detail=f"{len(line)} bytes > {max_record_bytes}")
    stripped = line.strip()
    if not stripped:
        return None, BLANK
    try:
        obj = orjson.loads(stripped)
    except orjson.JSONDecodeError as err:
        try:
            stripped.decode("utf-8")
        except UnicodeDecodeError as uerr:
            return None, Verdict(stage=reasons.PARSE, reason=reasons.INVALID_UTF8, detail=str(uerr))
        if "depth limit" in str(err):  # orjson stops at 1024 levels: far past our bound, same verdict
            return None, Verdict(stage=reasons.PARSE, reason=reasons.TOO_DEEP, detail=str(err))
        reason = reasons.HTML_PAYLOAD if stripped[:1] == b"<" else reasons.MALFORMED_JSON
        return None, Verdict(stage=reasons.PARSE, reason=reason, detail=str(err))
    if not isinstance(obj, dict):
        return None, Verdict(stage=reasons.PARSE, reason=reasons.NOT_AN_OBJECT,
                             detail=f"JSON {type(obj).__name__}")
    return obj, shape_verdict(obj)


def shape_verdict(obj, max_depth=MAX_NESTING_DEPTH, max_fields=MAX_RECORD_FIELDS):
    """None when ``obj`` is within the shape bounds, else its dead Verdict (``too_deep`` or
    ``too_many_fields``). Iterative, so a deep value cannot exhaust the stack measuring it."""
    todo, fields = [(obj, 1)], 0
    while todo:
        value, depth = todo.pop()
        if depth > max_depth:
            return Verdict(stage=reasons.PARSE, reason=reasons.TOO_DEEP, detail=f"nested deeper than {max_depth}")
        if isinstance(value, dict):
            fields += len(value)
            if fields > max_fields:
                return Verdict(stage=reasons.PARSE, reason=reasons.TOO_MANY_FIELDS,
                               detail=f"more than {max_fields} object keys")
            todo += [(v, depth + 1) for v in value.values() if isinstance(v, (dict, list))]
        else:
            todo += [(v, depth + 1) for v in value if isinstance(v, (dict, list))]
    return None


class _WrongType(Exception):
    reason = reasons.WRONG_TYPE

    def __init__(self, field, value):
        super().__init__(f"{field}: {type(value).__name__}")


class _OutOfRange(_WrongType):
    """A review time that is a number, but outside the hard bound (module docstring)."""
    reason = reasons.REVIEW_TIME_OUT_OF_RANGE

    def __init__(self, field, value):
        Exception.__init__(self, f"{field}: {str(value)[:40]} outside {MIN_REVIEW_TIME_S}..{MAX_REVIEW_TIME_S} s")


def _as_str(field, v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise _WrongType(field, v)


def _as_bool(field, v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise _WrongType(field, v)


def _as_int(field, v):
    """-> an int64 value or None (integral floats and digit strings too); an integer beyond int64 is out
    of range (it is a number, only not a time); anything else is wrong_type."""
    if v is None:
        return None
    out = None
    if isinstance(v, int) and not isinstance(v, bool):
        out = v
    elif isinstance(v, float) and v.is_integer():
        out = int(v)
    elif isinstance(v, str):
        try:
            out = int(v.strip(), 10)
        except ValueError:
            pass
    if out is None:
        raise _WrongType(field, v)
    if not _INT64_MIN <= out <= _INT64_MAX:
        raise _OutOfRange(field, v)
    return out


def _seconds(field, v):
    """A review time in seconds within the hard bound, or review_time_out_of_range."""
    if v is not None and not MIN_REVIEW_TIME_S <= v <= MAX_REVIEW_TIME_S:
        raise _OutOfRange(field, v)
    return v


def _as_review_time(field, v):
    return _seconds(field, _as_int(field, v))


def _as_review_time_ms(field, v):
    """2023 ``timestamp`` (milliseconds) -> seconds, floor division."""
    ms = _as_int(field, v)
    return None if ms is None else _seconds(field, ms // 1000)


def _as_vote_count(field, v):
    """2023 ``helpful_vote`` -> the vote text the 2018 rule parses (integral floats as integers)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 63:
        v = int(v)
    return _as_str(field, v)


def _as_image_urls(field, v):
    """2023 ``images`` (objects with large/medium/small_image_url) -> one URL per entry: the first of
    large, medium, small that is not null; a plain string entry is its own URL; other entries skipped."""
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise _WrongType(field, v)
    out = []
    for entry in v:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            url = next((entry[k] for k in _IMAGE_SIZES if entry.get(k) is not None), None)
            if isinstance(url, str):
                out.append(url)
    return out


_IMAGE_SIZES = ("large_image_url", "medium_image_url", "small_image_url")


def _as_str_list(field, v):
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    raise _WrongType(field, v)


def _as_style(field, v):
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            raise _WrongType(field, v) from None
    if not isinstance(v, dict):
        raise _WrongType(field, v)
    return {str(k): (x if isinstance(x, str) else orjson.dumps(x).decode()) for k, x in v.items()
            if x is not None}


def _as_helpful(field, v):
    """[helpful, total] as integers; real 2014 files also write them as integral floats ([1.0, 2.0])."""
    if isinstance(v, list) and len(v) == 2 and all(
            (isinstance(x, int) and not isinstance(x, bool) and _INT64_MIN <= x <= _INT64_MAX)
            or (isinstance(x, float) and x.is_integer() and abs(x) < 2 ** 53) for x in v):
        return [int(x) for x in v]
    return None  # 2014 schema only; anything else carries no information


# canonical column -> (field read, coercion), per schema; every column not listed is null
_COERCE = {
    "verified": ("verified", _as_bool), "reviewerID": ("reviewerID", _as_str), "asin": ("asin", _as_str),
    "reviewerName": ("reviewerName", _as_str), "reviewText": ("reviewText", _as_str),
    "summary": ("summary", _as_str), "unixReviewTime": ("unixReviewTime", _as_review_time),
    "vote": ("vote", _as_str), "image": ("image", _as_str_list), "helpful": ("helpful", _as_helpful),
    "style": ("style", _as_style),
}
_COERCE_2023 = {
    "verified": ("verified_purchase", _as_bool), "reviewerID": ("user_id", _as_str),
    "asin": ("parent_asin", _as_str), "variant_asin": ("asin", _as_str), "reviewText": ("text", _as_str),
    "summary": ("title", _as_str), "unixReviewTime": ("timestamp", _as_review_time_ms),
    "vote": ("helpful_vote", _as_vote_count), "image": ("images", _as_image_urls),
}
_RATING = {sv.V2014: "overall", sv.V2018: "overall", sv.V2023: "rating"}
_RECORD_FIELDS = tuple(f.name for f in PARSED_REVIEW_SCHEMA if f.name not in ("source_position", "_row"))
_LONG_NUMBER = re.compile(rb"[0-9]{20}")


def _rating(field, v):
    """-> (rating as float or None, None) or (None, dead Verdict)."""
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None, Verdict(stage=reasons.CLEAN, reason=reasons.OVERALL_NOT_NUMERIC, detail=repr(v[:50]))
        if v != v or v in (float("inf"), float("-inf")):
            return None, Verdict(stage=reasons.CLEAN, reason=reasons.OVERALL_NOT_NUMERIC, detail="not finite")
    elif isinstance(v, bool) or not (v is None or isinstance(v, (int, float))):
        return None, Verdict(stage=reasons.PARSE, reason=reasons.WRONG_TYPE, detail=f"{field}: {type(v).__name__}")
    try:
        return (None if v is None else float(v)), None
    except OverflowError:  # an integer beyond the float range
        return None, Verdict(stage=reasons.PARSE, reason=reasons.WRONG_TYPE, detail=f"{field}: int out of range")


def loads_exact(line):
    """A JSON line -> its object with every value as written: orjson, or the standard library when the
    line holds a run of 20+ digits (orjson reads integers beyond 64 bits as floats). Raises ValueError."""
    if _LONG_NUMBER.search(line) is None:
        return orjson.loads(line)
    return sv.loads_exact(line)


def coerce_review(obj, line=None):
    """One review object -> Verdict with the canonical record (the types of PARSED_REVIEW_SCHEMA), or a
    dead verdict: ``wrong_type`` for a field no rule can coerce, ``overall_not_numeric`` for a rating
    string that is not a number (null and out-of-range ratings are the cleaner's business). Only the
    fields of the record's own schema are coerced; the rest are rescued, with their values re-read from
    ``line`` (the raw JSON, when given) so that large integers stay exact."""
    version = sv.review_version(sv.present_fields(obj))
    coerce = _COERCE_2023 if version == sv.V2023 else _COERCE
    record = dict.fromkeys(_RECORD_FIELDS)
    try:
        for column, (field, fn) in coerce.items():
            record[column] = fn(field, obj.get(field))
    except _WrongType as err:  # or _OutOfRange, its own reason
        return Verdict(stage=reasons.PARSE, reason=err.reason, detail=str(err))
    record["overall"], dead = _rating(_RATING[version], obj.get(_RATING[version]))
    if dead is not None:
        return dead
    record["schema_version"] = version
    rescued = sv.rescued_fields(obj, sv.REVIEW_KNOWN[version])
    if rescued and line is not None:
        try:
            rescued = sv.rescued_fields(loads_exact(line), sv.REVIEW_KNOWN[version])
        except ValueError:
            pass
    record["_rescued_data"] = sv.dumps(rescued)
    return Verdict(record=record)


def review_time_of(line):
    """The review time (seconds) a line would get after parsing, or None; the streaming reader holds its
    watermark on it before the line is parsed."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    field, fn = (_COERCE_2023 if sv.review_version(sv.present_fields(obj)) == sv.V2023 else _COERCE)["unixReviewTime"]
    try:
        return fn(field, obj.get(field))
    except _WrongType:
        return None


def judge_review_line(line, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
    obj, verdict = classify_line(line, max_record_bytes)
    return verdict if verdict is not None else coerce_review(obj, line.strip())


# ---------------------------------------------------------------------------------------------------
# Arrow side

def struct_to_map(col):
    """A struct column with free-form field names (``style``) -> map<string, string> of its non-null fields."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    if pa.types.is_map(col.type):
        return col.cast(STYLE_TYPE)
    if pa.types.is_null(col.type):
        return pa.nulls(n, type=STYLE_TYPE)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pa.array([None if s is None else _as_style("style", s) for s in col.to_pylist()], type=STYLE_TYPE)
    if not pa.types.is_struct(col.type):
        raise _WrongType("style", col.type)
    children = col.flatten()  # children with the parent's nulls applied
    if not children:
        return pa.array([None if v is None else {} for v in col.to_pylist()], type=STYLE_TYPE)
    try:
        values = pa.concat_arrays([c.cast(pa.string()) for c in children])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # nested values: rare, per row
        return pa.array([None if v is None else _as_style("style", v) for v in col.to_pylist()], type=STYLE_TYPE)
    valid = np.stack([np.asarray(c.is_valid()) for c in children], axis=1)  # (rows, fields)
    rows, fields = np.nonzero(valid)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    names = pa.array([col.type.field(i).name for i in range(col.type.num_fields)], type=pa.string())
    keys = names.take(pa.array(fields, type=pa.int32()))
    vals = values.take(pa.array(fields.astype(np.int64) * n + rows, type=pa.int64()))
    mask = None if col.null_count == 0 else np.asarray(col.is_null())
    return pa.MapArray.from_arrays(pa.array(offsets, mask=None if mask is None else np.append(mask, False)),
                                   keys, vals)


def _valid(col, n):
    """Non-null mask of a column as numpy bool."""
    if col.null_count == 0:
        return np.ones(n, dtype=bool)
    return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _floor_seconds(ms):
    """int64 milliseconds -> int64 seconds, floor division (numpy; Arrow's divide truncates toward zero)."""
    ms = ms.combine_chunks() if isinstance(ms, pa.ChunkedArray) else ms
    secs = np.floor_divide(ms.fill_null(0).to_numpy(zero_copy_only=False), 1000)
    return pa.array(secs, pa.int64(), mask=None if ms.null_count == 0 else ~_valid(ms, len(ms)))


def image_urls_2023(images):
    """list<struct<small/medium/large_image_url, ...>> -> list<string>: per entry the large URL, else the
    medium, else the small one (null when an entry has none; the cleaner keeps only http URLs)."""
    images = images.combine_chunks() if isinstance(images, pa.ChunkedArray) else images
    offsets = images.offsets.to_numpy()
    entries = images.values.slice(offsets[0], offsets[-1] - offsets[0])
    m = len(entries)
    sizes = {} if pa.types.is_null(entries.type) else {
        entries.type.field(i).name: child for i, child in enumerate(entries.flatten())}
    urls = pc.coalesce(*[sizes[k].cast(pa.string()) if k in sizes else pa.nulls(m, pa.string())
                         for k in _IMAGE_SIZES])
    mask = None if images.null_count == 0 else pa.array(~_valid(images, len(images)))
    return pa.ListArray.from_arrays(pa.array(offsets - offsets[0], pa.int32()), urls, mask=mask)


def _off_type(table, n):
    """Rows to judge one by one because a 2023 field was inferred with a type the mapping does not take
    (e.g. ``"timestamp": 1.5e12`` or ``"title": 5`` for the whole block): the non-null rows of each such
    column. Empty when every 2023 column is absent, all null, or of its expected type."""
    bad, names = [], set(table.column_names)
    for f in RAW_REVIEW_2023_SCHEMA:
        if f.name not in names:
            continue
        col = table[f.name]
        t = col.type
        if pa.types.is_null(t) or col.null_count == n or t == f.type or _castable_2023(f, t):
            continue
        bad.append(np.flatnonzero(_valid(col, n)))
    return np.unique(np.concatenate(bad)) if bad else ()


def _castable_2023(field, t):
    if field.name == "rating":
        return pa.types.is_integer(t)
    if field.name == "images":
        if not pa.types.is_list(t):
            return False
        entry = t.value_type
        if pa.types.is_null(entry):
            return True
        return pa.types.is_struct(entry) and all(
            pa.types.is_string(entry.field(i).type) or pa.types.is_null(entry.field(i).type)
            for i in range(entry.num_fields) if entry.field(i).name in _IMAGE_SIZES)
    return False


def _column_2023(table, name, n):
    """A 2023 column with its canonical type (checked by ``_off_type``); all null when absent."""
    f = RAW_REVIEW_2023_SCHEMA.field(name)
    if table.schema.get_field_index(name) < 0 or pa.types.is_null(table[name].type):
        return pa.nulls(n, f.type)
    col = table[name]
    return col if col.type == f.type or name == "images" else pc.cast(col, f.type)


def _columns_2023(table, n):
    """The canonical columns of every row read as a 2023 record (``_COERCE_2023``, vectorised)."""
    col = {name: _column_2023(table, name, n) for name in RAW_REVIEW_2023_SCHEMA.names}
    return {
        "overall": col["rating"], "verified": col["verified_purchase"], "reviewerID": col["user_id"],
        "asin": col["parent_asin"], "variant_asin": table["asin"], "reviewerName": pa.nulls(n, pa.string()),
        "reviewText": col["text"], "summary": col["title"], "unixReviewTime": _floor_seconds(col["timestamp"]),
        "vote": pc.cast(col["helpful_vote"], pa.string()), "image": image_urls_2023(col["images"]),
        "helpful": pa.nulls(n, RAW_REVIEW_SCHEMA.field("helpful").type), "style": pa.nulls(n, STYLE_TYPE),
    }


def _conform(table, positions, rows, raw_line):
    """An Arrow-parsed table -> PARSED_REVIEW_SCHEMA (each row's schema version, its fields mapped onto the
    canonical columns, style as a map, rescued fields, lineage). ``raw_line(i)`` is row i's JSON line,
    read again only for rows that have fields to rescue. Returns instead the rows to judge one by one
    when some cannot be mapped here: a 2023 field of another type, a review time out of range, a line
    that does not read back (a NaN deep in an unknown field)."""
    n = table.num_rows
    off = _off_type(table, n)
    if len(off):
        return off
    valid, unknown = {}, None
    for name in table.column_names:
        column = table[name]
        if column.null_count == n:
            continue
        mask = _valid(column, n)
        if name in sv.REVIEW_ALL_KNOWN:
            valid[name] = mask
        else:
            unknown = mask if unknown is None else unknown | mask
    codes, n_legacy, n_2023 = sv.review_version_codes(valid, n)
    is_2023 = codes == 2

    cols = {f.name: table[f.name] for f in RAW_REVIEW_SCHEMA}
    cols["style"] = struct_to_map(table["style"]) if "style" in table.column_names else pa.nulls(n, STYLE_TYPE)
    cols["variant_asin"] = pa.nulls(n, pa.string())
    k = int(np.count_nonzero(is_2023))
    if k:
        mapped = _columns_2023(table, n)
        which = None if k == n else pa.array(is_2023)
        for name, values in mapped.items():
            cols[name] = values if which is None else pc.if_else(which, values, cols[name])

    times = cols["unixReviewTime"]
    lo, hi = pc.min_max(times).values()
    if lo.is_valid and (lo.as_py() < MIN_REVIEW_TIME_S or hi.as_py() > MAX_REVIEW_TIME_S):
        out = pc.fill_null(pc.or_(pc.less(times, MIN_REVIEW_TIME_S), pc.greater(times, MAX_REVIEW_TIME_S)), False)
        hit = np.flatnonzero(np.asarray(out))
        if hit.size:  # judged alone: review_time_out_of_range
            return hit

    # fields of the other schema, or of none: rescued from the row's own line
    rescue = np.where(is_2023, n_legacy > 0, n_2023 > 0)
    if unknown is not None:
        rescue |= unknown
    rescued = pa.nulls(n, pa.string())
    todo = np.flatnonzero(rescue)
    if todo.size:
        texts = [None] * n
        for i in todo.tolist():
            try:
                obj = loads_exact(raw_line(i))
            except ValueError:
                return [i]
            texts[i] = sv.rescue_review(obj, sv.REVIEW_VERSIONS[codes[i]])
        rescued = pa.array(texts, pa.string())
    cols["schema_version"] = sv.version_array(codes)
    cols["_rescued_data"] = rescued
    cols["source_position"] = pa.array(positions, pa.int64())
    cols["_row"] = pa.array(rows, pa.int32())
    return pa.Table.from_arrays([cols[f.name] for f in PARSED_REVIEW_SCHEMA], schema=PARSED_REVIEW_SCHEMA)


def _records_table(records, positions, rows):
    """Coerced records (dicts) -> PARSED_REVIEW_SCHEMA."""
    cols = [pa.array([r[f.name] for r in records], type=f.type) for f in PARSED_REVIEW_SCHEMA
            if f.name not in ("source_position", "_row")]
    return pa.Table.from_arrays(cols + [pa.array(positions, pa.int64()), pa.array(rows, pa.int32())],
                                schema=PARSED_REVIEW_SCHEMA)


class _Retry(NamedTuple):
    """Why Arrow could not take a piece whole: ``rows`` (indices within the piece) to judge one by one,
    the rest to parse again; no rows: split the piece. ``rating_text``: Arrow met a 2023 rating given
    as a string (the chunk is then scanned for them once, as for ``overall``)."""
    rows: tuple = ()
    rating_text: bool = False


def _try_arrow(lines, piece, first_line):
    """Parse the lines ``piece`` with Arrow -> a conformed table, or a ``_Retry``."""
    try:
        t = _read_json(lines.join(piece))
    except pa.ArrowInvalid as err:
        m = _ROW_IN_ERROR.search(str(err))
        rows = (int(m.group(1)),) if m and int(m.group(1)) < len(piece) else ()
        return _Retry(rows, "Column(/rating)" in str(err))
    if t.num_rows != len(piece):  # e.g. two objects on one line: rows no longer map to lines
        return _Retry()
    if "rating" in t.column_names and pa.types.is_string(t["rating"].type):
        return _Retry(tuple(np.flatnonzero(_valid(t["rating"], t.num_rows)).tolist()), True)
    for name in ("overall", "rating"):
        if name in t.column_names and pa.types.is_floating(t[name].type) and t[name].null_count < t.num_rows:
            odd = pc.fill_null(pc.or_(pc.is_nan(t[name]), pc.is_inf(t[name])), False)
            hit = np.flatnonzero(np.asarray(odd))
            if hit.size:  # NaN / Infinity are not JSON; Arrow accepts them, orjson does not
                return _Retry((int(hit[0]),))
    try:
        out = _conform(t, first_line + piece, piece, lambda i: lines.line(piece[i]))
    except (_WrongType, pa.ArrowException):
        return _Retry()  # e.g. a style that is a plain string in a block without any style object, or
        #                  any other Arrow failure on odd data: those lines are judged one by one
    return out if isinstance(out, pa.Table) else _Retry(tuple(int(i) for i in out))


def _read_json(buf):
    opts = pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(buf) + 1))
    table = pj.read_json(pa.BufferReader(buf), read_options=opts, parse_options=_PARSE_OPTIONS)
    if not any(_has_null_list(f.type) for f in table.schema):
        return table
    return pa.table({name: pa.chunked_array([_repair_null_lists(c) for c in table[name].chunks], table[name].type)
                     for name in table.column_names})


def _has_null_list(t):
    if pa.types.is_list(t):
        return pa.types.is_null(t.value_type) or _has_null_list(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_null_list(t.field(i).type) for i in range(t.num_fields))
    return False


def _repair_null_lists(arr):
    """Arrow's JSON reader (pyarrow 25.0.1) builds a ``list<null>`` column (``"style": [null, null]``) whose
    null child is shorter than its offsets say, so that any later read of it raises ArrowIndexError.
    Rebuild such lists, at any depth, with a child of the right length; other arrays pass through."""
    t = arr.type
    if pa.types.is_list(t) and _has_null_list(t):
        offsets = arr.offsets
        end = offsets[-1].as_py() if len(offsets) else 0
        values = pa.nulls(end) if pa.types.is_null(t.value_type) else _repair_null_lists(arr.values)
        return pa.ListArray.from_arrays(offsets, values, mask=arr.is_null() if arr.null_count else None)
    if pa.types.is_struct(t) and _has_null_list(t):
        children = [_repair_null_lists(arr.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=arr.is_null() if arr.null_count else None)
    return arr


class _Lines:
    """Line boundaries of one chunk (numpy), and the chunk as a zero-copy Arrow array of lines."""

    def __init__(self, data):
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        self.buf = buf
        nl = np.flatnonzero(buf == _NEWLINE)
        self.starts = np.empty(len(nl), dtype=np.int64)
        self.starts[:1] = 0
        self.starts[1:] = nl[:-1] + 1
        self.ends = nl.copy()  # exclusive, newline not included
        if data.find(b"\r") >= 0:
            cr = (self.ends > self.starts) & (buf[np.maximum(self.ends - 1, 0)] == _CR)
            self.ends[cr] -= 1
        self.n = len(nl)

    def arrow(self):
        offsets = np.append(self.starts, len(self.data)).astype(np.int32)
        return pa.Array.from_buffers(pa.binary(), self.n, [None, pa.py_buffer(offsets), pa.py_buffer(self.data)])

    def line(self, i):
        return self.data[self.starts[i]:self.ends[i]]

    def invalid_utf8(self):
        """Indices of lines that are not valid UTF-8 (Arrow's JSON reader lets raw bytes through)."""
        lines = self.arrow()
        try:
            lines.cast(pa.string())  # validates, SIMD-fast
            return []
        except pa.ArrowInvalid:
            pass
        bad, todo = [], [(0, self.n)]
        while todo:  # bisect down to the bad lines
            lo, hi = todo.pop()
            try:
                lines.slice(lo, hi - lo).cast(pa.string())
            except pa.ArrowInvalid:
                if hi - lo == 1:
                    bad.append(lo)
                else:
                    mid = (lo + hi) // 2
                    todo += [(lo, mid), (mid, hi)]
        return bad

    def needle_lines(self, needles):
        """Bool mask of the lines that contain any of ``needles``."""
        mask = np.zeros(self.n, dtype=bool)
        for needle in needles:
            hits, i = [], self.data.find(needle)
            while i >= 0:
                hits.append(i)
                i = self.data.find(needle, i + 1)
            if hits:
                mask[np.searchsorted(self.ends, np.asarray(hits))] = True
        return mask

    def suspects(self, max_record_bytes):
        lengths = self.ends - self.starts
        nonblank = lengths > 0
        buf = self.buf
        first = buf[self.starts]
        last = buf[np.maximum(self.ends - 1, 0)]
        suspect = nonblank & ((first != _OPEN) | (last != _CLOSE) | (lengths > max_record_bytes))
        suspect[self.invalid_utf8()] = True
        suspect |= self.needle_lines(_SUSPECT_NEEDLES)
        suspect |= self.byte_counts((buf | 0x20) == _OPEN) > MAX_NESTING_DEPTH  # '{' or '[' (0x5B | 0x20)
        suspect[self.lines_with_more(b":", MAX_RECORD_FIELDS, lengths)] = True
        return nonblank, suspect

    def lines_with_more(self, byte, limit, lengths):
        """Indices of the lines holding more than ``limit`` of ``byte``: only lines longer than ``limit``
        can, and few review lines are, so those few are counted one by one (cheaper than locating every
        occurrence of a byte as common as ':' in the whole chunk)."""
        data, starts, ends = self.data, self.starts, self.ends
        return [i for i in np.flatnonzero(lengths > limit).tolist() if data.count(byte, starts[i], ends[i]) > limit]

    def byte_counts(self, mask):
        """Per line, how many bytes ``mask`` (over the chunk's bytes) marks: a handful per review line,
        so counting their positions costs far less than a cumulative sum over the whole chunk."""
        line = np.searchsorted(self.ends, np.flatnonzero(mask))
        return np.bincount(line, minlength=self.n + 1)[:self.n]

    def join(self, idx):
        """The lines ``idx`` (sorted) as one newline-separated buffer, zero-copy when contiguous."""
        if len(idx) == 0:
            return b""
        if idx[-1] - idx[0] + 1 == len(idx):  # contiguous run
            return memoryview(self.data)[self.starts[idx[0]]:self.ends[idx[-1]] + 1]
        view = memoryview(self.data)
        return b"".join(view[self.starts[i]:self.ends[i] + 1] for i in idx) if len(idx) < 64 else \
            _gather(self.data, self.starts[idx], self.ends[idx] + 1)


def _gather(data, starts, ends):
    """Concatenate byte ranges with numpy (faster than a Python join for thousands of ranges)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    lengths = ends - starts
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    # merge adjacent ranges first: most gaps are single dropped lines
    brk = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    run_starts = np.concatenate([[0], brk])
    run_ends = np.concatenate([brk, [len(starts)]])
    pos = 0
    for a, b in zip(run_starts, run_ends):
        s, e = starts[a], ends[b - 1]
        out[pos:pos + e - s] = buf[s:e]
        pos += e - s
    return out.tobytes()


def parse_reviews(chunk, max_record_bytes=DEFAULT_MAX_RECORD_BYTES, max_payload_bytes=DEFAULT_PAYLOAD_BYTES):
    """Chunk -> (ParsedBatch, dead letters, records): ``records`` counts non-blank lines, every one of
    which ends up either as a row of the batch or as one of the dead letters."""
    data = chunk.data if chunk.data.endswith(b"\n") else chunk.data + b"\n"
    lines = _Lines(data)
    nonblank, suspect = lines.suspects(max_record_bytes)
    records = int(np.count_nonzero(nonblank))
    dead, coerced, coerced_rows = [], [], []

    def judge(i):
        verdict = judge_review_line(lines.line(i), max_record_bytes)
        if verdict.record is not None:
            coerced.append(verdict.record)
            coerced_rows.append(i)
        elif verdict.reason is not None:
            dead.append(dead_letter("review", verdict.stage, verdict.reason, chunk.source,
                                    chunk.first_line + i, lines.line(i), verdict.detail, max_payload_bytes))
        # a blank line (whitespace only) is not a record
        return verdict

    blanks = 0
    for i in np.flatnonzero(suspect):
        if judge(int(i)) is BLANK:
            blanks += 1
    records -= blanks

    tables = []
    todo = [np.flatnonzero(nonblank & ~suspect)]  # pieces (line indices) still to parse with Arrow
    rating_text = None  # lines holding a string "rating", once Arrow has met one
    while todo:
        piece = todo.pop()
        if len(piece) == 0:
            continue
        table = _try_arrow(lines, piece, chunk.first_line)
        if isinstance(table, pa.Table):
            tables.append(table)
            continue
        if table.rating_text and rating_text is None:  # judge them all now, then go on without them
            pending = np.zeros(len(nonblank), dtype=bool)   # only lines no branch has judged yet
            for p in todo + [piece]:
                pending[p] = True
            rating_text = lines.needle_lines(_RATING_NEEDLES) & pending
            for i in np.flatnonzero(rating_text):
                judge(int(i))
            todo = [p[~rating_text[p]] for p in todo + [piece]]
            continue
        if not table.rows:  # Arrow named no row (or one it cannot have)
            if len(piece) <= 64:
                for i in piece:
                    judge(int(i))
            else:  # split until the culprit stands alone
                half = len(piece) // 2
                todo += [piece[:half], piece[half:]]
            continue
        if len(table.rows) == 1:
            (bad,) = table.rows
            judge(int(piece[bad]))
            todo += [piece[bad + 1:], piece[:bad]]
            continue
        alone = np.zeros(len(piece), dtype=bool)
        alone[list(table.rows)] = True
        for i in piece[alone]:
            judge(int(i))
        todo.append(piece[~alone])
    if coerced:
        rows = np.asarray(coerced_rows)
        tables.append(_records_table(coerced, chunk.first_line + rows, rows))
    table = pa.concat_tables(tables) if tables else PARSED_REVIEW_SCHEMA.empty_table()
    return ParsedBatch(table, lines.arrow(), chunk.source, chunk.meta), dead, records


def raw_payloads(batch, rows):
    """The raw lines of the given table rows (``_row`` values), as Python bytes."""
    return [v.as_py() for v in batch.lines.take(pa.array(rows, type=pa.int32()))]


__all__ = ["Chunk", "ParsedBatch", "PARSED_REVIEW_SCHEMA", "parse_reviews", "classify_line", "coerce_review",
           "judge_review_line", "review_time_of", "struct_to_map", "raw_payloads", "image_urls_2023",
           "loads_exact", "shape_verdict", "MIN_REVIEW_TIME_S", "MAX_REVIEW_TIME_S", "MAX_NESTING_DEPTH",
           "MAX_RECORD_FIELDS"]
