"""Which Amazon schema a record follows, which of its fields that schema knows, and what is rescued.

The job reads three review schemas and two product-metadata schemas, often mixed in one file or one event
stream, so the schema is decided **per record, by the fields it holds** (never by file name):

Reviews
    2014  ``reviewerID, asin, reviewerName, helpful [h, t], reviewText, overall, summary, unixReviewTime,
          reviewTime``
    2018  the 2014 fields without ``helpful``, plus ``verified, vote, style, image``
    2023  ``rating, title, text, images, asin, parent_asin, user_id, timestamp (ms), helpful_vote,
          verified_purchase``

Products
    2018  ``asin, title, brand, main_cat, category, price, image / imageURL / imageURLHighRes, rank, date``
          (+ ``description, feature, details, also_buy, also_view, tech1, tech2, fit, similar_item``)
    2023  ``parent_asin, title, store, main_category, categories, price, images`` (+ ``features,
          description, details, average_rating, rating_number, videos, bought_together``)

The rule (``review_version``, ``product_version``; ``review_version_codes`` is the same rule over Arrow
validity masks):

* A field is *present* when the record holds it with a non-null value (``"x": null`` reads as absent:
  Arrow cannot tell the two apart, and a null carries nothing).
* A record follows the newer (2023) schema when it holds **more** fields that only the 2023 schema has
  than fields that only the older schemas have (``asin``, ``title``, ``price``, ``description``,
  ``details`` are shared and do not count). A stray field of the other schema therefore does not flip a
  record, and a tie (a record with neither kind, like ``{"asin": "X"}``) stays with the older schema.
* An older review record is 2014 when it holds ``helpful`` and none of the 2018-only fields ``vote``,
  ``verified``, ``style``, ``image``; every other older review record is 2018 (the job's historical
  default: a record without ``helpful`` cannot be told from a sparse 2018 record, and the cleaner treats
  both alike). Older product records are always 2018.

Rescued data (Auto Loader's rescue mode): the fields a record's *own* schema does not know are kept, per
row, as a JSON object string in ``_rescued_data`` (null when there are none), in the record's key order,
with their raw values: a 2023 field of a 2018 record is rescued, and so is a 2018 field of a 2023 record.
Null values are not rescued (see above). For products, fields whose value is empty (``""``, ``[]``,
``{}``) are not rescued either: the metadata files write every field on every record, mostly empty, and
a column filled with empty leftovers would hide the records that do carry something new.

Which fields a schema *knows*: for reviews, every field of the schema as listed above (``reviewTime`` is
known but not read: ``unixReviewTime`` says the same). For products, the fields some rule reads, plus
``PRODUCT_IGNORED_2018`` (HTML table scrapes of the product page that no rule will ever want); so the
products' ``_rescued_data`` holds the content the silver table does not model yet (2018 ``description``,
``feature``, ``details``, ``also_buy``, ``also_view``; 2023 ``features``, ``description``, ``details``,
``average_rating``, ``rating_number``, ``videos``, ``bought_together``).

``counts`` / ``product_counts`` count rows per schema version and rescued rows per field name, for the
job's counters and run summary.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

V2014, V2018, V2023 = "2014", "2018", "2023"
REVIEW_VERSIONS = (V2014, V2018, V2023)  # index = the code ``review_version_codes`` returns
PRODUCT_VERSIONS = (V2018, V2023)

# --- reviews ------------------------------------------------------------------------------------------
REVIEW_SHARED = ("asin",)
REVIEW_ONLY_LEGACY = ("overall", "verified", "reviewerID", "reviewerName", "reviewText", "summary",
                      "unixReviewTime", "vote", "image", "helpful", "style", "reviewTime")
REVIEW_ONLY_2023 = ("rating", "title", "text", "images", "parent_asin", "user_id", "timestamp",
                    "helpful_vote", "verified_purchase")
REVIEW_2018_ONLY = ("vote", "verified", "style", "image")  # what tells a 2018 record from a 2014 one
REVIEW_KNOWN = {
    V2014: frozenset(REVIEW_SHARED + REVIEW_ONLY_LEGACY),
    V2018: frozenset(REVIEW_SHARED + REVIEW_ONLY_LEGACY),
    V2023: frozenset(REVIEW_SHARED + REVIEW_ONLY_2023),
}
REVIEW_ALL_KNOWN = frozenset().union(*REVIEW_KNOWN.values())

# --- products -----------------------------------------------------------------------------------------
PRODUCT_SHARED = ("title", "price", "description", "details")
PRODUCT_ONLY_2018 = ("asin", "brand", "main_cat", "category", "image", "imageURL", "imageURLHighRes", "rank",
                     "date", "feature", "also_buy", "also_view", "tech1", "tech2", "fit", "similar_item")
PRODUCT_ONLY_2023 = ("parent_asin", "store", "main_category", "categories", "images", "features",
                     "average_rating", "rating_number", "videos", "bought_together")
# read by a rule in transforms.products
PRODUCT_READ = {
    V2018: ("asin", "title", "brand", "main_cat", "category", "price", "image", "imageURL", "imageURLHighRes",
            "rank", "date"),
    V2023: ("parent_asin", "title", "store", "main_category", "categories", "price", "images"),
}
# known and dropped on purpose: markup of the product page's tables, never a value
PRODUCT_IGNORED_2018 = ("tech1", "tech2", "fit", "similar_item")
PRODUCT_KNOWN = {
    V2018: frozenset(PRODUCT_READ[V2018] + PRODUCT_IGNORED_2018),
    V2023: frozenset(PRODUCT_READ[V2023]),
}


# --- the rule -----------------------------------------------------------------------------------------

def present_fields(obj):
    """The keys of a JSON object whose value is not null."""
    return {k for k, v in obj.items() if v is not None}


def _newer(present, only_old, only_new):
    """More of ``only_new``'s fields than of ``only_old``'s are in ``present`` (a set; both tuples hold
    distinct names, so counting the intersections counts the fields)."""
    return len(present.intersection(only_new)) > len(present.intersection(only_old))


def review_version(present):
    """Field names present (non-null) in a review record -> "2014", "2018" or "2023"."""
    if _newer(present, REVIEW_ONLY_LEGACY, REVIEW_ONLY_2023):
        return V2023
    if "helpful" in present and not any(f in present for f in REVIEW_2018_ONLY):
        return V2014
    return V2018


def product_version(present):
    """Field names present (non-null) in a product record -> "2018" or "2023"."""
    return V2023 if _newer(present, PRODUCT_ONLY_2018, PRODUCT_ONLY_2023) else V2018


def review_version_codes(valid, n):
    """``review_version`` for ``n`` rows at once: ``valid`` maps field names to numpy bool masks (True where
    the row holds a non-null value; a name not in it is absent on every row) -> (codes, n_legacy, n_2023):
    int8 codes into ``REVIEW_VERSIONS`` and, per row, how many fields of each kind it holds."""
    def count(names):
        out = np.zeros(n, dtype=np.int16)
        for name in names:
            if name in valid:
                out += valid[name]
        return out

    n_legacy, n_2023 = count(REVIEW_ONLY_LEGACY), count(REVIEW_ONLY_2023)
    codes = np.ones(n, dtype=np.int8)  # 2018
    if "helpful" in valid:
        is_2014 = valid["helpful"].copy()
        for name in REVIEW_2018_ONLY:
            if name in valid:
                is_2014 &= ~valid[name]
        codes[is_2014] = 0
    codes[n_2023 > n_legacy] = 2
    return codes, n_legacy, n_2023


def version_array(codes):
    """int8 codes -> string array of ``REVIEW_VERSIONS``."""
    return pa.array(REVIEW_VERSIONS, pa.string()).take(pa.array(codes, pa.int8()))


# --- rescued data ---------------------------------------------------------------------------------------

def _empty(value):
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def rescued_fields(obj, known, skip_empty=False):
    """The fields of ``obj`` its schema does not know, with their values, in the record's order (null values
    left out; empty ones too with ``skip_empty``)."""
    skip = _empty if skip_empty else (lambda v: v is None)
    return {k: v for k, v in obj.items() if k not in known and not skip(v)}


def dumps(fields):
    """Rescued fields -> compact JSON text, or None when there are none. orjson (UTF-8, compact); the
    standard library for what orjson cannot write (integers beyond 64 bits), ASCII-escaped then so a lone
    surrogate cannot make the string unencodable; ``str()`` of any non-JSON value."""
    if not fields:
        return None
    try:
        return orjson.dumps(fields).decode()
    except TypeError:
        return json.dumps(fields, separators=(",", ":"), default=str)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads_exact(line):
    """A JSON line -> Python object, integers of any size kept exactly (orjson reads those beyond 64 bits
    as floats). NaN and Infinity are refused, as orjson refuses them. Raises ValueError."""
    return json.loads(line, parse_constant=_reject_constant)


def rescue_review(obj, version):
    """Rescued-data JSON of a review object of the given version (None when nothing is rescued)."""
    return dumps(rescued_fields(obj, REVIEW_KNOWN[version]))


def rescue_product(obj, version):
    """Rescued-data JSON of a product object of the given version (None when nothing is rescued)."""
    return dumps(rescued_fields(obj, PRODUCT_KNOWN[version], skip_empty=True))


# --- counts ---------------------------------------------------------------------------------------------

def _count(versions, rescued):
    by_version = Counter(v for v in versions if v is not None)
    fields = Counter()
    for text in rescued:
        if text is not None:
            fields.update(orjson.loads(text).keys())
    return {"schema_version": dict(sorted(by_version.items())), "rescued_fields": dict(sorted(fields.items()))}


def counts(table):
    """Clean (or silver) review table -> ``{"schema_version": {version: rows}, "rescued_fields": {field:
    rows whose _rescued_data holds it}}``. Only the rows with rescued data are decoded."""
    versions = pc.value_counts(table["schema_version"]).to_pylist() if table.num_rows else []
    by_version = {d["values"]: d["counts"] for d in versions if d["values"] is not None}
    rescued = table["_rescued_data"]
    texts = rescued.filter(pc.is_valid(rescued)).to_pylist() if rescued.null_count < len(rescued) else []
    out = _count([], texts)
    out["schema_version"] = dict(sorted(by_version.items()))
    return out


def product_counts(rows):
    """Clean product rows (dicts) -> the same shape as ``counts``."""
    return _count([r["schema_version"] for r in rows], [r["_rescued_data"] for r in rows])


def merge_counts(total, more):
    """Add the counts ``more`` into ``total`` (same shape as ``counts``), in place; returns ``total``."""
    for section, values in more.items():
        into = total.setdefault(section, {})
        for key, n in values.items():
            into[key] = into.get(key, 0) + n
    return total
