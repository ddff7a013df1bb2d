"""A batch run's two driver-side steps around the Beam graph: ``prepare_batch`` (before: which files
are new, what the tables already hold) and ``commit_batch`` (after: gold merged with its state, every
table committed in one run commit, ``beam_pipeline.tables.commit_run``).

Incremental ingestion (Auto Loader's idea): ``_pipeline/ingested_files`` lists every input file a
committed run read, with its size and modification time, and is committed in the same run commit as
the rows. A run reads only files that are not there (new) or whose size or modification time differ
(changed: read again in full; its rows already in silver are dropped as duplicates by the content key,
which also holds across runs, so overlapping files add nothing twice; rows that disappeared from a
changed file stay in silver: tables are append-only). ``--full_refresh`` reads everything and replaces
every table.

Gold on an incremental run: the graph computes additive partials of the new rows only; here they are
merged with the stored partials (``_state/gold/<family>``) and finalised, so every window's row is
the value over all runs. Product families are recomputed from the whole products table each run.

Insights (``--insights``, docs/insights.md), built here from what the commit already holds, the same way
in batch and streaming: the trending tables from the merged state of the ``daily_*`` families
(``transforms.trending``), ``gold/distinct_counts`` from the merged state of ``top_reviewers`` and
``reviews_by_main_cat``, and ``insights/recent_brands`` from the run's new silver rows merged with the
stored table (``transforms.recent_brands.merge_recent``: equal to the rule over all of silver).
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
import typing
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import coders, io, tables
from beam_pipeline.options import parse_duration, window_spec
from beam_pipeline.threaded import THREADS
from beam_pipeline.tables import Location
from transforms import gold, recent_brands, trending
from transforms.dead_letters import RECORDED_KEY, recorded_key
from transforms.enrich import KNOWN_COLUMNS, REVIEW_KEY, KnownReviews, content_hashes, known_by_bucket
from transforms.windows import TS
from transforms.schemas import DEAD_LETTER_SCHEMA, SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_SCHEMA

LOG = logging.getLogger("reviews")
STAGED = "_pipeline/_staged"
DEAD_LETTER_TABLE_SCHEMA = pa.schema([*DEAD_LETTER_SCHEMA, ("run_id", pa.string())])
ROW_BYTES = 300            # Parquet bytes per silver row (snappy), measured on generated and real reviews
BUCKET_INPUT_BYTES = 64 << 20   # input bytes (uncompressed) per shuffle bucket when --shuffle_buckets=0
GZ_RATIO = 3.5             # uncompressed / gzip size of review JSON lines (real files: 3.1-3.8)


class Insights(typing.NamedTuple):
    """The insight options the commit needs (``--insights`` and its siblings; defaults as the options')."""
    enabled: bool = True
    trending_rule: str = "zscore"
    trending_days: int = 7
    trending_top: int = 20
    trending_min_count: int = 3
    recent_brands: int = 50
    rating_min_reviews: int = 10

    @classmethod
    def of(cls, o):
        """From the options (``--insights`` is ``enabled``; an option missing keeps its default)."""
        return cls(*(getattr(o, "insights" if name == "enabled" else name, default)
                     for name, default in cls._field_defaults.items()))


class InputError(ValueError):
    """Inputs that cannot be read as given (nothing matches a pattern); raised before the run starts."""


class BatchPlan(typing.NamedTuple):
    loc: Location
    run_id: str
    review_files: list
    product_files: list
    files: list                    # [{kind, path, size_bytes, modified_ms, status}] of the files read
    file_counts: dict              # {kind: {"new": n, "changed": n, "skipped": n}}
    existing_products_version: int | None
    known: dict                    # {bucket: KnownReviews: the copies silver holds (transforms.enrich)}
    target_rows: int
    n_buckets: int
    full_refresh: bool
    base_events_version: int | None
    started: float

    @classmethod
    def naive(cls, o, review_patterns, product_patterns):
        """Every matching file, nothing known: for graph construction without touching storage."""
        from beam_pipeline.pipeline import default_run_id
        return cls(Location(o.output), o.run_id or default_run_id(), list(review_patterns), list(product_patterns),
                   [], {}, None, {}, _target_rows(o), o.shuffle_buckets or 8, True, None, time.time())


def _target_rows(o):
    return max(1000, int(o.target_file_mb * (1 << 20) / ROW_BYTES))


def storage_failure(err):
    """'storage unreachable at HOST:PORT' when ``err`` (or what it wraps: Beam nests the SDK's error in
    its messages) says the store did not answer; else None."""
    while err is not None:
        text = str(err).replace("\\'", "'")
        if "Failed to establish a new connection" in text:
            found = re.search(r"host='([^']+)', port=(\d+)\)", text)
            return "storage unreachable" + (f" at {found.group(1)}:{found.group(2)}" if found else "")
        err = err.__cause__ or err.__context__
    return None


def listing_failure(err):
    """A store's listing error -> a short reason: 'storage unreachable at HOST:PORT: ...' when nothing
    answered (``storage_failure``), else the error cut to 200 characters."""
    unreachable = storage_failure(err)
    if unreachable:
        return f"{unreachable}: connection refused or timed out"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def storage_probe(pattern):
    """An azfs:// pattern with a connection string: one unretried request to its container, so a store that
    is down is reported in seconds (the SDK Beam's azfs uses retries for over a minute first). -> the
    reason it cannot be reached, or None (reachable, not azfs, or an error the listing itself will name)."""
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if not pattern.startswith("azfs://") or not conn:
        return None
    from urllib.parse import urlparse

    from azure.core.exceptions import AzureError, ServiceRequestError
    from azure.storage.blob import BlobServiceClient
    parts = pattern[len("azfs://"):].split("/")
    client = BlobServiceClient.from_connection_string(conn, retry_total=0, connection_timeout=5, read_timeout=10)
    try:
        client.get_container_client(parts[1] if len(parts) > 1 else "").exists()
    except ServiceRequestError:
        return f"storage unreachable at {urlparse(client.url).netloc}: connection refused or timed out"
    except (AzureError, ValueError):
        return None
    finally:
        client.close()
    return None


def _match(patterns, kind):
    out = []
    for pattern in patterns:
        unreachable = storage_probe(pattern)
        if unreachable:
            raise InputError(f"--{kind} {pattern}: cannot list it ({unreachable}); nothing was read or written")
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as err:  # noqa: BLE001 - the store's own message says why
            raise InputError(f"--{kind} {pattern}: cannot list it ({listing_failure(err)}); nothing was read or "
                             "written") \
                from err
        if not found:
            raise InputError(f"--{kind} {pattern}: no file matches it")
        out += [m for m in found if not m.path.rstrip("/").endswith("/")]
    seen, unique = set(), []
    for m in sorted(out, key=lambda m: m.path):
        if m.path not in seen:
            seen.add(m.path)
            unique.append(m)
    return unique


def _modified_ms(m):
    return int(round((m.last_updated_in_seconds or 0) * 1000))


def match_inputs(review_patterns, product_patterns):
    """{kind: file metadata} of every input pattern; InputError for one that matches nothing or cannot be
    listed. The driver calls it before it writes anything, so a refused run leaves nothing behind."""
    return {"reviews": _match(review_patterns, "reviews"), "products": _match(product_patterns, "products")}


def _settle(loc, run_id):
    """Before any run: finish the commit a killed run left (``tables.recover``), remove the files of runs
    that never committed -> (the event log's version the run builds on, every table's committed version)."""
    finished = tables.recover(loc)
    if finished:
        LOG.warning("finished the interrupted commit of %s", ", ".join(finished))
    tables.remove_orphans(loc, keep_run_ids=[run_id])
    return tables.table_version(loc, tables.EVENTS), tables.snapshot_versions(loc)


def prepare_batch(o, review_patterns, product_patterns, run_id, matched=None):
    """Finish what a killed run left, remove files of runs that never committed, pick the files to read
    and load what dedupe and the join need from the tables. ``matched``: ``match_inputs``' answer for
    these patterns (listed again without it)."""
    matched = matched or match_inputs(review_patterns, product_patterns)
    loc = Location(o.output)
    base, snapshot = _settle(loc, run_id)
    full = bool(o.full_refresh) or base is None
    ingested = {}
    if not full and tables.INGESTED in snapshot:
        log = tables.read(loc, tables.INGESTED, snapshot[tables.INGESTED]).to_pylist()
        for r in sorted(log, key=lambda r: r["ingested_at"]):  # a file read again: its latest version counts
            ingested[(r["kind"], r["path"])] = (r["size_bytes"], r["modified_ms"])
    files, counts, read = [], {}, {"reviews": [], "products": []}
    est_bytes = 0
    for kind in ("reviews", "products"):
        c = counts.setdefault(kind, {"new": 0, "changed": 0, "skipped": 0})
        for m in matched[kind]:
            before = ingested.get((kind, m.path))
            now = (m.size_in_bytes, _modified_ms(m))
            status = "new" if before is None else ("skipped" if tuple(before) == now else "changed")
            c[status] += 1
            if status == "skipped":
                continue
            files.append({"kind": kind, "path": m.path, "size_bytes": now[0], "modified_ms": now[1], "status": status})
            read[kind].append(m.path)
            if kind == "reviews":
                est_bytes += now[0] * (GZ_RATIO if m.path.endswith(".gz") else 1)
    n_buckets = o.shuffle_buckets or max(1, min(8, math.ceil(est_bytes / BUCKET_INPUT_BYTES)))
    known = {}
    products_version = None
    if not full:
        if tables.SILVER_REVIEWS in snapshot and read["reviews"]:
            t = tables.read(loc, tables.SILVER_REVIEWS, snapshot[tables.SILVER_REVIEWS], columns=list(KNOWN_COLUMNS))
            if t is not None and t.num_rows:
                known = known_by_bucket(t, n_buckets)
        products_version = snapshot.get(tables.SILVER_PRODUCTS)
    for kind, c in counts.items():
        LOG.info("%s files: %d new, %d changed, %d already ingested (skipped)%s", kind, c["new"], c["changed"],
                 c["skipped"], " [full refresh]" if full else "")
    return BatchPlan(loc, run_id, read["reviews"], read["products"], files, counts, products_version, known,
                     _target_rows(o), n_buckets, full, base, time.time())


# ---------------------------------------------------------------------------------------------------
# the manifest the graph's last step writes

def stage_gold(loc, run_id, name, partial):
    """Inside the pipeline: one family's merged partial -> ``_pipeline/_staged/RUN_ID/gold-<family>.arrow``;
    -> the item ``stage_manifest`` lists (None for an empty partial)."""
    if partial is None or not partial.num_rows:
        return None
    path = io.join(loc.path(STAGED, run_id), f"gold-{name}.arrow")
    data = coders.table_to_bytes(partial)
    io.write_bytes(data, path)
    return {"gold": name, "path": path, "bytes": len(data)}


def stage_manifest(loc, run_id, items):
    """Inside the pipeline: add descriptions, gold partials (already staged: ``{"gold", "path"}``; or as
    tables: ``{"gold", "partial"}``) and (streaming) the partitions' last positions -> the manifest under
    ``_pipeline/_staged/RUN_ID/``."""
    root = loc.path(STAGED, run_id)
    adds = [i for i in items if "table" in i]
    positions = [i["position"] for i in items if "position" in i]
    recent = [i["recent_brands"] for i in items if "recent_brands" in i]   # streaming: the speed layer's lists
    replaces = sorted({h for i in items if "replaces" in i for h in i["replaces"]})
    golds = []
    for item in items:
        if "gold" in item:
            staged = item if "path" in item else stage_gold(loc, run_id, item["gold"], item["partial"])
            if staged is not None:
                golds.append({"family": staged["gold"], "path": staged["path"], "bytes": staged["bytes"]})
    manifest = io.join(root, "manifest.json")
    io.write_bytes(json.dumps({"run_id": run_id, "adds": adds, "gold": golds, "positions": positions,
                               "recent_brands": recent, "replaces": replaces}).encode(), manifest)
    return manifest


def _read_bytes(path):
    with FileSystems.open(path) as fh:
        return fh.read()


def _drop_staged(loc, run_id):
    paths = tables._list(io.join(loc.path(STAGED, run_id), "*"))
    if paths:
        FileSystems.delete(paths)
    if not loc.azure:
        for d in (loc.path(STAGED, run_id), loc.path(STAGED)):
            try:
                os.rmdir(d)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------------
# the commit

class GoldFamily(typing.NamedTuple):
    """One family after a run: its finalised table and new state, and what changed: ``changes`` holds
    the rows of the windows this run touched (plus the all-time rows) with ``gold.OP`` = upsert, and the rows
    those windows held before and no longer do with ``gold.OP`` = delete (None when there was no stored state)."""
    final: pa.Table
    state: pa.Table
    changes: typing.Optional[pa.Table]


def gold_family(plan, snapshot, staged, top_reviewers, insights=Insights(), retract=None, changes=False):
    """One family's staged partial (a manifest ``gold`` entry), merged with its stored state ->
    ``GoldFamily`` (``changes``: with the rows that changed). ``retract``: the partial of the held
    copies this run's copies replace (``replaced_copies``), taken out of the stored state."""
    name = staged["family"]
    partial = coders.table_from_bytes(_read_bytes(staged["path"]))
    family = gold.family(name, top_reviewers, insights.rating_min_reviews)
    state_rel = f"{tables.GOLD_STATE}/{name}"
    if family.source == "reviews" and not plan.full_refresh and state_rel in snapshot:
        old = tables.read(plan.loc, state_rel, snapshot[state_rel])
        if old is not None and old.num_rows:  # stored in microseconds: back to the partial's own types
            old = old.select(partial.column_names).cast(partial.schema)
            run_part = [partial]
            if retract is not None and retract.num_rows:
                run_part.append(gold.negated(retract.select(partial.column_names).cast(partial.schema)))
            touched = gold.window_starts(pa.concat_tables(run_part))
            partial = gold.without_empty_groups(family, gold.merge([old, *run_part]))
            final = tables.delta_compatible(gold.finalize(family, partial))
            before = tables.delta_compatible(gold.finalize(family, old)) if changes else None
            return GoldFamily(final, tables.delta_compatible(partial),
                              gold.changes(family, before, final, touched) if changes else None)
    return GoldFamily(tables.delta_compatible(gold.finalize(family, partial)), tables.delta_compatible(partial), None)


# the families whose merged state the insights derive tables from
_DERIVING = frozenset(tables.TRENDING) | {"top_reviewers", "reviews_by_main_cat"}


def insight_tables(states, insights):
    """{family: merged state} -> {table: a function that derives the insight table from them}: the trending
    tables (from the daily families) and gold/distinct_counts (from top_reviewers and reviews_by_main_cat).
    Each is independent of the others: the commit step runs them on its pool."""
    out = {}
    for name, (rel, key) in tables.TRENDING.items():
        if name in states:
            out[rel] = functools.partial(trending.trending, states[name], key, insights.trending_days,
                                         insights.trending_top, insights.trending_rule, insights.trending_min_count)
    if "top_reviewers" in states or "reviews_by_main_cat" in states:
        out[f"{tables.GOLD}/distinct_counts"] = functools.partial(
            gold.distinct_counts, states.get("top_reviewers"), states.get("reviews_by_main_cat"))
    return out


def _silver_events(loc, adds):
    """The recent-brands events of the silver files a run wrote (add descriptions)."""
    parts = []
    for a in adds:
        with FileSystems.open(loc.path(tables.SILVER_REVIEWS, a["path"])) as fh:
            parts.append(pq.read_table(fh, columns=["reviewer_id", "unix_review_time", "brand"]))
    if not parts:
        return recent_brands.EVENT_SCHEMA.empty_table()
    return recent_brands.events_from_silver(pa.concat_tables(parts))


def stage_recent_brands(loc, run_id, lists):
    """Inside a streaming pipeline: the speed layer's lists (a recent-brands table) ->
    ``_pipeline/_staged/RUN_ID/recent_brands.arrow``; -> the item ``stage_manifest`` lists."""
    path = io.join(loc.path(STAGED, run_id), f"recent_brands-{uuid.uuid4().hex[:12]}.arrow")  # one per firing
    io.write_bytes(coders.table_to_bytes(lists), path)
    return {"recent_brands": path}


def _staged_recent_events(manifest):
    """The events behind the lists a streaming run's speed layer staged (None: a batch manifest)."""
    paths = manifest.get("recent_brands")
    if not paths:
        return None
    lists = [coders.table_from_bytes(_read_bytes(p)) for p in paths]
    return recent_brands.lists_to_events(pa.concat_tables(lists))


def recent_brands_table(plan, snapshot, adds, n, staged_events=None):
    """The run's new silver rows (batch), or the lists its speed layer kept in Beam state (streaming:
    ``staged_events``), merged with the stored insights/recent_brands (none on a full refresh) -> the new
    table; None when nothing changes. The merge is exact (``transforms.recent_brands``), so both give the
    table the rule gives over all of silver."""
    events = staged_events if staged_events is not None else _silver_events(plan.loc, adds)
    old = None
    if not plan.full_refresh and tables.RECENT_BRANDS in snapshot:
        old = tables.read(plan.loc, tables.RECENT_BRANDS, snapshot[tables.RECENT_BRANDS])
    if not events.num_rows and not plan.full_refresh:
        return None
    return recent_brands.merge_recent(old, events, n) if old is not None and old.num_rows \
        else recent_brands.recent_brands(events, n)


def recent_brands_changes(plan, snapshot, adds, n, staged_events=None):
    """What a run changes in insights/recent_brands -> ("merge", rows) with the new rows of the reviewers
    the run has events of (to MERGE on reviewer_id: every other row stays as it is, in its file), or
    ("overwrite", whole table) when there is no stored table yet (or a full refresh); None: no change.
    The rows equal ``recent_brands_table``'s for those reviewers (tests/e2e/test_insights.py)."""
    events = staged_events if staged_events is not None else _silver_events(plan.loc, adds)
    if plan.full_refresh or tables.RECENT_BRANDS not in snapshot:
        table = recent_brands_table(plan, snapshot, adds, n, events)
        return None if table is None else ("overwrite", table)
    if not events.num_rows:
        return None
    touched = pc.unique(events["reviewer_id"])
    old = tables.read(plan.loc, tables.RECENT_BRANDS, snapshot[tables.RECENT_BRANDS])
    old = old.filter(pc.is_in(old["reviewer_id"], value_set=touched))
    rows = recent_brands.merge_recent(old, events, n)
    return ("merge", rows) if rows.num_rows else None


def _manifest(loc, run_id):
    manifest = json.loads(_read_bytes(io.join(loc.path(STAGED, run_id), "manifest.json")))
    by_table = {}
    for a in manifest["adds"]:
        by_table.setdefault(a["table"], []).append(a)
    return manifest, by_table


def replaced_copies(loc, run_id, snapshot, manifest):
    """The held silver rows that this run's copies replace (their content hashes: the manifest's
    ``replaces``), removed copy-on-write -> (adds of the rewritten files, paths they replace, the removed
    rows or None). A copy of this run that wins over another copy of this run replaces nothing here:
    the dedupe step already kept only the winner."""
    wanted = np.asarray(manifest.get("replaces") or [], dtype=np.uint64)
    if not wanted.size or tables.SILVER_REVIEWS not in snapshot:
        return [], [], None
    return tables.remove_rows(loc, tables.SILVER_REVIEWS, snapshot[tables.SILVER_REVIEWS],
                              lambda t: np.isin(content_hashes(t), wanted), run_id, REVIEW_KEY)


def retractions(held, manifest, spec):
    """{family: partial} of the held copies being replaced, for the review families this run computed."""
    if held is None or not held.num_rows:
        return {}
    families = [gold.FAMILY_BY_NAME[g["family"]] for g in manifest["gold"]
                if g["family"] in gold.FAMILY_BY_NAME and gold.FAMILY_BY_NAME[g["family"]].source == "reviews"]
    scored = any(f in gold.PREDICTED_FAMILIES for f in families)
    facts = gold.review_facts(tables.delta_compatible(held).cast(
        pa.schema([f.with_type(pa.timestamp("ms", tz="UTC")) if f.name == "review_time" else f
                   for f in tables.delta_compatible(held).schema])), scored)
    return gold.partials(facts, spec, "reviews", families)


def _gold_actions(plan, manifest, top_reviewers, insights=Insights(), silver_adds=(), retract=None,
                  merge_gold=False):
    """Gold current values and their new state (``gold_family``), and with ``insights.enabled`` the
    insight tables (``insight_tables``, ``recent_brands_table``). A gold table is replaced whole, or with
    ``merge_gold`` (streaming) and a stored state MERGEd: only the rows of the windows the run touched
    change. Families are independent and Arrow and Parquet release the GIL, so they are built and
    written on a small pool, largest first: the driver waits on this step alone, after the pipeline."""
    snapshot = tables.snapshot_versions(plan.loc)

    def write(rel, table):
        return {rel: {"mode": "overwrite", "adds": tables.write_files(plan.loc, rel, table, plan.run_id),
                      "schema": tables.delta_compatible(table).schema}}

    def merge(rel, changes, key):
        path = io.join(plan.loc.path(STAGED, plan.run_id), rel.replace("/", "-") + "-merge.arrow")
        io.write_bytes(coders.table_to_bytes(changes), path)   # kept until the run is committed (recovery)
        return {rel: {"mode": "merge", "key": list(key), "source": path, "adds": [],
                      "schema": changes.drop_columns([gold.OP]).schema}}

    def family_actions(staged):
        name = staged["family"]
        result = gold_family(plan, snapshot, staged, top_reviewers, insights, (retract or {}).get(name), merge_gold)
        rel = f"{tables.GOLD}/{name}"
        out = write(f"{tables.GOLD_STATE}/{name}", result.state)
        if merge_gold and result.changes is not None and rel in snapshot:
            out.update(merge(rel, result.changes, gold.row_key(gold.FAMILY_BY_NAME[name])))
        else:
            out.update(write(rel, result.final))
        return out, (name, result.state) if insights.enabled and name in _DERIVING else None

    def recent_actions():
        change = recent_brands_changes(plan, snapshot, list(silver_adds), insights.recent_brands,
                                       _staged_recent_events(manifest))
        if change is None:
            return {}
        mode, table = change
        if mode == "overwrite":
            return write(tables.RECENT_BRANDS, table)
        path = io.join(plan.loc.path(STAGED, plan.run_id), "recent_brands-merge.arrow")
        io.write_bytes(coders.table_to_bytes(table), path)   # kept until the run is committed (recovery)
        return {tables.RECENT_BRANDS: {"mode": "merge", "key": ["reviewer_id"], "source": path, "adds": [],
                                       "schema": tables.delta_compatible(table).schema}}

    staged = sorted(manifest["gold"], key=lambda g: -g.get("bytes", 0))
    actions, states = {}, {}
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="gold") as pool:
        recent = pool.submit(recent_actions) if insights.enabled else None
        for family, state in pool.map(family_actions, staged):
            actions.update(family)
            if state is not None:
                states[state[0]] = state[1]
        if insights.enabled:
            derived = insight_tables(states, insights)
            for result in pool.map(lambda item: write(item[0], item[1]()), derived.items()):
                actions.update(result)
            actions.update(recent.result())
    return dict(sorted(actions.items()))


