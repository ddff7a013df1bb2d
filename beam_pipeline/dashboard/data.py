"""The dashboard's data layer: tables looked up by name, read at the last committed run's versions,
aggregated here into small JSON-able dicts, cached per table version.

Nothing in this module knows HTML. Every answer is plain data (numbers, strings, lists); the page builds
its DOM from it with ``textContent`` only.

Where numbers come from:

* **No filter**: the gold tables' all-time rows (``window_start`` null), which the job keeps current.
  A first view reads only gold (small tables) plus the event log.
* **A filter** (time range, main category, brand, verified only): the review charts are computed from
  ``silver/reviews`` (the columns they need, read once per silver version and kept in memory), with the
  same rules the gold families use (``transforms.labels`` for sentiment, ``transforms.gold.length_bucket``),
  so an unfiltered silver aggregate equals the gold all-time rows (tested). The rankings (top words,
  summaries, reviewer names, top and bottom products and brands by rating) are the job's own families
  computed over the filtered rows (``transforms.gold``: ``review_facts``, ``partials``, ``finalize``), so
  they are filtered too; the metadata charts honour main category and brand (``silver/products``).
  Tables with none of the filters' columns (gold families this module does not know) stay all time and
  say so.

Tables written by other parts of the project (insights, recommendations, gold families added later) are
looked up by name: present -> shown; absent -> a ``missing`` note saying what writes them. Gold families
this module does not know are listed and shown generically.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipeline import checkpoints, tables
from transforms import gold as gold_rules
from transforms import labels

LOG = logging.getLogger("reviews.dashboard")

GOLD, INSIGHTS = "gold", "insights"
RECENT_BRANDS = f"{INSIGHTS}/recent_brands"
# trending kind -> (table, key column, daily gold family that holds its count series)
TRENDING = {"products": (f"{INSIGHTS}/trending_products", "asin", "daily_products"),
            "brands": (f"{INSIGHTS}/trending_brands", "brand", "daily_brands"),
            "main_cats": (f"{INSIGHTS}/trending_main_cats", "main_cat", "daily_main_cats")}
RECOMMENDATIONS_TABLE = "recommendations"
FILTERS = ("time", "main_cat", "brand", "verified")
ALL_FILTERS = list(FILTERS)
SILVER_COLUMNS = ["reviewer_id", "asin", "overall", "verified", "unix_review_time", "year", "month", "brand",
                  "main_cat", "price", "review_length_words", "predicted_sentiment", "reviewer_name", "summary"]
PRODUCT_COLUMNS = ["asin", "brand", "main_cat", "image_count", "categories"]
RUN_BATCH = "run the batch job (python -m beam_pipeline --source=files --reviews=... --output=ROOT)"
RUN_INSIGHTS = ("not computed yet: run the batch or streaming job with its insights on (a version of the job "
                "that writes {table}; --insights is the default there) on this output")
RUN_SCORED = ("not computed yet: run the batch job with --sentiment_model=MODEL (make run writes "
              "out/batch_scored)")
RUN_RECOMMEND = ("not computed yet: run python -m training.recommend (it exports the table "
                 "'recommendations' under {path}), or point --recommendations at its output")
TOP_BRANDS = 25
TREND_SPARK_DAYS = 14


class NoTables(RuntimeError):
    """An output root with no tables of the job."""


# ------------------------------------------------------------------------------------------ JSON helpers

def py(v):
    """One Arrow / numpy / Python value -> a JSON-safe Python value (NaN -> None, times -> ISO text)."""
    if isinstance(v, pa.Scalar):
        v = v.as_py()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [py(x) for x in v]
    if isinstance(v, dict):
        return {str(k): py(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    return v


def rows(table, columns=None):
    """Arrow table -> list of lists (JSON-safe), columns in the given order."""
    columns = columns or table.column_names
    cols = [table[c].to_pylist() for c in columns]
    return [[py(c[i]) for c in cols] for i in range(table.num_rows)]


def missing(note):
    return {"kind": "missing", "note": note}


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def parse_filters(query):
    """Query parameters -> the normalised filter dict ({} = no filter). ``from``/``to``: ISO dates
    (inclusive days, UTC); ``main_cat``/``brand``: exact values; ``verified``: 1."""
    f = {}
    for key in ("from", "to"):
        value = (query.get(key) or "").strip()
        if value:
            try:
                day = datetime.date.fromisoformat(value)
            except ValueError as err:
                raise ValueError(f"{key}={value!r} is not a date (YYYY-MM-DD)") from err
            f[key] = day.isoformat()
    if "from" in f and "to" in f and f["from"] > f["to"]:
        raise ValueError(f"the time range is empty: from {f['from']} is after to {f['to']}")
    for key in ("main_cat", "brand"):
        value = query.get(key)
        if value not in (None, ""):
            f[key] = value
    if (query.get("verified") or "") in ("1", "true", "yes", "on"):
        f["verified"] = True
    return f


def filter_names(f):
    out = []
    if "from" in f or "to" in f:
        out.append("time")
    out += [k for k in ("main_cat", "brand", "verified") if k in f]
    return out


# ------------------------------------------------------------------------------------------ one output root

class Root:
    """One output root: its tables at the last committed run's versions, and a cache per table version.

    Thread-safe: the server answers requests on threads; reads of the same table version are shared."""

    def __init__(self, path, name=None, recommendations=None):
        self.path = path
        self.name = name or path
        self.loc = tables.Location(path)
        self.rec_path = recommendations or tables.io.join(self.loc.root, "recommendations")
        self._lock = threading.RLock()
        self._cache: dict = {}
        self._state = None       # (events version, snapshot dict)
        self._checked = 0.0

    # --- versions and listing -------------------------------------------------------------------------

    def _events_version(self):
        return tables.table_version(self.loc, tables.EVENTS)

    def state(self, max_age_s=0.5):
        """(events version, {"versions": {table: version}, "events": [...], "tables": [...]}), re-read when
        the event log has a new version (checked at most every ``max_age_s``)."""
        with self._lock:
            now = time.monotonic()
            if self._state is not None and now - self._checked < max_age_s:
                return self._state
            version = self._events_version()
            self._checked = now
            if self._state is not None and self._state[0] == version:
                return self._state
            events = tables.events(self.loc) if version is not None else []
            versions = {}
            for r in events:
                if r["event"] == "committed" and r["table_versions"]:
                    versions.update(json.loads(r["table_versions"]))
            present = set(tables.all_tables(self.loc))
            snap = {"versions": versions, "events": events, "tables": sorted(present)}
            self._state = (version, snap)
            # drop cached reads of versions no longer current (keeps memory flat while a stream commits)
            self._cache = {k: v for k, v in self._cache.items()
                           if k[0] == "rec" or k[1] == versions.get(k[0], k[1]) and k[0] in present}
            return self._state

    def version(self):
        return self.state()[0]

    def has(self, rel):
        return rel in self.state()[1]["tables"]

    def gold_families(self):
        prefix = GOLD + "/"
        return sorted(t[len(prefix):] for t in self.state()[1]["tables"] if t.startswith(prefix))

    def table_version(self, rel):
        """The version a reader should use: the last committed run's, else the latest (a table written
        outside the event log, for example by an older or newer tool); None when absent."""
        _, snap = self.state()
        if rel in snap["versions"]:
            return snap["versions"][rel]
        if rel in snap["tables"]:
            return tables.table_version(self.loc, rel)
        return None

    def _cached(self, key, build):
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = build()
        with self._lock:
            self._cache[key] = value
        return value

    def read(self, rel, columns=None, alltime=False):
        """Table ``rel`` at its current version as Arrow (only ``columns``; ``alltime``: only the rows whose
        window_start is null); None when absent. Cached per version."""
        version = self.table_version(rel)
        if version is None:
            return None
        key = (rel, version, tuple(columns) if columns else None, alltime)

        def build():
            t = tables.open_table(self.loc, rel, version)
            if t is None:
                return None
            ds = plain_dataset(t)
            names = ds.schema.names
            cols = [c for c in columns if c in names] if columns else None
            flt = None
            if alltime and "window_start" in names:
                import pyarrow.dataset as pds
                flt = pds.field("window_start").is_null()
            return ds.to_table(columns=cols, filter=flt)
        return self._cached(key, build)

    def derived(self, name, rels, build):
        """A value computed from tables ``rels``, cached until one of their versions changes."""
        key = ("derived:" + name, tuple(self.table_version(r) for r in rels))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = build()
        with self._lock:
            self._cache[key] = value
        return value

    # --- recommendations (a folder of Delta tables outside the event log) ----------------------------

    def recommendations(self):
        """The exported recommendations table (latest version) or None."""
        path = tables.io.join(self.rec_path, RECOMMENDATIONS_TABLE)
        dl = tables._deltalake()
        opts = self.loc.storage_options if self.loc.azure else None
        uri = path
        if self.loc.azure and path.startswith("azfs://"):
            uri = tables.Location(self.rec_path).uri(RECOMMENDATIONS_TABLE)
        if not dl.DeltaTable.is_deltatable(uri, storage_options=opts):
            return None
        t = dl.DeltaTable(uri, storage_options=opts)
        key = ("rec", t.version())
        return self._cached(key, lambda: tables.arrow_of(t))

    def recommendations_version(self):
        path = tables.io.join(self.rec_path, RECOMMENDATIONS_TABLE)
        if self.loc.azure:
            return None
        log = os.path.join(path, "_delta_log")
        if not os.path.isdir(log):
            return None
        names = [n for n in os.listdir(log) if n.endswith(".json") and n[:-5].isdigit()]
        return max((int(n[:-5]) for n in names), default=None)


def plain_dataset(delta_table):
    """``beam_pipeline.tables.plain_dataset``: the files without delta-rs's statistics expressions."""
    return tables.plain_dataset(delta_table)


