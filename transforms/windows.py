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
