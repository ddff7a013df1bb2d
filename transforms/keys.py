"""Stable, vectorised hashing of string keys, for shuffle buckets and dedupe keys.

Python's ``hash`` of a str changes between processes, so buckets computed by two workers would not
agree. This is a 64-bit polynomial hash over the UTF-8 bytes with a final avalanche mix, computed with
numpy on the Arrow buffers (no per-row Python).
"""
import numpy as np
import pyarrow as pa

_P = np.uint64(0x100000001B3)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)


def _powers(n):
    out = np.empty(max(n, 1), dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        for i in range(1, n):
            out[i] = out[i - 1] * _P
    return out


_POWERS = _powers(256)


def _mix(h):
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= _M1
        h ^= h >> np.uint64(33)
        h *= _M2
        h ^= h >> np.uint64(33)
    return h


def hash_strings(arr):
    """string array -> uint64 numpy array (null -> a fixed value)."""
    global _POWERS
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(np.int64)
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]:offsets[-1]]
    rel = offsets - offsets[0]
    lengths = np.diff(rel)
    longest = int(lengths.max()) if n else 0
    if longest > len(_POWERS):
        _POWERS = _powers(longest)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(rel[:-1], lengths)
    with np.errstate(over="ignore"):
        vals = data.astype(np.uint64) * _POWERS[pos]
    h = np.zeros(n, dtype=np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        h[nonempty] = np.add.reduceat(vals, rel[:-1][nonempty])
    h += lengths.astype(np.uint64)  # "" and "\0" differ
    if arr.null_count:
        h[np.asarray(arr.is_null())] = np.uint64(0x9E3779B97F4A7C15)
    return _mix(h)


_NULL = np.uint64(0x9E3779B97F4A7C15)


def hash_values(col):
    """Any Arrow column of strings, integers, booleans, floats, dates, timestamps, lists or maps of those ->
    uint64 numpy hash per value (null -> a fixed value; a list's or map's order counts)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return hash_strings(col)
    if pa.types.is_map(t):   # the (key, item) pairs as one list; offsets index the unsliced child
        key, item = col.values.flatten()
        with np.errstate(over="ignore"):
            return _segments(col, _mix(hash_values(key) * _P + hash_values(item)))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _segments(col, hash_values(col.values))
    if pa.types.is_floating(t):
        values = np.asarray(col.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)).view(np.uint64)
    elif pa.types.is_boolean(t) or pa.types.is_date32(t):
        values = np.asarray(col.cast(pa.int32()).fill_null(0).to_numpy(), dtype=np.int64).view(np.uint64)
    else:   # integers and timestamps
        values = np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64).view(np.uint64)
    part = _mix(values ^ np.uint64(0x5851F42D4C957F2D))
    if col.null_count:
        part[np.asarray(col.is_null())] = _NULL
    return part


def _segments(col, element_hashes):
    """A list (or map) column and the hashes of its whole child array (which its offsets index, whatever
    the slice) -> one order-sensitive hash per row."""
    offsets = np.asarray(col.offsets.to_numpy(), dtype=np.int64)
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    with np.errstate(over="ignore"):
        h = np.zeros(len(col), dtype=np.uint64)
        nonempty = lengths > 0
        if nonempty.any():
            lo, hi = int(offsets[0]), int(offsets[-1])
            pos = np.arange(lo, hi, dtype=np.int64) - np.repeat(starts, lengths)
            vals = element_hashes[lo:hi] * _powers_upto(int(lengths.max()))[pos]
            h[nonempty] = np.add.reduceat(vals, (starts - lo)[nonempty])
        h += lengths.astype(np.uint64) + np.uint64(0x27D4EB2F165667C5)   # [] differs from null and from ""
    if col.null_count:
        h[np.asarray(col.is_null())] = _NULL
    return _mix(h)


def _powers_upto(n):
    global _POWERS
    if n > len(_POWERS):
        _POWERS = _powers(n)
    return _POWERS


def hash_columns(table, columns):
    """Rows of ``table`` -> uint64 numpy hash of their values in ``columns`` (any type ``hash_values`` takes)."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for name in columns:
        part = hash_values(table[name])
        with np.errstate(over="ignore"):
            h = _mix(h * _P + part)
    return h


def buckets(arr, n_buckets):
    """string array -> int64 numpy array of bucket numbers in [0, n_buckets)."""
    return (hash_strings(arr) % np.uint64(n_buckets)).astype(np.int64)


def split_by_bucket(table, bucket_ids):
    """-> [(bucket, sub-table)] for the buckets present, rows kept in order within each bucket."""
    order = np.argsort(bucket_ids, kind="stable")
    sorted_ids = bucket_ids[order]
    cuts = np.flatnonzero(np.diff(sorted_ids)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(order)]])
    taken = table.take(pa.array(order))
    return [(int(sorted_ids[s]), taken.slice(s, e - s)) for s, e in zip(starts, ends) if e > s]


# ---------------------------------------------------------------------------------------------------
# ordering by several integer keys

def dense_codes(values):
    """int64 numpy -> (dense rank of each value, number of distinct values)."""
    uniq, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64), len(uniq)


def argsort_packed(keys):
    """[(codes, number of codes)], most significant first -> the stable ascending order of the rows.
    Packed into one int64 per row when they fit (one numpy sort instead of a multi-key lexsort)."""
    bits = [max(1, int(n - 1).bit_length()) for _, n in keys]
    if sum(bits) > 62:
        return np.lexsort([c for c, _ in keys][::-1])
    packed = np.zeros(keys[0][0].size, dtype=np.int64)
    for (codes, _), width in zip(keys, bits):
        packed = (packed << width) | codes
    return np.argsort(packed, kind="stable")