def _replacements(plan, manifest, spec, summary):
    """``replaced_copies`` and their ``retractions``, counted in the run summary."""
    adds, removes, held = replaced_copies(plan.loc, plan.run_id, tables.snapshot_versions(plan.loc), manifest)
    if summary is not None and "reviews" in summary:
        summary["reviews"]["earlier_copies_replaced"] = 0 if held is None else held.num_rows
    return adds, removes, retractions(held, manifest, spec)


def commit_batch(plan, o, summary, fail_after=None):
    """Build every table's actions from the staged manifest and commit them as one run (see
    ``beam_pipeline.tables``). -> {table: version}."""
    loc = plan.loc
    manifest, by_table = _manifest(loc, plan.run_id)
    mode = "overwrite" if plan.full_refresh else "append"
    rewritten, removes, retract = _replacements(plan, manifest, window_spec(o), summary)
    actions = {
        tables.SILVER_REVIEWS: {"mode": mode, "adds": by_table.get(tables.SILVER_REVIEWS, []) + rewritten,
                                "removes": removes, "schema": SILVER_REVIEW_SCHEMA},
        tables.DEAD_LETTERS: {"mode": mode, "adds": by_table.get(tables.DEAD_LETTERS, []),
                              "schema": DEAD_LETTER_TABLE_SCHEMA},
    }
    if tables.SILVER_PRODUCTS in by_table or plan.full_refresh:
        actions[tables.SILVER_PRODUCTS] = {"mode": "overwrite", "adds": by_table.get(tables.SILVER_PRODUCTS, []),
                                           "schema": SILVER_PRODUCT_SCHEMA}
    actions.update(_gold_actions(plan, manifest, o.top_reviewers, Insights.of(o),
                                 by_table.get(tables.SILVER_REVIEWS, []), retract))
    if plan.full_refresh:  # families an earlier run wrote and this one did not compute (a model dropped since)
        for rel in tables.all_tables(loc):
            if rel.startswith((tables.GOLD + "/", tables.GOLD_STATE + "/", tables.INSIGHTS + "/")) \
                    and rel not in actions:
                t = tables.open_table(loc, rel)
                actions[rel] = {"mode": "overwrite", "adds": [], "schema": pa.schema(t.schema().to_arrow())}
    ingested = pa.Table.from_pylist(
        [{"kind": f["kind"], "path": f["path"], "size_bytes": f["size_bytes"], "modified_ms": f["modified_ms"],
          "run_id": plan.run_id, "ingested_at": tables._now()} for f in plan.files], schema=tables.INGESTED_SCHEMA)
    actions[tables.INGESTED] = {"mode": mode, "adds": tables.write_files(loc, tables.INGESTED, ingested, plan.run_id),
                                "schema": tables.INGESTED_SCHEMA}
    tables._maybe_fail(fail_after, "written")
    started = time.monotonic()
    versions = tables.commit_run(loc, plan.run_id, actions, plan.base_events_version, mode="batch",
                                 source=o.source, summary=summary, started=plan.started, fail_after=fail_after)
    summary["commit_seconds"] = round(time.monotonic() - started, 3)
    _drop_staged(loc, plan.run_id)
    return versions


