"""Table builders shared by the unit tests."""
import datetime as dt

import pyarrow as pa

from transforms.schemas import SILVER_REVIEW_SCHEMA

T0 = 1388534400  # 2014-01-01 00:00:00 UTC
UTC = dt.timezone.utc


def silver_table(rows, **defaults):
    """Dicts -> a table in SILVER_REVIEW_SCHEMA. The time columns derive from ``unix_review_time``
    (default T0); reviewer ``R<i>``, asin ``A``, 5 stars, one word, source ``s`` at line i + 1, then
    ``defaults``, then the row's own values."""
    full = []
    for i, r in enumerate(rows):
        when = dt.datetime.fromtimestamp(r.get("unix_review_time", T0), tz=UTC)
        row = {"reviewer_id": f"R{i}", "asin": "A", "overall": 5.0, "unix_review_time": T0,
               "review_time": when, "review_date": when.date(), "year": when.year, "month": when.month,
               "review_length_words": 1, "source": "s", "source_position": i + 1, **defaults}
        row.update(r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=SILVER_REVIEW_SCHEMA)
