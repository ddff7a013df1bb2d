"""Clean one Amazon product-metadata record (2018 or 2023 schema) into a silver product row.

Pure per-record functions: no Beam, no I/O. ``clean_product`` is the entry point; each field has one
small helper below, and each rule lives in exactly one of them.

Record level (``clean_product``)
    * not a dict -> rejected, ``reasons.NOT_AN_OBJECT``.
    * the schema (``schema_version``: "2018" or "2023") is read off the record's fields
      (``transforms.schema_versions.product_version``).
    * the product key missing, null, not a string or blank -> rejected, ``reasons.MISSING_ASIN`` (the
      detail names the field). The key is ``asin`` (2018) or ``parent_asin`` (2023: reviews join on
      their ``parent_asin``). It is the only rejecting rule: any other field with an impossible type
      (``title`` a dict, ``category`` a number) becomes null and the record is kept.
    * the key is stripped of surrounding whitespace; ``source``/``source_position`` are copied from
      the arguments.
    * ``_rescued_data``: the fields no rule reads (``schema_versions.rescue_product``: non-empty values
      only, as a JSON object string), else null.

2023 fields, read by the same helpers as their 2018 counterparts:
    ``parent_asin`` -> asin, ``store`` -> brand, ``main_category`` -> main_cat, ``categories`` ->
    categories, ``title``, ``price``; ``images`` -> image_count (``count_image_objects``). There is no
    rank or date field: those columns are null.

Shared text rule (``clean_text``), used by title, brand, main_cat, categories and rank categories
    * not a string -> null; the markup rule every silver text follows (``transforms.text.clean_markup``:
      tags stripped and entities unescaped until nothing changes, so ``&lt;script&gt;`` leaves no
      ``<script>`` and ``&amp;amp;`` resolves; ``<3`` and ``a < b`` are text); whitespace runs
      collapsed to one space and stripped; empty -> null.

Fields
    * ``title`` (``clean_title``): ``clean_text``; then null when what is left is code or a markup
      fragment: CSS (a ``{...:...}`` declaration block), JS (starts with ``var``/``function``/
      ``window.``/``document.``), or the tail of a tag (``" />``, ``'>``).
    * ``brand`` (``clean_brand``): ``clean_text``; a leading ``by`` + whitespace is dropped
      (``"by\\n    \\n    Microsoft"`` -> ``Microsoft``); ``Visit Amazon's X Page`` -> ``X``;
      ``Unknown`` (any case) -> null.
    * ``categories`` (``clean_categories``, from ``category``): not a list -> null; read in order and
      stop at the first entry containing ``</span>`` (the ``</span></span></span>`` sentinel: it and
      everything after it are dropped); non-string entries skipped; each entry ``clean_text``-ed;
      empty entries and entries longer than ``MAX_CATEGORY_CHARS`` (80) dropped; no entry left -> null
      (null means "no categories"; silver never holds an empty list).
    * ``main_cat`` (``clean_main_cat``): an ``<img ... alt="X" ...>`` is replaced by its alt text X
      (so ``<img ... alt="AMAZON FASHION"/>`` -> ``AMAZON FASHION``, case kept); then ``clean_text``;
      when that leaves nothing, the first cleaned category; else null (never an invented "undefined").
    * ``price``/``price_min``/``price_max`` (``parse_price``): a JSON number -> all three equal; a
      string must be exactly ``$x`` or ``$x - $y`` (``-`` or ``–``, optional spaces, ``x`` may have
      thousands separators ``1,299.00``): ``$x`` -> all three ``x``; a range -> min, max and the
      midpoint rounded to 2 decimals. Anything else (``""``, null, booleans, CSS/JS/HTML junk, text
      without a ``$`` amount, negative or non-finite numbers) -> all three null.
    * ``image_count`` (``count_images``): the number of strings starting with ``http`` in the first of
      ``image``, ``imageURLHighRes``, ``imageURL`` that holds at least one such URL; 0 when none does
      (absent, empty, or only junk like ``"88"``). 2023 (``count_image_objects``): the entries of
      ``images`` ({thumb, large, variant, hi_res}) with an ``http`` URL in ``large``, ``hi_res`` or
      ``thumb`` (a plain URL string entry counts too); 0 when none has one.
    * ``rank``/``rank_category`` (``parse_rank``): a string or a list of strings shaped like
      ``">#2,230,717 in Books ("``, ``"2,230,717 in Books ("``,
      ``"#12 in Kindle Store (See Top 100 in Kindle Store)"`` or ``">#1,019 in Gift Cards > Kids"``:
      the number (separators removed) and the text after ``in`` up to the first ``(``, ``clean_text``-ed.
      For a list, the entry with the smallest number (first one on ties). A number below 1 or above
      the int64 range, or no category, makes an entry unparseable; nothing parseable -> both null.
    * ``date_first_available`` (``parse_date``, from ``date``): ``"March 4, 2014"``, ``"Mar 4, 2014"``,
      ``"Sept 5, 2012"`` (English month names, parsed without the locale) -> a ``datetime.date``;
      impossible dates, HTML and anything else -> null.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any

from transforms import reasons
from transforms import schema_versions as sv
from transforms.text import clean_markup

MAX_CATEGORY_CHARS = 80
CATEGORY_SENTINEL = "</span>"
_INT64_MAX = 2**63 - 1

_WHITESPACE = re.compile(r"\s+")

_CSS_BLOCK = re.compile(r"\{[^{}]*:[^{}]*\}")
_JS_START = re.compile(r"(?:var|function)\s|(?:window|document)\.")
_TAG_TAIL = re.compile(r"[\"'](?:\s*/>|>)")

_BRAND_BY = re.compile(r"^by\s+", re.IGNORECASE)
_BRAND_VISIT = re.compile(r"Visit Amazon['’]s (.+) Page", re.IGNORECASE)

_IMG_ALT = re.compile(r"""<img\b[^>]*?\balt\s*=\s*(?:"([^"]*)"|'([^']*)')[^>]*>""", re.IGNORECASE)