# ---------------------------------------------------------------------------------------------------
# streaming runs

class StreamPlan(typing.NamedTuple):
    loc: Location
    run_id: str
    known: dict                    # {stream shard: KnownReviews: the copies silver holds}
    checkpoint: dict               # {partition: {"sequence_number", "watermark_s"}} committed so far
    checkpoint_key: str | None     # None: an unbounded run's firing (positions are not committed)
    carried: list                  # [(family, partial of one window)] still open at the last commit
    base_events_version: int | None
    started: float
    max_out_of_orderness_s: int = 0
    full_refresh: bool = False     # gold_tables: a streaming run always merges with the stored state
    recorded_dead: frozenset = frozenset()   # recorded_key of the product (and file) dead letters the table holds

    @classmethod
    def for_firing(cls, target, run_id):
        """An unbounded run's commit of one firing, made inside the pipeline: on top of the event log as
        it is now, positions not committed (the runner's own checkpoints carry them)."""
        return cls(target.loc, run_id, {}, {}, None, [], tables.table_version(target.loc, tables.EVENTS),
                   time.time())


def prepare_stream(o, run_id, spec, key, n_shards):
    """Before a streaming run: finish what a killed run left, remove files of runs that never committed,
    load the committed positions of this hub, the content keys silver holds (a review already there is a
    duplicate when it arrives again: the same rule as batch, across runs) and the gold partials of the
    windows still open at the last commit."""
    from beam_pipeline.checkpoints import watermark
    loc = Location(o.output)
    base, snapshot = _settle(loc, run_id)
    checkpoint = tables.checkpoint(loc, key)
    parts = []   # the output's own copies can be replaced by a preferred copy; --known_reviews' cannot
    if tables.SILVER_REVIEWS in snapshot:
        own = tables.read(loc, tables.SILVER_REVIEWS, snapshot[tables.SILVER_REVIEWS], columns=list(KNOWN_COLUMNS))
        if own is not None and own.num_rows:
            parts.append(known_by_bucket(own, n_shards))
    if o.known_reviews:
        other = tables.read_folder(o.known_reviews, columns=list(REVIEW_KEY))
        if other is not None and other.num_rows:
            parts.append(known_by_bucket(other, n_shards, unbeatable=True))
    known = {shard: KnownReviews.concat([p.get(shard) for p in parts]) for shard in {s for p in parts for s in p}}
    carried = _open_windows(loc, snapshot, spec, watermark(checkpoint) if checkpoint else None,
                            parse_duration(o.allowed_lateness))
    recorded = recorded_product_dead_letters(loc, snapshot) if o.products else frozenset()
    LOG.info("streaming run %s: %d partitions checkpointed, %d content keys known, %d open (family, window) "
             "pairs carried", run_id, len(checkpoint), sum(len(v) for v in known.values()), len(carried))
    return StreamPlan(loc, run_id, known, checkpoint, key, carried, base, time.time(),
                      parse_duration(o.max_out_of_orderness), recorded_dead=recorded)