def check_root(root):
    """Raise NoTables with a clear message when ``root`` holds none of the job's tables."""
    present = root.state()[1]["tables"]
    if not present:
        raise NoTables(f"{root.path}: no Delta tables of the job here (no */_delta_log). Run the job first, "
                       f"e.g. `make run` (writes out/batch) or python -m beam_pipeline --output={root.path} ...")
    return present


# ------------------------------------------------------------------------------------------ silver, cached

def _silver(root):
    """The silver columns the filtered charts need, with sentiment and length bucket added; cached."""
    def build():
        t = root.read(tables.SILVER_REVIEWS, SILVER_COLUMNS)
        if t is None:
            return None
        t = t.combine_chunks()
        t = t.append_column("sentiment", labels.sentiment(t["overall"]))
        t = t.append_column("length_bucket", gold_rules.length_bucket(t["review_length_words"]))
        return t
    return root.derived("silver", [tables.SILVER_REVIEWS], build)


def _distinct_ids(root):
    t = root.read(tables.SILVER_REVIEWS, ["reviewer_id", "asin"])
    if t is None:
        return None
    return pc.count_distinct(t["reviewer_id"]).as_py(), pc.count_distinct(t["asin"]).as_py()


def _silver_mask(t, f):
    mask = None

    def both(m):
        return m if mask is None else pc.and_(mask, m)
    if "from" in f:
        start = int(datetime.datetime.fromisoformat(f["from"]).replace(tzinfo=datetime.timezone.utc).timestamp())
        mask = both(pc.greater_equal(t["unix_review_time"], start))
    if "to" in f:
        end = int(datetime.datetime.fromisoformat(f["to"]).replace(tzinfo=datetime.timezone.utc).timestamp()) + 86400
        mask = both(pc.less(t["unix_review_time"], end))
    for key in ("main_cat", "brand"):
        if key in f:
            mask = both(pc.equal(t[key], f[key]))
    if f.get("verified"):
        mask = both(pc.equal(t["verified"], True))
    return mask


def filtered_silver(root, f):
    t = _silver(root)
    if t is None:
        return None
    mask = _silver_mask(t, f)
    return t if mask is None else t.filter(pc.fill_null(mask, False))


def ranking(facts, name, min_reviews=None):
    """Gold family ``name`` (a ranking: top words, summaries, names, rating extremes, or a product family)
    over the given fact rows (``transforms.gold.review_facts`` / ``product_facts``), by the job's own rule:
    its partial, then ``finalize``, as the job publishes it when these rows are all it has seen."""
    family = gold_rules.family(name, min_reviews=min_reviews)
    partial = gold_rules.partials(facts, None, family.source, [family])[name]
    return gold_rules.finalize(family, partial)


def run_option(root, name, default=None):
    """An option of the last committed run that recorded it in its summary (``summary["options"]``)."""
    for r in reversed(root.state()[1]["events"]):
        if r["event"] == "committed" and r["summary"]:
            options = json.loads(r["summary"]).get("options") or {}
            if name in options:
                return options[name]
    return default


def filtered_products(root, f):
    """silver/products rows (``PRODUCT_COLUMNS``) with the filters metadata has (main category, brand)."""
    p = root.derived("products", [tables.SILVER_PRODUCTS],
                     lambda: root.read(tables.SILVER_PRODUCTS, PRODUCT_COLUMNS))
    if p is None:
        return None
    for key in ("main_cat", "brand"):
        if key in f:
            p = p.filter(pc.fill_null(pc.equal(p[key], f[key]), False))
    return p


def _group_count(t, keys, extra=()):
    """group_by keys -> table with n (count) and the extra aggregations [(col, op, name)]."""
    aggs = [([], "count_all")] + [(c, op) for c, op, _ in extra]
    out = t.group_by(list(keys), use_threads=False).aggregate(aggs)
    rename = {"count_all": "n"} | {f"{c}_{op}": name for c, op, name in extra}
    return out.rename_columns([rename.get(c, c) for c in out.column_names])


# ------------------------------------------------------------------------------------------ charts

def _sorted(t, keys):
    return t.sort_by([(k, "ascending") for k in keys]) if t.num_rows else t


def _label(v):
    if v is None:
        return "(none)"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _bars(labels_, series, **extra):
    return {"kind": "bars", "labels": [_label(x) for x in labels_],
            "series": [{"name": n, "values": [py(v) for v in vals]} for n, vals in series], **extra}


def _pivot(t, row_key, col_key, value, col_order=None):
    """Long table -> (row labels, [(column label, values per row)])."""
    rk = t[row_key].to_pylist()
    ck = t[col_key].to_pylist()
    vs = t[value].to_pylist()
    row_labels = sorted(set(rk), key=lambda x: (x is None, x))
    cols = col_order or sorted(set(ck), key=lambda x: (x is None, x))
    idx = {r: i for i, r in enumerate(row_labels)}
    data = {c: [0] * len(row_labels) for c in cols}
    for r, c, v in zip(rk, ck, vs):
        if c in data:
            data[c][idx[r]] += v or 0
    return row_labels, [(_label(c), data[c]) for c in cols]


