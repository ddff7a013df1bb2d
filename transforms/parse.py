"""JSON lines -> Arrow record batches, with every bad line split off as a dead letter.

``pyarrow.json`` is fast but strict: one malformed line, one invalid UTF-8 byte or one field whose JSON
type changes (``"overall": "5.0"`` among numbers) fails the whole block. So parsing goes in three steps:

1. A vectorised suspicion test over the chunk's bytes (numpy): lines that do not start with ``{`` or
   end with ``}``, lines over the size limit, and lines holding a string ``overall`` (the one type
   quirk seen in real feeds) are *suspects*. Only suspects are judged one by one with orjson.
2. Arrow parses the rest. If it still fails (a defect the cheap test cannot see: a wrong type, a
   truncated line that happens to end in ``}``), its error names the row: that line is judged alone and
   the lines before and after it go back on the work stack as two pieces. A failure that names no row
   (or two objects on one line, a NaN rating, a style no rule reads) splits the piece in halves down to
   single lines. A bad line costs itself, never its neighbours. Invalid UTF-8, which Arrow's reader
   lets through, is found first by validating the chunk as Arrow strings (bisecting only if it fails).
3. Judged lines are either dead (a reason from ``transforms.reasons``), blank (not a record), or
   coerced to the canonical types (``coerce_review``) and appended as rows.

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
from transforms.dead_letters import DEFAULT_PAYLOAD_BYTES, dead_letter
from transforms.schemas import RAW_REVIEW_SCHEMA

DEFAULT_MAX_RECORD_BYTES = 1 << 20
STYLE_TYPE = pa.map_(pa.string(), pa.string())
PARSED_REVIEW_SCHEMA = pa.schema([
    *RAW_REVIEW_SCHEMA,
    ("style", STYLE_TYPE),
    ("source_position", pa.int64()),
    ("_row", pa.int32()),  # index of the row's line in ParsedBatch.lines
])
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=RAW_REVIEW_SCHEMA, unexpected_field_behavior="infer")
_ROW_IN_ERROR = re.compile(r"in row (\d+)")
_OPEN, _CLOSE, _NEWLINE, _CR = 0x7B, 0x7D, 0x0A, 0x0D
# "overall" given as a JSON string; the only per-field check paid on every line
_SUSPECT_NEEDLES = (b'"overall": "', b'"overall":"')


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
        reason = reasons.HTML_PAYLOAD if stripped[:1] == b"<" else reasons.MALFORMED_JSON
        return None, Verdict(stage=reasons.PARSE, reason=reason, detail=str(err))
    if not isinstance(obj, dict):
        return None, Verdict(stage=reasons.PARSE, reason=reasons.NOT_AN_OBJECT,
                             detail=f"JSON {type(obj).__name__}")
    return obj, None


class _WrongType(Exception):
    def __init__(self, field, value):
        super().__init__(f"{field}: {type(value).__name__}")


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
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip(), 10)
        except ValueError:
            pass
    raise _WrongType(field, v)


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
            (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()
                                                                 and abs(x) < 2 ** 53) for x in v):
        return [int(x) for x in v]
    return None  # 2014 schema only; anything else carries no information


_COERCE = {
    "verified": _as_bool, "reviewerID": _as_str, "asin": _as_str, "reviewerName": _as_str,
    "reviewText": _as_str, "summary": _as_str, "unixReviewTime": _as_int, "vote": _as_str,
    "image": _as_str_list, "helpful": _as_helpful, "style": _as_style,
}


def coerce_review(obj):
    """One review object -> Verdict with the canonical record (the types of PARSED_REVIEW_SCHEMA), or a
    dead verdict: ``wrong_type`` for a field no rule can coerce, ``overall_not_numeric`` for a rating
    string that is not a number (null and out-of-range ratings are the cleaner's business)."""
    try:
        record = {field: fn(field, obj.get(field)) for field, fn in _COERCE.items()}
    except _WrongType as err:
        return Verdict(stage=reasons.PARSE, reason=reasons.WRONG_TYPE, detail=str(err))
    overall = obj.get("overall")
    if isinstance(overall, str):
        try:
            overall = float(overall.strip())
        except ValueError:
            return Verdict(stage=reasons.CLEAN, reason=reasons.OVERALL_NOT_NUMERIC, detail=repr(overall[:50]))
        if overall != overall or overall in (float("inf"), float("-inf")):
            return Verdict(stage=reasons.CLEAN, reason=reasons.OVERALL_NOT_NUMERIC, detail="not finite")
    elif isinstance(overall, bool) or not (overall is None or isinstance(overall, (int, float))):
        return Verdict(stage=reasons.PARSE, reason=reasons.WRONG_TYPE, detail=f"overall: {type(overall).__name__}")
    record["overall"] = None if overall is None else float(overall)
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
    try:
        return _as_int("unixReviewTime", obj.get("unixReviewTime"))
    except _WrongType:
        return None


def judge_review_line(line, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
    obj, verdict = classify_line(line, max_record_bytes)
    return verdict if verdict is not None else coerce_review(obj)


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


def _conform(table, positions, rows):
    """An Arrow-parsed table -> PARSED_REVIEW_SCHEMA (fixed columns, style as a map, lineage)."""
    cols = [table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in RAW_REVIEW_SCHEMA]
    style = struct_to_map(table["style"]) if "style" in table.column_names else pa.nulls(table.num_rows, STYLE_TYPE)
    return pa.Table.from_arrays(cols + [style, pa.array(positions, pa.int64()), pa.array(rows, pa.int32())],
                                schema=PARSED_REVIEW_SCHEMA)


def _records_table(records, positions, rows):
    """Coerced records (dicts) -> PARSED_REVIEW_SCHEMA."""
    cols = [pa.array([r.get(f.name) for r in records], type=f.type) for f in RAW_REVIEW_SCHEMA]
    style = pa.array([r.get("style") for r in records], type=STYLE_TYPE)
    return pa.Table.from_arrays(cols + [style, pa.array(positions, pa.int64()), pa.array(rows, pa.int32())],
                                schema=PARSED_REVIEW_SCHEMA)


def _try_arrow(lines, piece, first_line):
    """Parse the lines ``piece`` with Arrow -> a conformed table, or the index within ``piece`` of the
    row Arrow rejected, or None when the failure names no usable row (the caller splits the piece)."""
    try:
        t = _read_json(lines.join(piece))
    except pa.ArrowInvalid as err:
        m = _ROW_IN_ERROR.search(str(err))
        return int(m.group(1)) if m and int(m.group(1)) < len(piece) else None
    if t.num_rows != len(piece):  # e.g. two objects on one line: rows no longer map to lines
        return None
    if "overall" in t.column_names and pa.types.is_floating(t["overall"].type):
        odd = pc.fill_null(pc.or_(pc.is_nan(t["overall"]), pc.is_inf(t["overall"])), False)
        hit = np.flatnonzero(np.asarray(odd))
        if hit.size:  # NaN / Infinity are not JSON; Arrow accepts them, orjson does not
            return int(hit[0])
    try:
        return _conform(t, first_line + piece, piece)
    except (_WrongType, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None  # e.g. a style that is a plain string in a block without any style object


def _read_json(buf):
    opts = pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(buf) + 1))
    return pj.read_json(pa.BufferReader(buf), read_options=opts, parse_options=_PARSE_OPTIONS)


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

    def suspects(self, max_record_bytes):
        lengths = self.ends - self.starts
        nonblank = lengths > 0
        buf = self.buf
        first = buf[self.starts]
        last = buf[np.maximum(self.ends - 1, 0)]
        suspect = nonblank & ((first != _OPEN) | (last != _CLOSE) | (lengths > max_record_bytes))
        suspect[self.invalid_utf8()] = True
        for needle in _SUSPECT_NEEDLES:
            hits, i = [], self.data.find(needle)
            while i >= 0:
                hits.append(i)
                i = self.data.find(needle, i + 1)
            if hits:
                suspect[np.searchsorted(self.ends, np.asarray(hits))] = True
        return nonblank, suspect

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
    while todo:
        piece = todo.pop()
        if len(piece) == 0:
            continue
        table = _try_arrow(lines, piece, chunk.first_line)
        if isinstance(table, pa.Table):
            tables.append(table)
            continue
        bad = table  # the row Arrow named, or None when it named none (or a row it cannot have)
        if bad is None:
            if len(piece) <= 64:
                for i in piece:
                    judge(int(i))
            else:  # split until the culprit stands alone
                half = len(piece) // 2
                todo += [piece[:half], piece[half:]]
            continue
        judge(int(piece[bad]))
        todo += [piece[bad + 1:], piece[:bad]]
    if coerced:
        rows = np.asarray(coerced_rows)
        tables.append(_records_table(coerced, chunk.first_line + rows, rows))
    table = pa.concat_tables(tables) if tables else PARSED_REVIEW_SCHEMA.empty_table()
    return ParsedBatch(table, lines.arrow(), chunk.source, chunk.meta), dead, records


def raw_payloads(batch, rows):
    """The raw lines of the given table rows (``_row`` values), as Python bytes."""
    return [v.as_py() for v in batch.lines.take(pa.array(rows, type=pa.int32()))]


__all__ = ["Chunk", "ParsedBatch", "PARSED_REVIEW_SCHEMA", "parse_reviews", "classify_line", "coerce_review",
           "judge_review_line", "review_time_of", "struct_to_map", "raw_payloads"]
