"""Event-time windows computed as columns: fixed (size) or sliding (size, period), in seconds.

Batch mode carries the window as a column through the gold aggregates (one element per batch, not one
per window); streaming splits batches per window before ``WindowInto`` with the same arithmetic, so the
same reviews land in the same windows in both modes.
"""
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TS = pa.timestamp("s", tz="UTC")


@dataclass(frozen=True)
class WindowSpec:
    size_s: int = 86400
    period_s: int | None = None  # None: fixed windows; else sliding windows every period_s
    offset_s: int = 0

    def __post_init__(self):
        if self.size_s <= 0:
            raise ValueError("window size must be positive")
        if self.period_s is not None and (self.period_s <= 0 or self.size_s % self.period_s):
            raise ValueError("the sliding period must be positive and divide the window size")

    @property
    def step(self):
        return self.period_s or self.size_s

    @property
    def copies(self):
        """How many windows each instant belongs to."""
        return self.size_s // self.step

    def starts(self, seconds):
        """int64 numpy seconds -> list of ``copies`` arrays of window starts (latest window first)."""
        base = (seconds - self.offset_s) // self.step * self.step + self.offset_s
        return [base - k * self.step for k in range(self.copies)]

    def window_of(self, second):
        """The (start, end) of every window holding ``second`` (per-record paths and tests)."""
        return [(int(a[0]), int(a[0]) + self.size_s) for a in reversed(self.starts(np.asarray([second])))]


def with_windows(table, spec, time_column="unix_review_time"):
    """Table -> the same rows with ``window_start``/``window_end`` columns; sliding windows repeat rows."""
    seconds = table[time_column].to_numpy()
    parts = []
    for starts in spec.starts(seconds):
        parts.append(table.append_column("window_start", pa.array(starts, TS))
                     .append_column("window_end", pa.array(starts + spec.size_s, TS)))
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def window_closed(starts, spec, watermark_s, allowed_lateness_s):
    """Bool numpy mask: windows starting at ``starts`` that had closed at ``watermark_s``: end + allowed
    lateness at or behind the watermark (Beam drops data for such windows; we dead-letter it)."""
    return np.asarray(starts) + spec.size_s + allowed_lateness_s <= watermark_s


def latest_window_closed(seconds, spec, watermark_s, allowed_lateness_s):
    """Bool numpy mask: instants whose every window had closed (the ``too_late`` rule)."""
    return window_closed(spec.starts(np.asarray(seconds, dtype=np.int64))[0], spec, watermark_s, allowed_lateness_s)


def window_rows(seconds, spec, watermark_s=None, allowed_lateness_s=0):
    """Event times -> [(window_start, row indices, primary)] in window order, one entry per window that
    holds rows (a row is in ``spec.copies`` windows; rows keep their order within a window). ``primary``
    marks the rows whose latest window this is: the copy that is written to silver and counted once.
    Windows already closed at ``watermark_s`` are left out."""
    seconds = np.asarray(seconds, dtype=np.int64)
    n = len(seconds)
    all_starts = np.concatenate(spec.starts(seconds)) if n else np.zeros(0, np.int64)
    all_rows = np.tile(np.arange(n, dtype=np.int64), spec.copies)
    primary = np.repeat(np.arange(spec.copies) == 0, n)
    if watermark_s is not None:
        keep = ~window_closed(all_starts, spec, watermark_s, allowed_lateness_s)
        all_starts, all_rows, primary = all_starts[keep], all_rows[keep], primary[keep]
    order = np.lexsort((all_rows, all_starts))
    sorted_starts = all_starts[order]
    cuts = np.flatnonzero(np.diff(sorted_starts)) + 1
    return [(int(sorted_starts[a]), all_rows[order[a:b]], primary[order[a:b]])
            for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(order)]])) if b > a]