SENTIMENTS = list(labels.CLASSES)


def _with_mean(t, n="n", total="sum_overall", name="mean_overall"):
    if name in t.column_names:
        return t
    mean = pc.divide(pc.cast(t[total], pa.float64()), pc.cast(t[n], pa.float64()))
    return t.append_column(name, mean)


class Insights:
    """The review-insight charts of one root for one filter (``filters`` dict from ``parse_filters``)."""

    def __init__(self, root, f):
        self.root = root
        self.f = f
        self.active = filter_names(f)
        self.silver = filtered_silver(root, f) if f else None
        self._facts = None      # the filtered rows as the gold families see them, made once when a ranking needs them

    def _src(self, table, honours=ALL_FILTERS, note=None):
        """Source description of a chart: where it comes from and which filters it honours."""
        applied = [x for x in self.active if x in honours]
        ignored = [x for x in self.active if x not in honours]
        return {"source": table, "honours": list(honours), "applied": applied, "ignored": ignored,
                **({"note": note} if note else {})}

    def _gold(self, family, columns=None):
        return self.root.read(f"{GOLD}/{family}", columns, alltime=True)

    def _from_silver(self):
        return self.silver is not None

    def _ranking(self, family):
        """(table, source) of a ranking family: the gold table when no filter is set, else the job's rule
        over the filtered silver rows; (None, None) when the job did not compute the family."""
        g = self._gold(family)
        if g is None or not self._from_silver():
            return g, self._src(f"{GOLD}/{family}")
        if not self.silver.num_rows:
            return g.slice(0, 0), self._src("silver/reviews")
        if self._facts is None:
            self._facts = gold_rules.review_facts(self.silver)
        min_reviews = run_option(self.root, "rating_min_reviews")
        return ranking(self._facts, family, min_reviews), self._src("silver/reviews")

    # each chart method returns a chart dict (with "id", "title")

    def kpis(self):
        items = []
        src = []
        if self._from_silver():
            s = self.silver
            n = s.num_rows
            mean = pc.mean(s["overall"]).as_py() if n else None
            items += [("reviews", n), ("mean rating", mean),
                      ("distinct reviewers", pc.count_distinct(s["reviewer_id"]).as_py()),
                      ("distinct products", pc.count_distinct(s["asin"]).as_py())]
            src.append(self._src("silver/reviews"))
        else:
            g = self._gold("reviews")
            if g is None:
                return {"id": "kpis", "title": "Totals", **missing("gold/reviews is missing: " + RUN_BATCH)}
            items += [("reviews", g["n_reviews"][0].as_py() if g.num_rows else 0),
                      ("mean rating", g["mean_overall"][0].as_py() if g.num_rows else None)]
            src.append(self._src("gold/reviews"))
            d = self._gold("distinct_counts")
            if d is not None and d.num_rows:
                items += [("distinct reviewers", d["n_reviewers"][0].as_py()),
                          ("distinct products", d["n_products"][0].as_py())]
                src.append(self._src("gold/distinct_counts"))
            else:   # two columns of silver, counted once per silver version
                ids = self.root.derived("distinct", [tables.SILVER_REVIEWS], lambda: _distinct_ids(self.root))
                if ids is not None:
                    items += [("distinct reviewers", ids[0]), ("distinct products", ids[1])]
                    src.append(self._src("silver/reviews", note="gold/distinct_counts not computed yet: counted "
                                                                "from silver"))
        p = self._products_by_main_cat_table()
        if p is not None:
            n_products = int(pc.sum(p["n_products"]).as_py() or 0)
            images = pc.sum(p["sum_image_count"]).as_py() or 0
            items += [("products in metadata", n_products),
                      ("images per product", images / n_products if n_products else None)]
        return {"id": "kpis", "title": "Totals", "kind": "kpis",
                "items": [{"label": k, "value": py(v)} for k, v in items], "sources": src,
                **self._src(", ".join(s["source"] for s in src))}

    def by_rating(self):
        if self._from_silver():
            t = _group_count(self.silver, ["overall"])
            src = self._src("silver/reviews")
        else:
            g = self._gold("reviews_by_rating")
            if g is None:
                return {"id": "by_rating", "title": "Reviews by rating", **missing("gold/reviews_by_rating: " + RUN_BATCH)}
            t, src = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names]), self._src(
                "gold/reviews_by_rating")
        t = _sorted(t, ["overall"])
        total = sum(t["n"].to_pylist()) or 1
        return {"id": "by_rating", "title": "Reviews by rating (stars)",
                **_bars(t["overall"].to_pylist(), [("reviews", t["n"].to_pylist())],
                        shares=[v / total for v in t["n"].to_pylist()]), **src}

    def rating_verified(self):
        if self._from_silver():
            t, src = _group_count(self.silver, ["overall", "verified"]), self._src("silver/reviews")
        else:
            t = self._gold("reviews_by_rating_verified")
            if t is None:
                return {"id": "rating_verified", "title": "Rating x verified purchase",
                        **missing("gold/reviews_by_rating_verified: " + RUN_BATCH)}
            t, src = t.rename_columns(["n" if c == "n_reviews" else c for c in t.column_names]), self._src(
                "gold/reviews_by_rating_verified")
        rl, series = _pivot(t, "overall", "verified", "n", col_order=[True, False, None])
        series = [(name, v) for name, v in series if any(v)]
        names = {"True": "verified", "False": "not verified", "(none)": "unknown"}
        return {"id": "rating_verified", "title": "Reviews by rating x verified purchase",
                **_bars(rl, [(names.get(n, n), v) for n, v in series], stacked=True), **src}

    def _by_month(self):
        """(table year, month, n, sum_overall, source)."""
        if self._from_silver():
            s = self.silver
            return _group_count(s, ["year", "month"], [("overall", "sum", "sum_overall")]), self._src("silver/reviews")
        g = self._gold("reviews_by_month")
        if g is not None:
            return g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names]), self._src(
                "gold/reviews_by_month")
        def build():
            s = self.root.read(tables.SILVER_REVIEWS, ["year", "month", "overall"])
            return None if s is None else _group_count(s, ["year", "month"], [("overall", "sum", "sum_overall")])
        t = self.root.derived("by_month", [tables.SILVER_REVIEWS], build)
        if t is None:
            return None, None
        return t, self._src("silver/reviews", note="gold/reviews_by_month not computed yet: counted from silver")

    def per_year_month(self):
        t, src = self._by_month()
        if t is None:
            return [{"id": "per_year", "title": "Reviews per year", **missing(RUN_BATCH)}]
        t = _sorted(t, ["year", "month"])
        years = {}
        for y, n, s in zip(t["year"].to_pylist(), t["n"].to_pylist(), t["sum_overall"].to_pylist()):
            a = years.setdefault(y, [0, 0.0])
            a[0] += n
            a[1] += s or 0
        ys = sorted(k for k in years if k is not None)
        per_year = {"id": "per_year", "title": "Reviews per year",
                    **_bars(ys, [("reviews", [years[y][0] for y in ys])]), **src}
        mean_year = {"id": "mean_per_year", "title": "Mean rating per year", "kind": "line",
                     "labels": [str(y) for y in ys],
                     "series": [{"name": "mean rating", "values": [years[y][1] / years[y][0] if years[y][0] else None
                                                                    for y in ys]}], "y_min": 1, "y_max": 5, **src}
        months = [(y, m, n, s) for y, m, n, s in zip(t["year"].to_pylist(), t["month"].to_pylist(),
                                                     t["n"].to_pylist(), t["sum_overall"].to_pylist())
                  if y is not None and m is not None]
        per_month = {"id": "per_month", "title": "Reviews and mean rating per month", "kind": "line",
                     "labels": [f"{y:04d}-{m:02d}" for y, m, _, _ in months],
                     "series": [{"name": "reviews", "values": [n for *_, n, _ in months]}],
                     "series2": {"name": "mean rating", "values": [s / n if n else None for *_, n, s in months]},
                     **src}
        return [per_year, mean_year, per_month]

    def sentiment(self):
        out = []
        if self._from_silver():
            t, src = _group_count(self.silver, ["sentiment"]), self._src("silver/reviews")
        else:
            g = self._gold("sentiment_by_year")
            if g is None:
                return [{"id": "sentiment", "title": "Sentiment", **missing("gold/sentiment_by_year: " + RUN_BATCH)}]
            t = g.group_by(["sentiment"]).aggregate([("n_reviews", "sum")]).rename_columns(["sentiment", "n"])
            src = self._src("gold/sentiment_by_year")
        counts = dict(zip(t["sentiment"].to_pylist(), t["n"].to_pylist()))
        total = sum(counts.values())
        rated = [counts.get(s, 0) for s in SENTIMENTS]
        predicted_note, pred = None, None
        if self._from_silver():
            p = self.silver.filter(pc.is_valid(self.silver["predicted_sentiment"]))
            if p.num_rows:
                pt = _group_count(p, ["predicted_sentiment"])
                pred = dict(zip(pt["predicted_sentiment"].to_pylist(), pt["n"].to_pylist()))
        else:
            g = self._gold("predicted_sentiment")
            if g is not None and g.num_rows:
                pred = dict(zip(g["predicted_sentiment"].to_pylist(), g["n_reviews"].to_pylist()))
        if pred is None:
            predicted_note = RUN_SCORED
        both = src if pred is None or self._from_silver() else {
            **src, "source": src["source"] + ", gold/predicted_sentiment"}
        ptotal = sum(v for v in (pred or {}).values() if v) or 0
        tbl_rows = []
        for s, n in zip(SENTIMENTS, rated):
            row = [s, n, n / total if total else None]
            if pred is not None:
                pn = pred.get(s, 0)
                row += [pn, pn / ptotal if ptotal else None]
            tbl_rows.append(row)
        tbl_rows.append(["total", total, 1.0 if total else None] + ([ptotal, 1.0 if ptotal else None]
                                                                      if pred is not None else []))
        columns = ["sentiment", "reviews (from rating)", "share"]
        if pred is not None:
            columns += ["reviews (model)", "share (model)"]
        out.append({"id": "sentiment_table", "title": "Sentiment: from the rating and from the model",
                    "kind": "table", "columns": columns, "rows": tbl_rows,
                    "formats": ["text", "int", "pct", "int", "pct"],
                    **({"missing_note": predicted_note} if predicted_note else {}), **both})
        series = [("from rating", rated)]
        if pred is not None:
            series.append(("from model", [pred.get(s, 0) for s in SENTIMENTS]))
        out.append({"id": "sentiment", "title": "Sentiment counts, side by side",
                    **_bars(SENTIMENTS, series), **both})
        # per year by sentiment
        if self._from_silver():
            ty = _group_count(self.silver, ["year", "sentiment"])
        else:
            ty = self._gold("sentiment_by_year").rename_columns(
                ["n" if c == "n_reviews" else c for c in self._gold("sentiment_by_year").column_names])
        yl, ys = _pivot(ty, "year", "sentiment", "n", col_order=SENTIMENTS)
        out.append({"id": "sentiment_by_year", "title": "Reviews per year by sentiment",
                    **_bars(yl, ys, stacked=True), **src})
        return out

    def length_sentiment(self):
        order = [name for _, name in gold_rules.LENGTH_BUCKETS]
        if self._from_silver():
            t, src = _group_count(self.silver, ["length_bucket", "sentiment"]), self._src("silver/reviews")
        else:
            g = self._gold("length_by_sentiment")
            if g is None:
                return {"id": "length_sentiment", "title": "Review length vs sentiment",
                        **missing("gold/length_by_sentiment: " + RUN_BATCH)}
            t = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names])
            src = self._src("gold/length_by_sentiment")
        _, series = _pivot(t, "length_bucket", "sentiment", "n", col_order=SENTIMENTS)
        rl = sorted(set(t["length_bucket"].to_pylist()), key=lambda x: (x is None, x))
        pos = {b: i for i, b in enumerate(rl)}
        labels_ = [b for b in order if b in pos]
        series = [(name, [vals[pos[b]] for b in labels_]) for name, vals in series]
        # shares within each length bucket, so long and short reviews compare
        totals = [sum(v[i] for _, v in series) for i in range(len(labels_))]
        return {"id": "length_sentiment", "title": "Review length (words) vs sentiment",
                **_bars(labels_, series, stacked=True, totals=totals), **src}

    def verified_sentiment(self):
        if self._from_silver():
            t, src = _group_count(self.silver, ["verified", "sentiment"]), self._src("silver/reviews")
        else:
            g = self._gold("verified_by_sentiment")
            if g is None:
                return {"id": "verified_sentiment", "title": "Verified purchase vs sentiment",
                        **missing("gold/verified_by_sentiment: " + RUN_BATCH)}
            t = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names])
            src = self._src("gold/verified_by_sentiment")
        rl, series = _pivot(t, "verified", "sentiment", "n", col_order=SENTIMENTS)
        names = {True: "verified", False: "not verified", None: "unknown"}
        return {"id": "verified_sentiment", "title": "Verified purchase vs sentiment",
                **_bars([names[r] for r in rl], series, stacked=True), **src}

    def _products_by_main_cat_table(self):
        """(main_cat, n_products, sum_image_count) of product metadata, filtered by main_cat / brand."""
        f = {k: v for k, v in self.f.items() if k in ("main_cat", "brand")}
        if "brand" in f:
            p = filtered_products(self.root, f)
            if p is None:
                return None
            return _group_count(p, ["main_cat"], [("image_count", "sum", "sum_image_count")]).rename_columns(
                ["main_cat", "n_products", "sum_image_count"])
        g = self._gold("products_by_main_cat")
        if g is None:
            return None
        if "main_cat" in f:
            g = g.filter(pc.fill_null(pc.equal(g["main_cat"], f["main_cat"]), False))
        return g

    def main_cats(self):
        out = []
        if self._from_silver():
            s = self.silver
            t = _group_count(s, ["main_cat"], [("overall", "sum", "sum_overall"), ("asin", "count_distinct", "n_products")])
            src = self._src("silver/reviews")
        else:
            g = self._gold("reviews_by_main_cat")
            if g is None:
                return [{"id": "main_cats", "title": "Reviews by main category",
                         **missing("gold/reviews_by_main_cat: " + RUN_BATCH)}]
            t = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names])
            src = self._src("gold/reviews_by_main_cat")
        t = _with_mean(t)
        t = t.sort_by([("n", "descending"), ("main_cat", "ascending")])
        out.append({"id": "main_cats", "title": "Reviews and reviewed products by main category", "kind": "hbars",
                    "labels": [_label(x) for x in t["main_cat"].to_pylist()],
                    "series": [{"name": "reviews", "values": t["n"].to_pylist()},
                               {"name": "products reviewed", "values": t["n_products"].to_pylist()}],
                    "extra": {"mean rating": [py(x) for x in t["mean_overall"].to_pylist()]}, **src})
        p = self._products_by_main_cat_table()
        if p is None:
            out.append({"id": "products_main_cat", "title": "Products and images per main category (metadata)",
                        **missing("gold/products_by_main_cat: " + RUN_BATCH)})
        else:
            p = p.sort_by([("n_products", "descending"), ("main_cat", "ascending")])
            n = p["n_products"].to_pylist()
            im = p["sum_image_count"].to_pylist()
            out.append({"id": "products_main_cat", "title": "Products and mean images per product, by main category "
                                                           "(metadata)", "kind": "table",
                        "columns": ["main category", "products", "mean images per product"],
                        "formats": ["text", "int", "num2"],
                        "rows": [[_label(c), a, (b or 0) / a if a else None]
                                 for c, a, b in zip(p["main_cat"].to_pylist(), n, im)],
                        **self._src("silver/products" if "brand" in self.f else "gold/products_by_main_cat",
                                    honours=["main_cat", "brand"])})
        return out

    def brands(self):
        if self._from_silver():
            s = self.silver
            t = _group_count(s, ["brand"], [("overall", "sum", "sum_overall"), ("price", "min", "min_price"),
                                            ("price", "max", "max_price")])
            src = self._src("silver/reviews")
        else:
            g = self._gold("reviews_by_brand")
            if g is None:
                return {"id": "brands", "title": "Brands", **missing("gold/reviews_by_brand: " + RUN_BATCH)}
            t = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names])
            src = self._src("gold/reviews_by_brand")
        t = _with_mean(t)
        n_brands = t.num_rows
        t = t.sort_by([("n", "descending"), ("brand", "ascending")]).slice(0, TOP_BRANDS)
        return {"id": "brands", "title": f"Brands: top {TOP_BRANDS} by reviews, mean rating, price range",
                "kind": "table", "columns": ["brand", "reviews", "mean rating", "min price", "max price"],
                "formats": ["text", "int", "num2", "money", "money"],
                "rows": [[_label(b), n, m, lo, hi] for b, n, m, lo, hi in zip(
                    t["brand"].to_pylist(), t["n"].to_pylist(), [py(x) for x in t["mean_overall"].to_pylist()],
                    [py(x) for x in t["min_price"].to_pylist()], [py(x) for x in t["max_price"].to_pylist()])],
                "subtitle": f"{n_brands:,} brands in all", **src}

    def top_reviewers(self):
        out = []
        if self._from_silver():
            t = _group_count(self.silver, ["reviewer_id"], [("overall", "sum", "sum_overall")])
            t = _with_mean(t).sort_by([("n", "descending"), ("reviewer_id", "ascending")]).slice(0, 10)
            src = self._src("silver/reviews")
        else:
            g = self._gold("top_reviewers")
            if g is None:
                t = None
            else:
                t = g.rename_columns(["n" if c == "n_reviews" else c for c in g.column_names])
                t = t.sort_by([("n", "descending"), ("reviewer_id", "ascending")])
            src = self._src("gold/top_reviewers")
        if t is None:
            out.append({"id": "top_reviewers", "title": "Most active reviewers",
                        **missing("gold/top_reviewers: " + RUN_BATCH)})
        else:
            out.append({"id": "top_reviewers", "title": "Most active reviewers (by id)", "kind": "hbars",
                        "labels": [_label(x) for x in t["reviewer_id"].to_pylist()],
                        "series": [{"name": "reviews", "values": t["n"].to_pylist()}],
                        "extra": {"mean rating": [py(x) for x in t["mean_overall"].to_pylist()]},
                        "link": "reviewer", **src})
        g, src = self._ranking("top_reviewer_names")
        if g is None:
            out.append({"id": "top_reviewer_names", "title": "Most active reviewers by name",
                        **missing(RUN_INSIGHTS.format(table="gold/top_reviewer_names"))})
        else:
            g = g.sort_by([("n_reviews", "descending"), ("reviewer_name", "ascending")]).slice(0, 15)
            out.append({"id": "top_reviewer_names", "title": "Most active reviewers by name",
                        "kind": "hbars", "labels": [_label(x) for x in g["reviewer_name"].to_pylist()],
                        "series": [{"name": "reviews", "values": g["n_reviews"].to_pylist()}],
                        "extra": {"share": [py(x) for x in g["share"].to_pylist()]} if "share" in g.column_names else {},
                        **src})
        return out

    def text_tables(self):
        out = []
        g, src = self._ranking("top_words")
        if g is None:
            out.append({"id": "top_words", "title": "Top words by sentiment",
                        **missing(RUN_INSIGHTS.format(table="gold/top_words"))})
        else:
            count = "n_occurrences" if "n_occurrences" in g.column_names else "n_reviews"
            groups = []
            for s in SENTIMENTS:
                part = g.filter(pc.equal(g["sentiment"], s)).sort_by([(count, "descending"), ("word", "ascending")])
                part = part.slice(0, 15)
                groups.append({"name": s, "labels": [_label(x) for x in part["word"].to_pylist()],
                               "values": part[count].to_pylist()})
            out.append({"id": "top_words", "title": "Top words by sentiment (in the summaries)", "kind": "groups",
                        "groups": groups, **src})
        g, src = self._ranking("top_summaries")
        if g is None:
            out.append({"id": "top_summaries", "title": "Most frequent summaries",
                        **missing(RUN_INSIGHTS.format(table="gold/top_summaries"))})
        else:
            g = g.sort_by([("n_reviews", "descending"), ("summary_norm", "ascending")]).slice(0, 15)
            out.append({"id": "top_summaries", "title": "Most frequent summaries", "kind": "hbars",
                        "labels": [_label(x) for x in g["summary_norm"].to_pylist()],
                        "series": [{"name": "reviews", "values": g["n_reviews"].to_pylist()}], **src})
        return out

    def extremes(self):
        out = []
        for fam, key, title in (("rating_by_product", "asin", "Products"), ("rating_by_brand", "brand", "Brands")):
            g, src = self._ranking(fam)
            if g is None:
                out.append({"id": fam, "title": f"{title}: top and bottom by mean rating",
                            **missing(RUN_INSIGHTS.format(table=f"gold/{fam}"))})
                continue
            cols = [key, "n_reviews", "mean_overall"] + (["end", "rank"] if "end" in g.column_names else [])
            g = g.sort_by([("end", "descending"), ("rank", "ascending")]) if "end" in g.column_names else g
            titles = product_titles(self.root, g[key].to_pylist()) if key == "asin" else {}
            r = rows(g, cols)
            if key == "asin":
                cols = [key, "title"] + cols[1:]
                r = [[x[0], titles.get(x[0])] + x[1:] for x in r]
            min_reviews = run_option(self.root, "rating_min_reviews", gold_rules.family(fam).min_reviews)
            out.append({"id": fam, "title": f"{title}: top and bottom by mean rating", "kind": "table",
                        "columns": cols, "rows": r, "subtitle": f"among those with at least {min_reviews} reviews",
                        **src})
        out.append(self.secondary_cats())
        return out

    def secondary_cats(self):
        """Products per secondary category (metadata): gold, or with a main category or brand filter the
        job's rule over the matching silver/products rows."""
        g = self._gold("products_by_secondary_cat")
        if g is None:
            return {"id": "secondary_cats", "title": "Products per secondary category",
                    **missing(RUN_INSIGHTS.format(table="gold/products_by_secondary_cat"))}
        honours = ["main_cat", "brand"]
        src = self._src("gold/products_by_secondary_cat", honours=honours)
        if any(k in self.f for k in honours):
            p = filtered_products(self.root, self.f)
            g = ranking(gold_rules.product_facts(p), "products_by_secondary_cat") if p is not None and p.num_rows \
                else g.slice(0, 0)
            src = self._src("silver/products", honours=honours)
        g = g.sort_by([("n_products", "descending"), ("secondary_cat", "ascending")]).slice(0, 15)
        return {"id": "secondary_cats", "title": "Products per secondary category (metadata)",
                "kind": "hbars", "labels": [_label(x) for x in g["secondary_cat"].to_pylist()],
                "series": [{"name": "products", "values": g["n_products"].to_pylist()}], **src}

    def others(self):
        """Gold families this page does not know: shown generically (all-time rows, largest first)."""
        out = []
        for fam in self.root.gold_families():
            if fam in KNOWN_FAMILIES:
                continue
            g = self._gold(fam)
            if g is None:
                continue
            g = g.drop_columns([c for c in ("window_start", "window_end") if c in g.column_names])
            measure = next((c for c in g.column_names if c.startswith("n_")), None)
            n_rows = g.num_rows
            if measure:
                g = g.sort_by([(measure, "descending")])
            g = g.slice(0, 20)
            out.append({"id": "family_" + fam, "title": f"gold/{fam} (all time)", "kind": "table",
                        "columns": g.column_names, "rows": rows(g),
                        "subtitle": f"{n_rows:,} all-time rows; the first 20" + (f" by {measure}" if measure else ""),
                        **self._src(f"gold/{fam}", honours=[])})
        return out

    def all(self):
        charts = [self.kpis(), self.by_rating(), self.rating_verified()]
        charts += self.per_year_month()
        charts += self.sentiment()
        charts += [self.length_sentiment(), self.verified_sentiment()]
        charts += self.main_cats()
        charts.append(self.brands())
        charts += self.top_reviewers()
        charts += self.text_tables()
        charts += self.extremes()
        charts += self.others()
        return charts