_AMOUNT = r"\$\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_PRICE = re.compile(rf"{_AMOUNT}(?:\s*[-–]\s*{_AMOUNT})?")

_RANK = re.compile(r">?\s*#?\s*(\d[\d,]{0,30})\s+in\s+([^(]*)")

_DATE = re.compile(r"([A-Za-z]+)\.?\s+(\d{1,2}),?\s+(\d{4})")
_MONTHS = {
    name: number
    for number, full in enumerate(
        ("january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"), start=1)
    for name in (full, full[:3])
}
_MONTHS["sept"] = 9

Price = tuple[float | None, float | None, float | None]
_NO_PRICE: Price = (None, None, None)


# --- text helpers -------------------------------------------------------------------------------

def clean_text(value: object) -> str | None:
    """The markup rule, then whitespace collapsed; null for non-strings and empty results."""
    if not isinstance(value, str):
        return None
    text = _WHITESPACE.sub(" ", clean_markup(value)).strip()
    return text or None


def looks_like_code(text: str) -> bool:
    """True for CSS (a ``{prop: value}`` block), JS (``var x``, ``function f``) or a tag's tail (``" />``)."""
    return bool(_CSS_BLOCK.search(text) or _JS_START.match(text) or _TAG_TAIL.search(text))


# --- fields -------------------------------------------------------------------------------------

def clean_asin(asin: object) -> str | None:
    """The stripped ASIN, or null when it is not a non-blank string."""
    if not isinstance(asin, str):
        return None
    return asin.strip() or None


def clean_title(title: object) -> str | None:
    """Cleaned title text; null when empty or when only code/markup is left."""
    text = clean_text(title)
    if text is None or looks_like_code(text):
        return None
    return text


def clean_brand(brand: object) -> str | None:
    """Cleaned brand: ``by X`` and ``Visit Amazon's X Page`` -> ``X``; ``Unknown`` -> null."""
    text = clean_text(brand)
    if text is None:
        return None
    text = _BRAND_BY.sub("", text, count=1)
    visit = _BRAND_VISIT.fullmatch(text)
    if visit:
        text = visit.group(1).strip()
    if not text or text.casefold() == "unknown":
        return None
    return text


def clean_categories(category: object) -> list[str] | None:
    """Cleaned category breadcrumb up to the ``</span>`` sentinel; null when nothing is left."""
    if not isinstance(category, list):
        return None
    categories = []
    for entry in category:
        if not isinstance(entry, str):
            continue
        if CATEGORY_SENTINEL in entry:
            break
        text = clean_text(entry)
        if text is not None and len(text) <= MAX_CATEGORY_CHARS:
            categories.append(text)
    return categories or None


def clean_main_cat(main_cat: object, categories: list[str] | None) -> str | None:
    """Cleaned main category (an ``<img>`` gives its alt text), else the first category, else null."""
    text = None
    if isinstance(main_cat, str):
        text = clean_text(_IMG_ALT.sub(lambda m: f" {m.group(1) or m.group(2) or ''} ", main_cat))
    if text is None and categories:
        text = categories[0]
    return text


