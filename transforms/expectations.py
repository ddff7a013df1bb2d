"""Data-quality expectations over the clean review table, in the manner of Delta Live Tables.

Every rule a clean review row must or should meet is declared here, once, in ``EXPECTATIONS``: a name, a
vectorised check (pyarrow/numpy over the clean table: True where the row meets it), an action and a
one-line description. ``apply_expectations`` evaluates them; ``transforms.clean.clean_reviews`` calls it
for every batch, so batch and streaming runs apply the same rules.

Actions
    warn  the row is kept; the rows that fail are counted
    drop  the row goes to dead letters (stage ``clean``, reason = the expectation's name) instead of
          silver
    fail  the row is kept and counted; a run with any failing row must abort before its commit (the
          caller raises on ``failures(counts)``)

Order. Drop expectations are tried in declaration order and a dropped row's dead letter names the first
one it fails (one dead letter per row), exactly as the cleaner's rejection rules always did.

Counts (``counts[name] = {"action": a, "failed_rows": n}``): for a drop expectation, the rows it sent to
dead letters (= its dead letters); for warn and fail, the rows of the kept table that fail it (a row
dropped by a drop expectation is not counted again).

Required expectations (``required=True``): the four missing-field rules. Silver cannot hold such a row
(no product key, reviewer, rating or partition date), so they always drop and their action cannot be
overridden. Every other action can: ``configure({"review_time_range": "fail"})``, or from command-line
style text ``configure(parse_overrides(["review_time_range=fail"]))``.

Shipped expectations
    missing_asin            asin null or blank                                  drop (required)
    missing_reviewer_id     reviewer_id null or blank                           drop (required)
    missing_overall         overall null                                        drop (required)
    overall_out_of_range    overall within 1..5 (0 included in "out")           drop
    missing_review_time     unix_review_time null                               drop (required)
    review_time_range       review time from 1995-01-01 UTC to now + 1 day      warn
    empty_review_text       review_text null, empty or whitespace only          warn
    asin_shape              asin is 10 characters of 0-9 / A-Z (ASIN, ISBN-10)  warn

(``overall_out_of_range`` keeps the dead-letter reason the cleaner always gave an out-of-range rating.
Review time has two rules, one per kind of wrong: a time no consumer can represent (outside 1900-01-01 ..
2199-12-31 UTC, ``transforms.parse.MIN_REVIEW_TIME_S`` .. ``MAX_REVIEW_TIME_S``) never reaches this module:
the parser dead-letters it (``review_time_out_of_range``); a representable but implausible time is this
module's ``review_time_range`` (warn by default), whose range lies inside the hard bound (tested).
The time range allows one day past "now": 2014/2018 review times are dates at midnight UTC, and a
streaming review from east of UTC can carry tomorrow's date. ``now`` is the evaluation time unless given.
Real asins: every asin and parent_asin of the shared 2018 and 2023 files has the ASIN shape; 23 rows of
the 2014 Kindle_Store sample carry truncated 8-character asins (lost in a CSV conversion), which
``asin_shape`` flags.)
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import reasons
from transforms.dead_letters import DEFAULT_PAYLOAD_BYTES, dead_letter

WARN, DROP, FAIL = "warn", "drop", "fail"
ACTIONS = (WARN, DROP, FAIL)

REVIEW_TIME_MIN_S = 788918400      # 1995-01-01 00:00:00 UTC: Amazon's first reviews
FUTURE_TOLERANCE_S = 86400
ASIN_PATTERN = r"^[0-9A-Z]{10}$"


class Expectation(NamedTuple):
    name: str
    check: Callable  # (clean table, now_s) -> boolean array, True where the row meets the expectation
    action: str
    description: str
    required: bool = False


def _blank(col):
    """Null, empty or only whitespace (``utf8_is_space`` finds it without copying the strings, as trimming
    would; the same verdict as trimming, checked for every code point)."""
    return pc.fill_null(pc.or_(pc.equal(pc.utf8_length(col), 0), pc.utf8_is_space(col)), True)


def _present(col):
    return pc.invert(_blank(col))


def _rating_in_range(t, now_s):
    return pc.and_(pc.greater_equal(t["overall"], 1.0), pc.less_equal(t["overall"], 5.0))


def _review_time_in_range(t, now_s):
    s = t["unix_review_time"]
    return pc.and_(pc.greater_equal(s, REVIEW_TIME_MIN_S), pc.less_equal(s, now_s + FUTURE_TOLERANCE_S))


def _review_text_not_empty(t, now_s):
    return _present(t["review_text"])


def _asin_shaped(t, now_s):
    return pc.match_substring_regex(t["asin"], ASIN_PATTERN)


EXPECTATIONS = (
    Expectation(reasons.MISSING_ASIN, lambda t, now_s: _present(t["asin"]), DROP,
                "asin (the product key) present and not blank", required=True),
    Expectation(reasons.MISSING_REVIEWER_ID, lambda t, now_s: _present(t["reviewer_id"]), DROP,
                "reviewer id present and not blank", required=True),
    Expectation(reasons.MISSING_OVERALL, lambda t, now_s: pc.is_valid(t["overall"]), DROP,
                "rating present", required=True),
    Expectation(reasons.OVERALL_OUT_OF_RANGE, _rating_in_range, DROP, "rating within 1..5"),
    Expectation(reasons.MISSING_REVIEW_TIME, lambda t, now_s: pc.is_valid(t["unix_review_time"]), DROP,
                "review time present", required=True),
    Expectation("review_time_range", _review_time_in_range, WARN,
                "review time from 1995-01-01 UTC up to one day after now"),
    Expectation("empty_review_text", _review_text_not_empty, WARN, "review text not empty or blank"),
    Expectation("asin_shape", _asin_shaped, WARN, "asin is 10 characters of 0-9 and A-Z"),
)


# --- configuration ------------------------------------------------------------------------------------

def parse_overrides(items):
    """``["review_time_range=fail", ...]`` (the text of repeated ``--expectation`` options) -> dict."""
    out = {}
    for item in items:
        name, sep, action = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expectation override {item!r}: expected NAME=ACTION")
        out[name.strip()] = action.strip().lower()
    return out


def configure(overrides, expectations=EXPECTATIONS):
    """-> the expectations with the actions of ``overrides`` ({name: "warn" | "drop" | "fail"}). Unknown
    names and actions, and any other action for a required expectation, raise ValueError."""
    by_name = {e.name: e for e in expectations}
    for name, action in overrides.items():
        if name not in by_name:
            raise ValueError(f"unknown expectation {name!r} (known: {', '.join(by_name)})")
        if action not in ACTIONS:
            raise ValueError(f"expectation {name!r}: action {action!r} is not one of {', '.join(ACTIONS)}")
        if by_name[name].required and action != DROP:
            raise ValueError(f"expectation {name!r} is required: silver cannot hold a row that fails it, so "
                             f"it always drops")
    return tuple(e._replace(action=overrides.get(e.name, e.action)) for e in expectations)


# --- evaluation ---------------------------------------------------------------------------------------

def _met(expectation, table, now_s):
    """Numpy bool: rows meeting the expectation (a null result counts as not met)."""
    ok = expectation.check(table, now_s)
    if isinstance(ok, np.ndarray):
        return ok.astype(bool, copy=False)
    ok = pc.fill_null(ok, False)
    return np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)


def apply_expectations(table, expectations=EXPECTATIONS, payload_fn=None, *, record_type="review",
                       stage=reasons.CLEAN, max_payload_bytes=DEFAULT_PAYLOAD_BYTES, now_s=None):
    """Clean table -> (kept table, dead letters, counts).

    ``payload_fn(rows)`` gives the raw records (bytes) of the table rows ``rows`` (numpy indices) for the
    dead letters' payload; without it the payload is empty. Dead letters are plain dicts in the format of
    ``transforms.dead_letters.dead_letter``, with ``source``/``source_position`` from the table, in row
    order. ``counts`` is ``{name: {"action": a, "failed_rows": n}}`` for every expectation (see the module
    docstring); ``now_s`` (default: the current time) is the "now" of time checks.
    """
    now_s = int(time.time()) if now_s is None else int(now_s)
    n = table.num_rows
    first = np.full(n, -1, dtype=np.int16)  # per row: the first drop expectation it fails
    met = {}
    for k, e in enumerate(expectations):
        if e.action not in ACTIONS:
            raise ValueError(f"expectation {e.name!r}: action {e.action!r} is not one of {', '.join(ACTIONS)}")
        ok = _met(e, table, now_s) if n else np.zeros(0, dtype=bool)
        if e.action == DROP:
            first[~ok & (first < 0)] = k
        else:
            met[k] = ok
    keep = first < 0
    counts = {}
    for k, e in enumerate(expectations):
        failed = int(np.count_nonzero(first == k)) if e.action == DROP else int(np.count_nonzero(~met[k] & keep))
        counts[e.name] = {"action": e.action, "failed_rows": failed}
    dropped = np.flatnonzero(~keep)
    dead = []
    if dropped.size:
        rejected = table.select(["source", "source_position"]).take(pa.array(dropped))
        payloads = payload_fn(dropped) if payload_fn is not None else [b""] * dropped.size
        for k, source, pos, raw in zip(first[dropped], rejected["source"].to_pylist(),
                                       rejected["source_position"].to_pylist(), payloads):
            dead.append(dead_letter(record_type, stage, expectations[k].name, source, pos, raw,
                                    max_payload_bytes=max_payload_bytes))
        table = table.filter(pa.array(keep))
    return table, dead, counts


def failures(counts):
    """{name: failed rows} of the fail-action expectations that failed: the run must not commit when this
    is not empty."""
    return {name: c["failed_rows"] for name, c in counts.items() if c["action"] == FAIL and c["failed_rows"]}


def merge_counts(total, more):
    """Add the counts ``more`` (from one batch) into ``total``, in place; returns ``total``."""
    for name, c in more.items():
        into = total.setdefault(name, {"action": c["action"], "failed_rows": 0})
        into["failed_rows"] += c["failed_rows"]
    return total