KNOWN_FAMILIES = {"reviews", "reviews_by_rating", "reviews_by_rating_verified", "reviews_by_main_cat",
                  "reviews_by_brand", "sentiment_by_year", "length_by_sentiment", "verified_by_sentiment",
                  "top_reviewers", "products_by_main_cat", "predicted_sentiment", "reviews_by_month", "top_words",
                  "top_summaries", "top_reviewer_names", "rating_by_product", "rating_by_brand",
                  "products_by_secondary_cat", "distinct_counts", "daily_products", "daily_brands",
                  "daily_main_cats"}


def insights(root, f):
    t0 = time.perf_counter()
    charts = Insights(root, f).all()
    return {"charts": charts, "filters": f, "active": filter_names(f), "seconds": round(time.perf_counter() - t0, 3)}


# ------------------------------------------------------------------------------------------ shared lookups

def product_titles(root, asins):
    """{asin: title} from silver/products for the given asins."""
    p = root.derived("titles", [tables.SILVER_PRODUCTS],
                     lambda: root.read(tables.SILVER_PRODUCTS, ["asin", "title", "brand"]))
    if p is None or not asins:
        return {}
    wanted = pa.array(sorted({a for a in asins if a is not None}), pa.string())
    sel = p.filter(pc.is_in(p["asin"], value_set=wanted))
    return dict(zip(sel["asin"].to_pylist(), sel["title"].to_pylist()))