def recorded_product_dead_letters(loc, snapshot):
    """``recorded_key`` of every product and file dead letter the dead-letter table holds: a streaming run
    reads the product files again each time (its join needs them) and appends only the dead letters that
    are not there yet, so a bad product line is recorded once, as a batch run's incremental read does."""
    if tables.DEAD_LETTERS not in snapshot:
        return frozenset()
    t = tables.read(loc, tables.DEAD_LETTERS, snapshot[tables.DEAD_LETTERS], columns=list(RECORDED_KEY))
    if t is None or not t.num_rows:
        return frozenset()
    t = t.filter(pc.not_equal(t["record_type"], "review"))
    return frozenset(recorded_key(row) for row in t.to_pylist())


def _open_windows(loc, snapshot, spec, watermark_s, lateness_s=0):
    """[(family, partial of one window)] from ``_state/gold`` for windows of this run's size that the
    watermark has not closed: the panes of this run start from them, so a pane's value covers every run."""
    import numpy as np
    out = []
    for rel, version in sorted(snapshot.items()):
        if not rel.startswith(tables.GOLD_STATE + "/"):
            continue
        family = gold.FAMILY_BY_NAME.get(rel.rsplit("/", 1)[1])
        if family is None or family.source != "reviews" or not family.windowed:
            continue
        state = tables.read(loc, rel, version)
        if state is None or not state.num_rows:
            continue
        state = state.filter(pc.is_valid(state["window_start"]))   # all-time rows are not windows
        state = state.cast(pa.schema([f.with_type(TS) if pa.types.is_timestamp(f.type) else f
                                      for f in state.schema]))         # Delta's microseconds -> the partials' own
        start_s = state["window_start"].cast(pa.int64()).to_numpy()
        end_s = state["window_end"].cast(pa.int64()).to_numpy()
        keep = end_s - start_s == spec.size_s
        if watermark_s is not None:
            keep &= end_s + lateness_s > watermark_s
        state = state.filter(pa.array(keep))
        if not state.num_rows:
            continue
        starts = state["window_start"].cast(pa.int64()).to_numpy()
        for s in np.unique(starts):
            out.append((family.name, state.filter(pa.array(starts == s))))
    return out