def _valid_price(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _amount(text: str) -> float:
    return float(text.replace(",", ""))


def parse_price(price: object) -> Price:
    """``(price, price_min, price_max)`` from a JSON number, ``"$x"`` or ``"$x - $y"``; else all null."""
    if isinstance(price, (int, float)) and not isinstance(price, bool):
        try:
            value = float(price)
        except OverflowError:  # an int beyond the float range
            return _NO_PRICE
        return (value, value, value) if _valid_price(value) else _NO_PRICE
    if not isinstance(price, str):
        return _NO_PRICE
    match = _PRICE.fullmatch(price.strip())
    if match is None:
        return _NO_PRICE
    low = _amount(match.group(1))
    high = _amount(match.group(2)) if match.group(2) else low
    low, high = min(low, high), max(low, high)
    if not (_valid_price(low) and _valid_price(high)):
        return _NO_PRICE
    value = low if low == high else round((low + high) / 2, 2)
    return value, low, high


def count_images(*image_lists: object) -> int:
    """URL count (strings starting with ``http``) of the first list that holds at least one URL."""
    for images in image_lists:
        if isinstance(images, list):
            count = sum(1 for image in images if isinstance(image, str) and image.startswith("http"))
            if count:
                return count
    return 0


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith("http")


def count_image_objects(images: object) -> int:
    """2023 ``images``: entries with an http URL in ``large``, ``hi_res`` or ``thumb`` (or a URL string)."""
    if not isinstance(images, list):
        return 0
    return sum(1 for image in images
               if _is_url(image) or (isinstance(image, dict)
                                     and any(_is_url(image.get(k)) for k in ("large", "hi_res", "thumb"))))


def _parse_rank_entry(entry: object) -> tuple[int, str] | None:
    if not isinstance(entry, str):
        return None
    match = _RANK.match(entry.strip())
    if match is None:
        return None
    number = int(match.group(1).replace(",", ""))
    category = clean_text(match.group(2))
    if not 1 <= number <= _INT64_MAX or category is None:
        return None
    return number, category


def parse_rank(rank: object) -> tuple[int | None, str | None]:
    """``(rank, rank_category)`` from one rank string or the best (smallest) of a list; else nulls."""
    entries = rank if isinstance(rank, list) else [rank]
    parsed = [p for p in map(_parse_rank_entry, entries) if p is not None]
    if not parsed:
        return None, None
    return min(parsed, key=lambda p: p[0])


def parse_date(date: object) -> datetime.date | None:
    """``"March 4, 2014"`` / ``"Mar 4, 2014"`` -> a date (English months, locale-free); else null."""
    if not isinstance(date, str):
        return None
    match = _DATE.fullmatch(date.strip())
    if match is None:
        return None
    month = _MONTHS.get(match.group(1).lower())
    if month is None:
        return None
    try:
        return datetime.date(int(match.group(3)), month, int(match.group(2)))
    except ValueError:
        return None


# --- record -------------------------------------------------------------------------------------

def _describe(record: dict[str, Any], field: str) -> str:
    """Why a required field is unusable, for the dead letter's ``detail``."""
    if field not in record:
        return f"{field}: missing"
    value = record[field]
    if value is None:
        return f"{field}: null"
    if isinstance(value, str):
        return f"{field}: blank"
    return f"{field}: {type(value).__name__}"


def clean_product(record: object, source: str, position: int,
                  line: bytes | None = None) -> tuple[dict | None, str | None, str | None]:
    """-> ``(row, None, None)`` for a good record, or ``(None, reason, detail)`` for a rejected one.

    The row has exactly the columns of ``SILVER_PRODUCT_SCHEMA``, in that order. ``line``, the record's
    raw JSON when given, is read again for the rescued fields only, so that integers beyond 64 bits
    (which orjson reads as floats) are rescued exactly.
    """
    if not isinstance(record, dict):
        return None, reasons.NOT_AN_OBJECT, type(record).__name__
    version = sv.product_version(sv.present_fields(record))
    newer = version == sv.V2023
    key = "parent_asin" if newer else "asin"
    asin = clean_asin(record.get(key))
    if asin is None:
        return None, reasons.MISSING_ASIN, _describe(record, key)
    categories = clean_categories(record.get("categories" if newer else "category"))
    price, price_min, price_max = parse_price(record.get("price"))
    rank, rank_category = (None, None) if newer else parse_rank(record.get("rank"))
    row = {
        "asin": asin,
        "title": clean_title(record.get("title")),
        "brand": clean_brand(record.get("store" if newer else "brand")),
        "main_cat": clean_main_cat(record.get("main_category" if newer else "main_cat"), categories),
        "categories": categories,
        "price": price,
        "price_min": price_min,
        "price_max": price_max,
        "image_count": count_image_objects(record.get("images")) if newer else
        count_images(record.get("image"), record.get("imageURLHighRes"), record.get("imageURL")),
        "rank": rank,
        "rank_category": rank_category,
        "date_first_available": None if newer else parse_date(record.get("date")),
        "schema_version": version,
        "_rescued_data": _rescued(record, version, line),
        "source": source,
        "source_position": position,
    }
    return row, None, None


def _rescued(record: dict, version: str, line: bytes | None) -> str | None:
    text = sv.rescue_product(record, version)
    if text is not None and line is not None:
        try:
            exact = sv.loads_exact(line)
        except ValueError:
            return text
        if isinstance(exact, dict):
            return sv.rescue_product(exact, version)
    return text