def meta(root):
    """Everything the page needs before its first chart: which tables exist, filter choices, versions."""
    version, snap = root.state()
    present = snap["tables"]
    out = {"name": root.name, "path": root.path, "events_version": version, "tables": present,
           "gold_families": root.gold_families(),
           "recommendations": root.rec_path, "has_recommendations": root.recommendations_version() is not None}
    mc = root.read(f"{GOLD}/reviews_by_main_cat", ["main_cat", "n_reviews"], alltime=True)
    out["main_cats"] = sorted(x for x in (mc["main_cat"].to_pylist() if mc is not None else []) if x is not None)
    b = root.read(f"{GOLD}/reviews_by_brand", ["brand", "n_reviews"], alltime=True)
    if b is not None and b.num_rows:
        b = b.filter(pc.is_valid(b["brand"])).sort_by([("n_reviews", "descending"), ("brand", "ascending")])
        out["brands"] = b["brand"].slice(0, 300).to_pylist()
    else:
        out["brands"] = []
    r = root.read(f"{GOLD}/reviews", ["window_start", "window_end"])
    if r is not None and r.num_rows:
        ws = pc.min(r["window_start"]).as_py()
        we = pc.max(r["window_end"]).as_py()
        out["time_range"] = [py(ws.date()) if ws else None,
                             py((we - datetime.timedelta(microseconds=1)).date()) if we else None]
    else:
        out["time_range"] = [None, None]
    return out


