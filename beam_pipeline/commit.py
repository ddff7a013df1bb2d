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
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import typing

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import coders, io, tables
from beam_pipeline.tables import Location
from transforms import gold
from transforms.enrich import REVIEW_KEY, content_hashes_by_bucket
from transforms.schemas import DEAD_LETTER_SCHEMA, SILVER_PRODUCT_SCHEMA, SILVER_REVIEW_SCHEMA

LOG = logging.getLogger("reviews")
STAGED = "_pipeline/_staged"
DEAD_LETTER_TABLE_SCHEMA = pa.schema([*DEAD_LETTER_SCHEMA, ("run_id", pa.string())])
ROW_BYTES = 300            # Parquet bytes per silver row (snappy), measured on generated and real reviews
BUCKET_INPUT_BYTES = 64 << 20   # input bytes (uncompressed) per shuffle bucket when --shuffle_buckets=0
GZ_RATIO = 3.5             # uncompressed / gzip size of review JSON lines (real files: 3.1-3.8)


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
    known: dict                    # {bucket: sorted content hashes of the reviews silver holds}
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


def _match(patterns, kind):
    out = []
    for pattern in patterns:
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as err:  # noqa: BLE001 - the store's own message says why
            raise InputError(f"--{kind} {pattern}: cannot list it ({type(err).__name__}: {str(err)[:300]})") \
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


def prepare_batch(o, review_patterns, product_patterns, run_id):
    """Finish what a killed run left, remove files of runs that never committed, pick the files to read
    and load what dedupe and the join need from the tables."""
    loc = Location(o.output)
    finished = tables.recover(loc)
    if finished:
        LOG.warning("finished the interrupted commit of %s", ", ".join(finished))
    tables.remove_orphans(loc, keep_run_ids=[run_id])
    base = tables.table_version(loc, tables.EVENTS)
    snapshot = tables.snapshot_versions(loc)
    full = bool(o.full_refresh) or base is None
    ingested = {}
    if not full and tables.INGESTED in snapshot:
        log = tables.read(loc, tables.INGESTED, snapshot[tables.INGESTED]).to_pylist()
        for r in sorted(log, key=lambda r: r["ingested_at"]):  # a file read again: its latest version counts
            ingested[(r["kind"], r["path"])] = (r["size_bytes"], r["modified_ms"])
    files, counts, read = [], {}, {"reviews": [], "products": []}
    est_bytes = 0
    for kind, patterns in (("reviews", review_patterns), ("products", product_patterns)):
        c = counts.setdefault(kind, {"new": 0, "changed": 0, "skipped": 0})
        for m in _match(patterns, kind):
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
            t = tables.read(loc, tables.SILVER_REVIEWS, snapshot[tables.SILVER_REVIEWS], columns=list(REVIEW_KEY))
            if t is not None and t.num_rows:
                known = content_hashes_by_bucket(t, n_buckets)
        products_version = snapshot.get(tables.SILVER_PRODUCTS)
    for kind, c in counts.items():
        LOG.info("%s files: %d new, %d changed, %d already ingested (skipped)%s", kind, c["new"], c["changed"],
                 c["skipped"], " [full refresh]" if full else "")
    return BatchPlan(loc, run_id, read["reviews"], read["products"], files, counts, products_version, known,
                     _target_rows(o), n_buckets, full, base, time.time())


# ---------------------------------------------------------------------------------------------------
# the manifest the graph's last step writes

def stage_manifest(loc, run_id, items):
    """Inside the pipeline: add descriptions and gold partials -> ``_pipeline/_staged/RUN_ID/``."""
    root = loc.path(STAGED, run_id)
    adds = [i for i in items if "table" in i]
    golds = []
    for item in items:
        if "gold" in item and item["partial"] is not None and item["partial"].num_rows:
            path = io.join(root, f"gold-{item['gold']}.arrow")
            io.write_bytes(coders.table_to_bytes(item["partial"]), path)
            golds.append({"family": item["gold"], "path": path})
    manifest = io.join(root, "manifest.json")
    io.write_bytes(json.dumps({"run_id": run_id, "adds": adds, "gold": golds}).encode(), manifest)
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

def gold_tables(plan, manifest, top_reviewers):
    """-> {family: (finalised gold table, new state)} for the families this run computed."""
    out = {}
    snapshot = tables.snapshot_versions(plan.loc)
    for g in manifest["gold"]:
        name = g["family"]
        partial = coders.table_from_bytes(_read_bytes(g["path"]))
        family = gold.family(name, top_reviewers)
        state_rel = f"{tables.GOLD_STATE}/{name}"
        if family.source == "reviews" and not plan.full_refresh and state_rel in snapshot:
            old = tables.read(plan.loc, state_rel, snapshot[state_rel])
            if old is not None and old.num_rows:  # stored in microseconds: back to the partial's own types
                partial = gold.merge([old.select(partial.column_names).cast(partial.schema), partial])
        out[name] = (tables.delta_compatible(gold.finalize(family, partial)), tables.delta_compatible(partial))
    return out


def commit_batch(plan, o, summary, fail_after=None):
    """Build every table's actions from the staged manifest and commit them as one run (see
    ``beam_pipeline.tables``). -> {table: version}."""
    loc = plan.loc
    manifest = json.loads(_read_bytes(io.join(loc.path(STAGED, plan.run_id), "manifest.json")))
    by_table = {}
    for a in manifest["adds"]:
        by_table.setdefault(a["table"], []).append(a)
    mode = "overwrite" if plan.full_refresh else "append"
    actions = {
        tables.SILVER_REVIEWS: {"mode": mode, "adds": by_table.get(tables.SILVER_REVIEWS, []),
                                "schema": SILVER_REVIEW_SCHEMA},
        tables.DEAD_LETTERS: {"mode": mode, "adds": by_table.get(tables.DEAD_LETTERS, []),
                              "schema": DEAD_LETTER_TABLE_SCHEMA},
    }
    if tables.SILVER_PRODUCTS in by_table or plan.full_refresh:
        actions[tables.SILVER_PRODUCTS] = {"mode": "overwrite", "adds": by_table.get(tables.SILVER_PRODUCTS, []),
                                           "schema": SILVER_PRODUCT_SCHEMA}
    computed = gold_tables(plan, manifest, o.top_reviewers)
    for name, (final, state) in sorted(computed.items()):
        for rel, table in ((f"{tables.GOLD}/{name}", final), (f"{tables.GOLD_STATE}/{name}", state)):
            actions[rel] = {"mode": "overwrite", "adds": tables.write_files(loc, rel, table, plan.run_id),
                            "schema": table.schema}
    if plan.full_refresh:  # families an earlier run wrote and this one did not compute (a model dropped since)
        for rel in tables.all_tables(loc):
            if rel.startswith((tables.GOLD + "/", tables.GOLD_STATE + "/")) and rel not in actions:
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