def commit_stream(plan, top_reviewers, summary, fail_after=None, insights=Insights(), hub_ends=None, spec=None):
    """A streaming run's (or firing's) one run commit: silver and dead letters appended, gold current
    values and state replaced (merged with the stored state exactly as batch), the pane changelog
    appended, and the hub positions (when ``plan.checkpoint_key``) in the event log's commit row.
    ``hub_ends``: a function -> the hub's end of each partition now (``beam_pipeline.eventhub.partition_ends``);
    with it the commit row's summary records, per partition, the last sequence number consumed, the hub's
    last enqueued one and the lag in events between them (``summary["eventhub"]["partitions"]``).
    ``spec``: the run's windows (needed when its copies replace held ones: their gold is retracted).
    -> {table: version}."""
    from beam_pipeline import checkpoints
    loc = plan.loc
    manifest, by_table = _manifest(loc, plan.run_id)
    rewritten, removes, retract = _replacements(plan, manifest, spec, summary)
    actions = {
        tables.SILVER_REVIEWS: {"mode": "append", "adds": by_table.get(tables.SILVER_REVIEWS, []) + rewritten,
                                "removes": removes, "schema": SILVER_REVIEW_SCHEMA},
        tables.DEAD_LETTERS: {"mode": "append", "adds": by_table.get(tables.DEAD_LETTERS, []),
                              "schema": DEAD_LETTER_TABLE_SCHEMA},
    }
    for rel, adds in sorted(by_table.items()):
        if rel.startswith(tables.GOLD_CHANGELOG + "/"):
            with FileSystems.open(loc.path(rel, adds[0]["path"])) as fh:
                schema = pq.read_schema(fh)
            actions[rel] = {"mode": "append", "adds": adds, "schema": schema}
    actions.update(_gold_actions(plan, manifest, top_reviewers, insights, by_table.get(tables.SILVER_REVIEWS, []),
                                 retract, merge_gold=True))
    positions = None
    run_positions = checkpoints.combine_positions(manifest["positions"])
    if plan.checkpoint_key is not None:
        positions = checkpoints.merged_positions(plan.checkpoint, run_positions, plan.max_out_of_orderness_s)
        if summary is not None:
            summary.setdefault("eventhub", {})["checkpoint"] = positions
    if hub_ends is not None:   # consumed: the merged checkpoint, or what an unbounded run's firing read
        consumed = ({pid: v["sequence_number"] for pid, v in positions.items()} if positions is not None
                    else {pid: seq for pid, (seq, _) in run_positions.items()})
        summary = {} if summary is None else summary
        summary.setdefault("eventhub", {})["partitions"] = checkpoints.partition_lag(consumed, hub_ends())
    tables._maybe_fail(fail_after, "written")
    started = time.monotonic()
    versions = tables.commit_run(loc, plan.run_id, actions, plan.base_events_version, mode="stream",
                                 source="eventhub", summary=summary, positions=positions,
                                 checkpoint_key=plan.checkpoint_key, started=plan.started, fail_after=fail_after)
    if summary is not None:
        summary["commit_seconds"] = round(time.monotonic() - started, 3)
    _drop_staged(loc, plan.run_id)
    return versions