# ------------------------------------------------------------------------------------------ trending

def _day(v):
    return datetime.date.fromisoformat(v) if isinstance(v, str) else v


def trending(root, day=None):
    """The trending tables for ``day`` (default: the latest day on which the most kinds have trends), each
    key with its daily counts; cached per table versions and day."""
    rels = [rel for rel, _, _ in TRENDING.values()] + [f"{GOLD}/{d}" for _, _, d in TRENDING.values()]
    return root.derived(f"trending:{day}", rels + [tables.SILVER_REVIEWS, tables.SILVER_PRODUCTS],
                        lambda: _trending(root, day))


def _trending(root, day=None):
    out = {"kinds": {}}
    all_days = set()
    loaded = {}
    for kind, (rel, key, _) in TRENDING.items():
        t = root.read(rel)
        loaded[kind] = t
        if t is not None and t.num_rows:
            all_days.update(t["day"].to_pylist())
    days = sorted(all_days)
    out["days"] = [d.isoformat() for d in days]
    # default: the latest day on which the most kinds have trends
    kinds_per_day = {}
    for t in loaded.values():
        if t is not None and t.num_rows:
            for d in set(t["day"].to_pylist()):
                kinds_per_day[d] = kinds_per_day.get(d, 0) + 1
    best = max(kinds_per_day.values(), default=0)
    default = max((d for d, n in kinds_per_day.items() if n == best), default=None)
    chosen = _day(day) if day else default
    out["day"] = chosen.isoformat() if chosen else None
    for kind, (rel, key, daily) in TRENDING.items():
        t = loaded[kind]
        if t is None:
            out["kinds"][kind] = {"table": rel, "key": key, **missing(RUN_INSIGHTS.format(table=rel))}
            continue
        sel = t.filter(pc.equal(t["day"], pa.scalar(chosen, pa.date32()))) if chosen else t.slice(0, 0)
        sel = sel.sort_by([("rank", "ascending")])
        keys = sel[key].to_pylist()
        series = daily_series(root, daily, key, keys, chosen) if keys else {}
        titles = product_titles(root, keys) if key == "asin" else {}
        rule = sel["rule"][0].as_py() if sel.num_rows and "rule" in sel.column_names else None
        out["kinds"][kind] = {
            "table": rel, "key": key, "kind": "trending", "rule": rule,
            "columns": ["rank", key] + (["title"] if key == "asin" else []) + ["count", "baseline", "score"],
            "rows": [[r, k] + ([titles.get(k)] if key == "asin" else []) + [c, py(b), py(s)]
                     for r, k, c, b, s in zip(sel["rank"].to_pylist(), keys, sel["count"].to_pylist(),
                                              sel["baseline"].to_pylist(), sel["score"].to_pylist())],
            "series": {str(k): v for k, v in series.items()},
            "series_source": series.source if hasattr(series, "source") else None,
            "n_days": len(set(t["day"].to_pylist())),
        }
    out["spark_days"] = [(chosen - datetime.timedelta(days=i)).isoformat()
                         for i in range(TREND_SPARK_DAYS - 1, -1, -1)] if chosen else []
    return out


class _Series(dict):
    source = None


def daily_series(root, family, key, keys, end_day):
    """{key: [count per day for the TREND_SPARK_DAYS days ending end_day]} from gold/<family> (the trending
    input), else from silver."""
    first = end_day - datetime.timedelta(days=TREND_SPARK_DAYS - 1)
    out = _Series({k: [0] * TREND_SPARK_DAYS for k in keys})
    wanted = pa.array([k for k in keys if k is not None], pa.string())
    g = root.read(f"{GOLD}/{family}", ["day", key, "n_reviews"])
    if g is not None:
        out.source = f"gold/{family}"
        sel = g.filter(pc.and_(pc.is_in(g[key], value_set=wanted),
                               pc.and_(pc.greater_equal(g["day"], pa.scalar(first, pa.date32())),
                                       pc.less_equal(g["day"], pa.scalar(end_day, pa.date32())))))
        for d, k, n in zip(sel["day"].to_pylist(), sel[key].to_pylist(), sel["n_reviews"].to_pylist()):
            out[k][(d - first).days] += n
        return out
    s = _silver(root)
    if s is None:
        return out
    out.source = "silver/reviews"
    start = int(datetime.datetime.combine(first, datetime.time(), datetime.timezone.utc).timestamp())
    sel = s.filter(pc.and_(pc.is_in(s[key], value_set=wanted),
                           pc.and_(pc.greater_equal(s["unix_review_time"], start),
                                   pc.less(s["unix_review_time"], start + TREND_SPARK_DAYS * 86400))))
    for t, k in zip(sel["unix_review_time"].to_pylist(), sel[key].to_pylist()):
        out[k][(t - start) // 86400] += 1
    return out


# ------------------------------------------------------------------------------------------ reviewer

HISTORY_COLUMNS = ["unix_review_time", "asin", "title", "brand", "main_cat", "overall", "verified", "summary",
                   "review_text"]
HISTORY_LIMIT = 200


def reviewer_suggestions(root):
    g = root.read(f"{GOLD}/top_reviewers", ["reviewer_id", "n_reviews"], alltime=True)
    if g is None or not g.num_rows:
        s = _silver(root)
        if s is None:
            return []
        g = root.derived("reviewer_counts", [tables.SILVER_REVIEWS], lambda: _group_count(
            s, ["reviewer_id"]).rename_columns(["reviewer_id", "n_reviews"]))
    g = g.sort_by([("n_reviews", "descending"), ("reviewer_id", "ascending")]).slice(0, 20)
    return [{"reviewer_id": r, "n_reviews": n} for r, n in zip(g["reviewer_id"].to_pylist(), g["n_reviews"].to_pylist())]


def reviewer(root, reviewer_id):
    out = {"reviewer_id": reviewer_id}
    # history, from silver (a filtered scan; predicate pushed to the Parquet row groups)
    version = root.table_version(tables.SILVER_REVIEWS)
    if version is None:
        out["history"] = missing("silver/reviews is missing: " + RUN_BATCH)
    else:
        import pyarrow.dataset as pds

        def build():
            ds = plain_dataset(tables.open_table(root.loc, tables.SILVER_REVIEWS, version))
            return ds.to_table(columns=HISTORY_COLUMNS, filter=pds.field("reviewer_id") == reviewer_id)
        h = root._cached(("history", version, reviewer_id), build)
        h = h.sort_by([("unix_review_time", "descending"), ("asin", "ascending")])
        out["history"] = {"kind": "table", "n": h.num_rows, "source": "silver/reviews",
                          "columns": ["time", "asin", "title", "brand", "main category", "rating", "verified",
                                      "summary", "text"],
                          "rows": [[py(_utc(r[0])) if r[0] is not None else None] + r[1:]
                                   for r in rows(h.slice(0, HISTORY_LIMIT), HISTORY_COLUMNS)]}
    rb = root.read(RECENT_BRANDS)
    if rb is None:
        out["recent_brands"] = missing(RUN_INSIGHTS.format(table=RECENT_BRANDS))
    else:
        sel = rb.filter(pc.equal(rb["reviewer_id"], reviewer_id))
        if not sel.num_rows:
            out["recent_brands"] = {"kind": "list", "items": [], "source": RECENT_BRANDS}
        else:
            brands = sel["brands"][0].as_py() or []
            times = sel["brand_times"][0].as_py() if "brand_times" in sel.column_names else None
            out["recent_brands"] = {"kind": "list", "source": RECENT_BRANDS,
                                    "items": [{"brand": b, "time": py(times[i]) if times and i < len(times) else None}
                                              for i, b in enumerate(brands)]}
    rec = root.recommendations()
    if rec is None:
        out["recommendations"] = missing(RUN_RECOMMEND.format(path=root.rec_path))
    else:
        sel = rec.filter(pc.equal(rec["reviewer_id"], reviewer_id))
        models = {}
        if sel.num_rows:
            sel = sel.sort_by([("model", "ascending"), ("rank", "ascending")])
            titles = product_titles(root, sel["asin"].to_pylist())
            for m, r, a, s in zip(sel["model"].to_pylist(), sel["rank"].to_pylist(), sel["asin"].to_pylist(),
                                  sel["score"].to_pylist()):
                models.setdefault(m or "(unnamed)", []).append([r, a, titles.get(a), py(s)])
        all_models = sorted(set(x for x in rec["model"].unique().to_pylist() if x is not None))
        out["recommendations"] = {"kind": "models", "source": tables.io.join(root.rec_path, RECOMMENDATIONS_TABLE),
                                  "columns": ["rank", "asin", "title", "score"],
                                  "models": [{"model": m, "rows": models.get(m, [])} for m in all_models]}
    return out


# ------------------------------------------------------------------------------------------ health

def _summary_counts(summary):
    r = summary.get("reviews", {}) or {}
    p = summary.get("products", {}) or {}
    return {
        "reviews_read": r.get("records_read"), "silver_rows": r.get("silver_rows"),
        "dead_letters": (r.get("dead_letters") or 0) + (p.get("dead_letters") or 0),
        "duplicates": (r.get("duplicates_dropped") or 0) + (r.get("duplicates_of_earlier_runs") or 0),
        "products_read": p.get("records_read"), "product_rows": p.get("silver_rows"),
        "reconciled": r.get("reconciled") if r else None,
        "dead_by_reason": {**{f"reviews {k}": v for k, v in (r.get("dead_letters_by_reason") or {}).items()},
                           **{f"products {k}": v for k, v in (p.get("dead_letters_by_reason") or {}).items()}},
        "expectations": summary.get("expectations") or {},
        "files": summary.get("files") or {},
        "events_read": (summary.get("eventhub") or {}).get("events_read"),
    }


def health(root, now=None):
    now = now or time.time()
    version, snap = root.state()
    runs = []
    started = {r["run_id"]: r for r in snap["events"] if r["event"] == "commit_started"}
    for r in snap["events"]:
        if r["event"] not in ("committed", "recovered"):
            continue
        summary = json.loads(r["summary"]) if r["summary"] else {}
        tv = json.loads(r["table_versions"]) if r["table_versions"] else {}
        runs.append({"run_id": r["run_id"], "at": py(r["at"]), "event": r["event"], "mode": r["mode"],
                     "source": r["source"], "duration_s": py(r["duration_s"]),
                     "claimed": r["run_id"] in started, "table_versions": tv,
                     **_summary_counts(summary)})
    runs.reverse()
    out = {"events_version": version, "runs": runs, "now": py(_utc(now))}
    dl = root.read(tables.DEAD_LETTERS, ["record_type", "stage", "reason", "run_id"])
    if dl is None:
        out["dead_letters"] = missing("dead_letters is missing: " + RUN_BATCH)
    else:
        g = _group_count(dl, ["record_type", "stage", "reason"]).sort_by(
            [("n", "descending"), ("record_type", "ascending"), ("stage", "ascending"), ("reason", "ascending")])
        out["dead_letters"] = {"total": dl.num_rows, "by_reason": rows(g, ["record_type", "stage", "reason", "n"])}
    out["freshness"] = freshness(root, snap["events"], now)
    return out


def freshness(root, events, now):
    """Streaming freshness: the latest event time in silver and the hub's watermark vs now, and each
    partition's position, lag in events (the hub's last sequence number minus the last one read, as the
    commit recorded them) and event-time lag, from the last streaming commit's event-log row."""
    out = {"latest_event_time": None, "latest_event_lag_s": None}
    t = tables.open_table(root.loc, tables.SILVER_REVIEWS, root.table_version(tables.SILVER_REVIEWS)) \
        if root.table_version(tables.SILVER_REVIEWS) is not None else None
    if t is not None:
        def build():
            aa = pa.table(t.get_add_actions(flatten=True))
            col = "max.unix_review_time"
            if col in aa.column_names and aa.num_rows:
                return pc.max(aa[col]).as_py()
            s = _silver(root)
            return pc.max(s["unix_review_time"]).as_py() if s is not None and s.num_rows else None
        latest = root.derived("latest_event", [tables.SILVER_REVIEWS], build)
        if latest is not None:
            latest = int(latest.timestamp()) if isinstance(latest, datetime.datetime) else int(latest)
            out["latest_event_time"] = py(_utc(latest))
            out["latest_event_lag_s"] = now - latest
    stream = [r for r in events if r["event"] == "committed" and (r.get("positions") or _hub_lag(r))]
    if not stream:
        out["stream"] = missing("no streaming run has committed to this output: run the job with "
                                "--source=eventhub (make run writes out/stream)")
        return out
    last = stream[-1]
    positions = json.loads(last["positions"]) if last.get("positions") else {}
    parts = stream_partitions(positions, _hub_lag(last), now)
    hub_w = checkpoints.watermark(positions)
    behind = [p["lag_events"] for p in parts if p["lag_events"] is not None]
    out["stream"] = {"kind": "stream", "checkpoint_key": last.get("checkpoint_key"), "committed_at": py(last["at"]),
                     "commit_age_s": now - last["at"].timestamp(), "run_id": last["run_id"],
                     "watermark": py(_utc(hub_w)) if hub_w is not None else None,
                     "watermark_lag_s": now - hub_w if hub_w is not None else None,
                     "lag_events": sum(behind) if behind else None,
                     "partitions": parts, "has_marks": any(p["watermark_s"] is not None for p in parts)}
    return out


def _hub_lag(event_row):
    """What a streaming commit recorded of the hub: {partition: {"consumed_sequence_number",
    "hub_last_sequence_number", "hub_last_enqueued_time_s", "lag_events"}} (``beam_pipeline.checkpoints.
    partition_lag``), from its summary; {} for commits that did not (batch runs, older streaming runs)."""
    summary = json.loads(event_row["summary"]) if event_row.get("summary") else {}
    return (summary.get("eventhub") or {}).get("partitions") or {}


def stream_partitions(positions, lag, now):
    """One streaming commit's partitions, from its checkpoint (``positions``: last sequence number read,
    watermark) and what it recorded of the hub (``lag``: the hub's last sequence number, the lag in
    events) -> rows in partition order, with each watermark's lag behind ``now`` (event time)."""
    rows_ = []
    for pid in sorted(set(positions) | set(lag), key=lambda p: (len(p), p)):
        pos, hub = positions.get(pid, {}), lag.get(pid, {})
        w = pos.get("watermark_s")
        seq = pos.get("sequence_number", hub.get("consumed_sequence_number"))
        enqueued = hub.get("hub_last_enqueued_time_s")
        rows_.append({"partition": pid, "sequence_number": seq,
                      "hub_last_sequence_number": hub.get("hub_last_sequence_number"),
                      "lag_events": hub.get("lag_events"),
                      "hub_last_enqueued": py(_utc(enqueued)) if enqueued is not None else None,
                      "watermark_s": w, "watermark": py(_utc(w)) if w is not None else None,
                      "lag_s": now - w if w is not None else None})
    return rows_


DEAD_COLUMNS = ["record_type", "stage", "reason", "detail", "source", "source_position", "payload_bytes",
                "payload_truncated", "run_id", "payload"]


def dead_letters(root, query):
    t = root.read(tables.DEAD_LETTERS)
    if t is None:
        return missing("dead_letters is missing: " + RUN_BATCH)
    for key in ("reason", "stage", "record_type", "run_id"):
        if query.get(key):
            t = t.filter(pc.fill_null(pc.equal(t[key], query[key]), False))
    text = (query.get("q") or "").strip()
    if text:
        hit = pc.or_(pc.match_substring(pc.fill_null(t["payload"], ""), text),
                     pc.match_substring(pc.fill_null(t["detail"], ""), text))
        t = t.filter(hit)
    t = t.sort_by([("run_id", "descending"), ("source", "ascending"), ("source_position", "ascending")])
    try:
        offset = max(0, int(query.get("offset") or 0))
        limit = min(200, max(1, int(query.get("limit") or 50)))
    except ValueError as err:
        raise ValueError("offset and limit are whole numbers") from err
    cols = [c for c in DEAD_COLUMNS if c in t.column_names]
    return {"kind": "table", "total": t.num_rows, "offset": offset, "limit": limit, "columns": cols,
            "rows": rows(t.slice(offset, limit), cols)}
