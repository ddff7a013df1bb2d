"""Delta Lake tables (delta-rs): the one module that owns table I/O: where tables live, how workers write
their files, how a run commits, recovery, readers and maintenance.

Layout under the output root (a local path or ``azfs://ACCOUNT/CONTAINER/PATH``)::

    silver/reviews  silver/products  dead_letters  gold/<family>      the tables people read
    gold_changelog/<family>       streaming: every pane of a window (early / on time / late), appended
    _state/gold/<family>          additive gold partials (what a later run or pane merges into)
    insights/trending_<kind>      trending products, brands, main categories per day (from _state/gold/daily_*)
    insights/recent_brands        each reviewer's most recent distinct brands
    _pipeline/events              the event log: one row per commit step of every run (a streaming
                                  run's row also holds its hub partitions' positions: the checkpoint)
    _pipeline/ingested_files      every input file a batch run ingested (path, size, modification time)
    _pipeline/_intents/RUN.json   a commit in progress (deleted when it completes)

How a run commits (``commit_run``):

1. Beam workers write Parquet files into the table folders under names that start with the run id. No
   Delta log references them yet, so no reader sees them.
2. The commit step writes the run's intent (every table's add/remove actions) and then *claims* the
   commit: it appends a ``commit_started`` row to the event log **from the event-log version the run
   started from**, with no retries. If another run committed in between, the claim fails and this run
   stops with a clear error, having changed nothing (optimistic concurrency, as Delta does per table).
3. Each table gets one Delta commit carrying the application transaction ``(APP_ID, claim version)``.
   A table whose log already holds that transaction is skipped, so finishing an interrupted commit
   twice never adds its files twice.
4. A ``committed`` row in the event log names each table's new version; the intent is deleted.

A run killed before its claim leaves unreferenced files only: readers never see them, and the next run
deletes them (``remove_orphans``). A run killed after its claim is finished by the next run, or by
``python -m beam_pipeline.tables recover`` (its intent says everything), so it is never half applied for
long. Delta has no transactions across tables: between step 3's first and last commit (milliseconds, or
until recovery after a kill) the tables' latest versions can belong to different runs. ``snapshot``
reads every table at the versions of the last ``committed`` event, which is always one whole run.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import io
from beam_pipeline.testhooks import pause_at, pause_point

LOG = logging.getLogger("reviews")
APP_ID = "amazon-reviews-beam"
EVENTS, INGESTED = "_pipeline/events", "_pipeline/ingested_files"
INTENTS = "_pipeline/_intents"
SILVER_REVIEWS, SILVER_PRODUCTS, DEAD_LETTERS, GOLD, GOLD_STATE, GOLD_CHANGELOG = (
    "silver/reviews", "silver/products", "dead_letters", "gold", "_state/gold", "gold_changelog")
INSIGHTS = "insights"
RECENT_BRANDS = f"{INSIGHTS}/recent_brands"
# the top folders the job writes under its root: orphan cleanup looks nowhere else, so other tools' tables
# kept beside them (e.g. ROOT/recommendations from training.recommend) are never touched
OWN_FOLDERS = ("silver", "gold", "gold_changelog", "_state", "dead_letters", "_pipeline", INSIGHTS)
TRENDING = {"daily_products": (f"{INSIGHTS}/trending_products", "asin"),    # daily family -> (table, key)
            "daily_brands": (f"{INSIGHTS}/trending_brands", "brand"),
            "daily_main_cats": (f"{INSIGHTS}/trending_main_cats", "main_cat")}
DEFAULT_TARGET_FILE_MB = 128

EVENT_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("event", pa.string()),            # commit_started | committed | recovered
    ("at", pa.timestamp("us", tz="UTC")),
    ("mode", pa.string()),             # batch | stream
    ("source", pa.string()),
    ("claim_version", pa.int64()),     # the event-log version of the run's claim: its transaction version
    ("table_versions", pa.string()),   # JSON {table: version} (committed rows)
    ("summary", pa.string()),          # JSON run summary: counts, reconciliation, expectations, files
    ("positions", pa.string()),        # JSON {partition: {sequence_number, watermark_s}} (stream runs)
    ("checkpoint_key", pa.string()),   # hub/consumer group the positions belong to (stream runs)
    ("duration_s", pa.float64()),
])
INGESTED_SCHEMA = pa.schema([
    ("kind", pa.string()),             # reviews | products
    ("path", pa.string()),
    ("size_bytes", pa.int64()),
    ("modified_ms", pa.int64()),       # modification time (ms since the epoch) as the store reports it
    ("run_id", pa.string()),
    ("ingested_at", pa.timestamp("us", tz="UTC")),
])


class TableError(RuntimeError):
    """A commit or table operation that cannot go on; the message says what to do."""


class ExpectationFailed(TableError):
    """An expectation with action ``fail`` was not met: the run stops before its commit."""


class ConcurrentCommitError(TableError):
    """Another run committed to the same output after this run started; nothing of this run is visible."""


# ---------------------------------------------------------------------------------------------------
# where tables live

def _connection_settings():
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    return dict(p.split("=", 1) for p in conn.split(";") if "=" in p)


class Location:
    """An output root as Beam sees it (``FileSystems`` paths) and as delta-rs sees it (URI + options).

    ``azfs://ACCOUNT/CONTAINER/PATH`` (Beam's Azure scheme) is ``az://CONTAINER/PATH`` for delta-rs with
    ``account_name=ACCOUNT``. Credentials come from ``AZURE_STORAGE_CONNECTION_STRING`` (account key; an
    ``http://`` loopback BlobEndpoint means Azurite) or, without it, from delta-rs's own Azure chain
    (``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``, managed identity, az CLI). Never
    from an option: options are logged."""

    def __init__(self, root):
        if getattr(FileSystems, "_pipeline_options", None) is None:
            # azfs:// through FileSystems needs options (credentials then come from the environment)
            from apache_beam.options.pipeline_options import PipelineOptions
            FileSystems.set_options(PipelineOptions([]))
        self.root = root.rstrip("/") if "://" in root else os.path.abspath(root)
        self.azure = root.startswith("azfs://")
        if "://" in root and not self.azure:
            raise TableError(f"Delta tables are written to local paths or azfs:// URLs, not {root}")

    def path(self, rel, *names):
        """Beam FileSystems path of a table folder or a file in it."""
        return io.join(self.root, rel, *names)

    def uri(self, rel):
        if not self.azure:
            return os.path.join(self.root, rel)
        account, _, rest = self.root[len("azfs://"):].partition("/")
        container, _, prefix = rest.partition("/")
        return f"az://{container}/{posixpath.join(prefix, rel) if prefix else rel}"

    @property
    def storage_options(self):
        if not self.azure:
            return None
        account = self.root[len("azfs://"):].split("/", 1)[0]
        # bounded retries: a store that is down fails the commit in seconds, not after object_store's default
        # three minutes (the run then says so and the next run finishes or discards it)
        opts = {"account_name": account, "max_retries": os.environ.get("DELTA_MAX_RETRIES", "4"),
                "retry_timeout": os.environ.get("DELTA_RETRY_TIMEOUT", "30s")}
        conn = _connection_settings()
        if conn.get("AccountKey"):
            opts["account_key"] = conn["AccountKey"]
        endpoint = conn.get("BlobEndpoint", "")
        if endpoint.startswith("http://"):  # Azurite: delta-rs finds a non-default port in this variable
            base = endpoint.rstrip("/")
            if base.endswith("/" + account):
                base = base[:-len(account) - 1]
            os.environ["AZURITE_BLOB_STORAGE_URL"] = base
            opts.update({"use_emulator": "true", "allow_http": "true"})
        return opts

    def __repr__(self):
        return f"Location({self.root!r})"


def _deltalake():
    import deltalake  # noqa: PLC0415 - imported where used: Beam workers that only write files skip it
    return deltalake


def open_table(loc, rel, version=None):
    """The Delta table at ``rel`` (at ``version``), or None when there is none yet."""
    dl = _deltalake()
    uri, opts = loc.uri(rel), loc.storage_options
    if not dl.DeltaTable.is_deltatable(uri, storage_options=opts):
        return None
    return dl.DeltaTable(uri, version=version, storage_options=opts)


def table_version(loc, rel):
    t = open_table(loc, rel)
    return None if t is None else t.version()


# ---------------------------------------------------------------------------------------------------
# files written by workers

def delta_compatible(table):
    """Arrow -> what Delta stores: timestamps in microseconds, UTC (Delta's only timestamp unit)."""
    fields, changed = [], False
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and (f.type.unit != "us" or f.type.tz not in ("UTC", None)):
            f, changed = f.with_type(pa.timestamp("us", tz="UTC")), True
        fields.append(f)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata)) if changed else table


def delta_schema(schema):
    return delta_compatible(schema.empty_table()).schema


_STAT_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_date, pa.types.is_string,
               pa.types.is_timestamp)


def _json_value(v):
    return v.isoformat() if hasattr(v, "isoformat") else v


def file_stats(table):
    """Delta per-file statistics: rows, null counts, min/max of plain columns (data skipping, Z-order).
    Strings only where every value is short (Delta truncates longer ones, which would need care)."""
    stats = {"numRecords": table.num_rows, "nullCount": {}, "minValues": {}, "maxValues": {}}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if pa.types.is_nested(t) or pa.types.is_map(t):
            continue
        stats["nullCount"][name] = col.null_count
        if col.null_count == len(col) or not any(p(t) for p in _STAT_TYPES):
            continue
        if pa.types.is_string(t) and _longest_chars_over(col, 32):
            continue
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, float) and (lo != lo or hi != hi):
            continue
        if pa.types.is_timestamp(t):
            lo, hi = (x.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for x in (lo, hi))
        stats["minValues"][name], stats["maxValues"][name] = _json_value(lo), _json_value(hi)
    return json.dumps(stats)


def _longest_chars_over(col, limit):
    """Whether some value of string column ``col`` has more than ``limit`` characters. Byte lengths come
    from the offsets alone, and a character is 1 to 4 bytes: only a column whose longest value is between
    ``limit`` and ``4 * limit`` bytes needs its characters counted (review text never does)."""
    longest = pc.max(pc.binary_length(col)).as_py() or 0
    if longest <= limit or longest > 4 * limit:
        return longest > limit
    return pc.max(pc.utf8_length(col)).as_py() > limit


def write_files(loc, rel, table, run_id, target_rows=None, tag=""):
    """Write ``table`` as Parquet files of at most ``target_rows`` rows into table folder ``rel``, named
    after the run; -> add descriptions (plain dicts, cheap to ship through Beam to the commit step)."""
    table = delta_compatible(table)
    if table.num_rows == 0:
        return []
    step = target_rows or table.num_rows
    out = []
    for offset in range(0, table.num_rows, step):
        part = table.slice(offset, step)
        name = f"{run_id}-{tag}{uuid.uuid4().hex[:12]}.parquet"
        path = loc.path(rel, name)
        if not loc.azure:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with FileSystems.create(path) as fh:
            pq.write_table(part, fh, compression="snappy")
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        out.append({"table": rel, "path": name, "size": size, "rows": part.num_rows, "stats": file_stats(part),
                    "modified_ms": int(time.time() * 1000)})
    return out


def remove_rows(loc, rel, version, match, run_id, key_columns):
    """Copy-on-write removal of rows from table ``rel`` (as of ``version``), to be committed by the run:
    ``match(table of key_columns)`` -> bool numpy of the rows to remove. Only files holding a matched row
    are read whole and written again, without those rows, under the run's name.
    -> (add descriptions of the rewritten files, paths of the files they replace, the removed rows)."""
    t = open_table(loc, rel, version)
    if t is None:
        return [], [], None
    adds, removes, removed = [], [], []
    for path in t.get_add_actions(flatten=True).column("path").to_pylist():
        with FileSystems.open(loc.path(rel, path)) as fh:
            hit = match(pq.read_table(fh, columns=list(key_columns)))
        if not hit.any():
            continue
        with FileSystems.open(loc.path(rel, path)) as fh:
            whole = pq.read_table(fh)
        removed.append(whole.filter(pa.array(hit)))
        adds += write_files(loc, rel, whole.filter(pa.array(~hit)), run_id, tag="rewrite-")
        removes.append(path)
    return adds, removes, pa.concat_tables(removed) if removed else None


# ---------------------------------------------------------------------------------------------------
# intents

def _intent_path(loc, run_id):
    return loc.path(INTENTS, f"{run_id}.json")


def _write_json(obj, path, loc):
    if not loc.azure:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(obj, sort_keys=True).encode())
    if _exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def _exists(path):
    """FileSystems.exists, except that Beam's azfs raises for a missing blob instead of answering False."""
    try:
        return FileSystems.exists(path)
    except Exception:  # noqa: BLE001
        return bool(_list(path))


def _read_json(path):
    with FileSystems.open(path) as fh:
        return json.loads(fh.read())


def _list(pattern):
    try:
        return [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - nothing there
        return []


def pending_intents(loc):
    return sorted(p for p in _list(loc.path(INTENTS, "*.json")))


# ---------------------------------------------------------------------------------------------------
# the commit

def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _event_row(run_id, event, claim_version, *, mode="batch", source=None, table_versions=None, summary=None,
               positions=None, checkpoint_key=None, duration_s=None):
    return {"run_id": run_id, "event": event, "at": _now(), "mode": mode, "source": source,
            "claim_version": claim_version,
            "table_versions": None if table_versions is None else json.dumps(table_versions, sort_keys=True),
            "summary": None if summary is None else json.dumps(summary, sort_keys=True, default=str),
            "positions": None if positions is None else json.dumps(positions, sort_keys=True),
            "checkpoint_key": checkpoint_key, "duration_s": duration_s}


def _append_rows(loc, rel, rows, schema, run_id, *, base_version=None, claim=None, exclusive=False, metadata=None):
    """Write ``rows`` as one file and commit it to table ``rel`` (created when absent). ``exclusive``:
    commit on top of ``base_version`` or fail (no retries). -> the new version."""
    dl = _deltalake()
    table = pa.Table.from_pylist(rows, schema=schema)
    adds = write_files(loc, rel, table, run_id, tag="log-")
    try:
        return _commit_adds(loc, rel, adds, schema, "append", claim=claim, metadata=metadata,
                            base_version=base_version if exclusive else None, exclusive=exclusive)
    except dl.exceptions.CommitFailedError as err:
        FileSystems.delete([loc.path(rel, a["path"]) for a in adds])
        raise ConcurrentCommitError(str(err)) from err


def _add_action(a):
    from deltalake.transaction import AddAction
    return AddAction(a["path"], a["size"], {}, a["modified_ms"], True, a["stats"])


def _commit_adds(loc, rel, adds, schema, mode, *, claim=None, base_version=None, exclusive=False,
                 removes=(), metadata=None):
    """One Delta commit of ``adds`` (and ``removes``: paths) to table ``rel``; -> the new version.
    The table is created by the first commit. ``claim``: the run's transaction version (idempotence)."""
    dl = _deltalake()
    from deltalake.transaction import RemoveAction, create_table_with_add_actions
    schema = delta_schema(schema)
    commit_id = uuid.uuid4().hex
    props = dl.CommitProperties(
        custom_metadata={**(metadata or {}), "commit_id": commit_id},
        app_transactions=[dl.Transaction(APP_ID, claim)] if claim is not None else None,
        max_commit_retries=0 if exclusive else None)
    actions = [_add_action(a) for a in adds]
    if exclusive and base_version is None:
        existing = None   # the table did not exist when the run started: only its creation may win
    else:
        existing = open_table(loc, rel, base_version) if exclusive else open_table(loc, rel)
    if existing is None:
        if exclusive and base_version is not None:
            raise ConcurrentCommitError(f"{rel} disappeared since version {base_version}")
        try:
            create_table_with_add_actions(loc.uri(rel), dl.Schema.from_arrow(schema), actions,
                                          mode="error", storage_options=loc.storage_options,
                                          commit_properties=props)
        except Exception as err:  # noqa: BLE001 - a concurrent first run created it first
            if "exist" in str(err).lower():
                raise ConcurrentCommitError(f"{rel} was created by another run at the same time") from err
            raise
        return 0
    now_ms = int(time.time() * 1000)
    actions += [RemoveAction(p, True, now_ms, None, None) for p in removes]
    existing.create_write_transaction(actions, mode, schema, commit_properties=props)
    return _version_of_commit(loc, rel, commit_id)


def _version_of_commit(loc, rel, commit_id):
    """The version of our commit ``commit_id`` (custom metadata) of ``rel``: others may have landed since."""
    for h in open_table(loc, rel).history(20):
        if h.get("commit_id") == commit_id:
            return h["version"]
    raise TableError(f"{rel}: commit {commit_id} is not in the table's recent history")


def _merge_rows(loc, rel, source_path, key, claim, metadata):
    """MERGE the rows staged at ``source_path`` (Arrow IPC) into table ``rel`` on ``key`` (null equals
    null): a row whose key the table holds replaces it, a new key is inserted, every other row stays in
    its file (delta-rs rewrites only the files that hold matched keys). A source with an ``_op`` column
    marks rows to delete (``_op`` = delete) among those to upsert. One commit, carrying the run's
    application transaction like every other table of the run; -> the new version."""
    dl = _deltalake()
    from beam_pipeline import coders
    with FileSystems.open(source_path) as fh:
        source = coders.table_from_bytes(fh.read())
    if not source.num_rows:   # delta-rs commits nothing for an empty MERGE: record the run's transaction
        schema = source.drop_columns(["_op"]).schema if "_op" in source.column_names else source.schema
        return _commit_adds(loc, rel, [], schema, "append", claim=claim, metadata=metadata)
    commit_id = uuid.uuid4().hex
    props = dl.CommitProperties(custom_metadata={**metadata, "commit_id": commit_id},
                                app_transactions=[dl.Transaction(APP_ID, claim)])
    table = open_table(loc, rel)
    predicate = " AND ".join(f"(t.{k} IS NOT DISTINCT FROM s.{k})" for k in key)
    merger = table.merge(delta_compatible(source), predicate, source_alias="s", target_alias="t",
                         commit_properties=props)
    if "_op" in source.column_names:
        upsert, except_cols = "s._op = 'upsert'", ["_op"]
        merger = merger.when_matched_delete("s._op = 'delete'")
    else:
        upsert, except_cols = None, None
    merger.when_matched_update_all(predicate=upsert, except_cols=except_cols) \
        .when_not_matched_insert_all(predicate=upsert, except_cols=except_cols).execute()
    return _version_of_commit(loc, rel, commit_id)


def commit_run(loc, run_id, plan, base_events_version, *, mode="batch", source=None, summary=None,
               positions=None, checkpoint_key=None, started=None, fail_after=None):
    """Commit a run: ``plan`` = {table rel: {"mode": "append"|"overwrite", "adds": [...], "schema":
    pa.Schema, "removes": [paths]}}. Returns {table: version}. ``fail_after``: test hook, raise after
    that phase ("intent", "claim", or a table name)."""
    intent = {"run_id": run_id, "base_events_version": base_events_version, "mode": mode, "source": source,
              "summary": summary, "positions": positions, "checkpoint_key": checkpoint_key,
              "started": started,
              "tables": {rel: {"mode": p["mode"], "adds": p["adds"], "removes": list(p.get("removes", ())),
                               "schema": p["schema"].serialize().to_pybytes().hex(),
                               **({"key": p["key"], "source": p["source"]} if p["mode"] == "merge" else {})}
                         for rel, p in plan.items()}}
    try:
        _write_json(intent, _intent_path(loc, run_id), loc)
    except Exception as err:  # noqa: BLE001 - storage down or unwritable: say so plainly
        raise TableError(f"could not write the commit intent of run {run_id} under {loc.root} "
                         f"({type(err).__name__}: {str(err)[:300]}); nothing of this run is visible") from err
    _maybe_fail(fail_after, "intent")
    try:
        claim = _append_rows(loc, EVENTS, [_event_row(run_id, "commit_started", None, mode=mode, source=source,
                                                      checkpoint_key=checkpoint_key)],
                             EVENT_SCHEMA, run_id, base_version=base_events_version, exclusive=True,
                             metadata={"run_id": run_id, "event": "commit_started"})
    except ConcurrentCommitError as err:
        FileSystems.delete([_intent_path(loc, run_id)])
        raise ConcurrentCommitError(
            f"another run committed to {loc.root} after this run started (event log version "
            f"{base_events_version}); nothing of run {run_id} was committed. Run it again: a batch rerun "
            f"ingests only what is still new. ({err})") from err
    except TableError:
        raise
    except Exception as err:  # noqa: BLE001 - the claim itself could not be written
        raise TableError(f"could not claim the commit of run {run_id} in {loc.uri(EVENTS)} "
                         f"({type(err).__name__}: {str(err)[:300]}); nothing of this run is visible") from err
    _maybe_fail(fail_after, "claim")
    try:
        return _apply(loc, intent, claim, fail_after)
    except TableError:
        raise
    except Exception as err:  # noqa: BLE001 - storage failed half way: the intent lets it be finished
        raise TableError(f"the commit of run {run_id} stopped after its claim ({type(err).__name__}: "
                         f"{str(err)[:300]}). Readers of the last committed run (``snapshot``) still see the "
                         f"previous run; the next run, or `python -m beam_pipeline.tables recover {loc.root}`, "
                         f"finishes this one") from err


def _maybe_fail(fail_after, phase):
    """Test hooks: raise after ``phase`` (``fail_after``), or stop there until a file appears
    (``beam_pipeline.testhooks``), so a test can kill the process at a known point. Inert unless a test
    sets them."""
    if fail_after == phase:
        raise TableError(f"test hook: failing after {phase}")
    pause_at(phase)


COMMIT_THREADS = 8   # the tables' commits are independent; on an object store each is several round trips


def _apply(loc, intent, claim, fail_after=None):
    """Commit every table of ``intent`` (a table that already carries ``claim`` was committed before an
    interruption and is skipped), several at a time, then the event log's ``committed`` row. A failure
    leaves some tables committed and the intent in place: readers go by the event log and still see the
    previous run, and the next run (``recover``) finishes this one."""
    def one(item):
        rel, p = item
        t = open_table(loc, rel)
        if t is not None and (t.transaction_version(APP_ID) or -1) >= claim:
            return rel, _version_of_claim(t, claim)   # committed before the interruption
        metadata = {"run_id": intent["run_id"], "claim": str(claim)}
        if p["mode"] == "merge":
            version = _merge_rows(loc, rel, p["source"], p["key"], claim, metadata=metadata)
        else:
            schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(p["schema"])))
            version = _commit_adds(loc, rel, p["adds"], schema, p["mode"], claim=claim,
                                   removes=p.get("removes", ()), metadata=metadata)
        _maybe_fail(fail_after, rel)
        return rel, version

    items = sorted(intent["tables"].items())
    if fail_after in intent["tables"] or pause_point() in intent["tables"]:
        versions = dict(map(one, items))  # a test stops after a named table: the ones before it are committed
    else:
        with ThreadPoolExecutor(max_workers=max(1, min(COMMIT_THREADS, len(items))),
                                thread_name_prefix="commit") as pool:
            versions = dict(pool.map(one, items))
    duration = None
    if intent.get("started"):
        duration = round(time.time() - intent["started"], 3)
    _append_rows(loc, EVENTS, [_event_row(intent["run_id"], "committed", claim, mode=intent["mode"],
                                          source=intent["source"], table_versions=versions,
                                          summary=intent["summary"], positions=intent.get("positions"),
                                          checkpoint_key=intent.get("checkpoint_key"), duration_s=duration)],
                 EVENT_SCHEMA, intent["run_id"])
    path = _intent_path(loc, intent["run_id"])
    if _exists(path):
        FileSystems.delete([path])
    LOG.info("committed run %s (transaction %d): %s", intent["run_id"], claim,
             ", ".join(f"{k}@{v}" for k, v in sorted(versions.items())))
    return versions


def _version_of_claim(t, claim):
    for h in t.history():
        if str(h.get("claim")) == str(claim):
            return h["version"]
    raise TableError(f"{t.table_uri}: no commit of transaction {claim} in its history")


def events(loc, version=None):
    """The event log as a list of dicts (oldest first); [] before the first commit."""
    t = open_table(loc, EVENTS, version)
    if t is None:
        return []
    rows = arrow_of(t).to_pylist()
    return sorted(rows, key=lambda r: (r["at"], r["event"] != "commit_started"))


def last_summary(loc):
    """The run summary (dict) of the last committed run that wrote one; None before the first."""
    for r in reversed(events(loc)):
        if r["event"] == "committed" and r["summary"]:
            return json.loads(r["summary"])
    return None


def checkpoint(loc, key):
    """The stored positions of hub/consumer group ``key`` ({partition: {"sequence_number", "watermark_s"}}):
    those of the last committed run that read it; {} before the first."""
    for r in reversed(events(loc)):
        if r["event"] == "committed" and r["checkpoint_key"] == key and r["positions"]:
            return json.loads(r["positions"])
    return {}


def recover(loc):
    """Finish every commit a killed run left after its claim; drop intents that never got a claim.
    -> the run ids finished."""
    finished = []
    log = events(loc)
    claimed = {r["run_id"]: r for r in log if r["event"] == "commit_started"}
    done = {r["run_id"] for r in log if r["event"] == "committed"}
    for path in pending_intents(loc):
        intent = _read_json(path)
        rid = intent["run_id"]
        if rid in done:
            FileSystems.delete([path])
            continue
        if rid not in claimed:
            LOG.warning("run %s stopped before its commit claim: nothing of it is visible; dropping its "
                        "intent (its files are removed as orphans)", rid)
            FileSystems.delete([path])
            continue
        claim = _claim_version(loc, rid)
        LOG.warning("finishing the commit of run %s (transaction %d), interrupted earlier", rid, claim)
        _apply(loc, intent, claim)
        finished.append(rid)
    return finished


def _claim_version(loc, run_id):
    """The event-log version holding run_id's commit_started row (its commit carries the run id)."""
    for h in open_table(loc, EVENTS).history():
        if h.get("run_id") == run_id and h.get("event") == "commit_started":
            return h["version"]
    raise TableError(f"the event log has no claim of run {run_id}")


RUNNING = "_pipeline/_running"
FOREIGN_RUN_GRACE_S = 24 * 3600


def register_run(loc, run_id):
    """Mark ``run_id`` as running (so another run's start leaves its unreferenced files alone)."""
    import socket
    _write_json({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()},
                loc.path(RUNNING, f"{run_id}.json"), loc)


def foreign_files(loc, limit=3):
    """Files under the output root when the job has never written there (no ``_pipeline/`` folder, which
    its first step creates): a few of them, [] when the root is empty or the job's own."""
    if _list(loc.path("_pipeline", "**")):
        return []
    return sorted(_list(loc.path("**")))[:limit]


def unregister_run(loc, run_id, wait_s=None):
    """Remove the run marker. ``wait_s``: after a failed run (the store may be down, and the storage
    client retries for minutes), give it that long on a background thread, then leave it: a stale marker
    only delays another run's orphan cleanup (``live_runs``)."""
    path = loc.path(RUNNING, f"{run_id}.json")

    def remove():
        try:
            if _exists(path):
                FileSystems.delete([path])
        except Exception:  # noqa: BLE001 - best effort: a stale marker only delays cleanup
            LOG.warning("could not remove the run marker %s", path)

    if wait_s is None:
        return remove()
    import threading
    worker = threading.Thread(target=remove, name="unregister-run", daemon=True)
    worker.start()
    worker.join(wait_s)
    if worker.is_alive():
        LOG.warning("the run marker %s is left behind (storage not answering)", path)


def live_runs(loc):
    """Run ids whose marker says they may still be running: same host and the process is alive, or
    another host and younger than a day (a killed run's process is gone: its files are orphans)."""
    import socket
    live = set()
    for path in _list(loc.path(RUNNING, "*.json")):
        try:
            m = _read_json(path)
        except Exception:  # noqa: BLE001 - half written: treat as live, it is young
            continue
        if m.get("host") == socket.gethostname():
            try:
                os.kill(int(m["pid"]), 0)
                live.add(m["run_id"])
            except (ProcessLookupError, ValueError):
                FileSystems.delete([path])
            except PermissionError:
                live.add(m["run_id"])
        elif time.time() - m.get("started", 0) < FOREIGN_RUN_GRACE_S:
            live.add(m["run_id"])
    return live


def committed_run_ids(loc):
    return {r["run_id"] for r in events(loc) if r["event"] == "committed"}


def remove_orphans(loc, keep_run_ids=(), tables=None):
    """Delete data files no commit references: files of runs that never committed (named after their
    run id) in every table folder. -> number of files removed."""
    live = live_runs(loc) | set(keep_run_ids)
    committed = committed_run_ids(loc) | live
    pending = set()
    for p in pending_intents(loc):
        pending.add(posixpath.basename(p.replace(os.sep, "/"))[:-len(".json")])
    removed = []
    for rel in tables or _data_folders(loc):
        referenced = None
        for path in _list(loc.path(rel, "*.parquet")):
            name = posixpath.basename(path.replace(os.sep, "/"))
            run = name.split("-", 1)[0]
            if run in committed or run in pending:
                continue
            if referenced is None:
                t = open_table(loc, rel)
                referenced = set() if t is None else {os.path.basename(u) for u in t.file_uris()}
            if name not in referenced:
                removed.append(path)
    for path in _list(loc.path("_pipeline/_staged", "*", "*")):   # manifests of runs no longer running
        run = posixpath.basename(posixpath.dirname(path.replace(os.sep, "/")))
        if run not in live and run not in pending:
            removed.append(path)
    if removed:
        FileSystems.delete(removed)
        LOG.info("removed %d files of runs that never committed", len(removed))
    if not loc.azure:
        for d in Path(loc.path("_pipeline/_staged")).glob("*") if os.path.isdir(loc.path("_pipeline/_staged")) else []:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    return len(removed)


def _data_folders(loc):
    """Every folder holding Parquet files under the root: the tables, and the folders a run killed
    before its first commit wrote into (no Delta log there yet)."""
    root = loc.root.replace(os.sep, "/").rstrip("/")
    folders = set(all_tables(loc))
    for path in _list(loc.path("**", "*.parquet")):
        p = path.replace(os.sep, "/")
        if "/_delta_log/" not in p and p.startswith(root + "/"):
            folders.add(posixpath.dirname(p[len(root) + 1:]))
    return sorted(f for f in folders if f.split("/", 1)[0] in OWN_FOLDERS)


def all_tables(loc):
    """Every Delta table under the root (the folders with a _delta_log)."""
    out = []
    for path in _list(loc.path("**", "_delta_log", "00000000000000000000.json")):
        p = path.replace(os.sep, "/")
        root = loc.root.replace(os.sep, "/").rstrip("/")
        rel = p[len(root) + 1:].rsplit("/_delta_log/", 1)[0]
        out.append(rel)
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------------
# readers

def snapshot_versions(loc):
    """{table: version} of the last committed run (the consistent view across tables)."""
    latest = {}
    for r in events(loc):
        if r["event"] == "committed":
            latest.update(json.loads(r["table_versions"]))
    return latest


def read(loc, rel, version=None, columns=None):
    """A table as Arrow (at ``version``; default: as of the last committed run)."""
    if version is None:
        version = snapshot_versions(loc).get(rel)
    t = open_table(loc, rel, version)
    if t is None:
        return None
    return arrow_of(t, columns)


def dataset(loc, rel, version=None):
    """A pyarrow dataset of the table (what DuckDB, pandas and Polars read), files of that version only."""
    if version is None:
        version = snapshot_versions(loc).get(rel)
    t = open_table(loc, rel, version)
    return None if t is None else plain_dataset(t)


def plain_dataset(delta_table):
    """The version's Parquet files as a pyarrow dataset WITHOUT the per-file expressions delta-rs derives
    from the Delta statistics. delta-rs 1.6 turns a column without min/max statistics (``file_stats``
    writes none for strings over 32 characters) into ``col >= null``, so a filter on that column silently
    dropped whole files (DuckDB ``where title = ...`` found 0 of 20 rows). Parquet's own row-group
    statistics still prune.

    A local table's files are read through Arrow's own local filesystem, not delta-rs's Python filesystem
    wrapper: Arrow's I/O threads calling into that wrapper left the interpreter to abort at exit ("terminate
    called without an active exception", exit 134, after all the work was done; delta-rs issue 2184, Polars
    issue 24169). Azure tables keep the wrapper (it carries delta-rs's credentials)."""
    import pyarrow.dataset as pds
    fmt = pds.ParquetFileFormat()
    if delta_table.table_uri.startswith("file://"):
        import pyarrow.fs as pfs
        fs, schema = pfs.LocalFileSystem(), pa.schema(delta_table.schema().to_arrow())
        paths = [u.removeprefix("file://") for u in delta_table.file_uris()]
    else:
        full = delta_table.to_pyarrow_dataset()
        fs, schema = full.filesystem, full.schema
        paths = [f.path for f in full.get_fragments()]
    return pds.FileSystemDataset([fmt.make_fragment(p, filesystem=fs) for p in paths], schema, fmt, fs)


def arrow_of(delta_table, columns=None):
    """An open DeltaTable's rows as one Arrow table (``columns``: a subset), through ``plain_dataset``;
    ``DeltaTable.to_pyarrow_table`` reads through the wrapper that aborts the interpreter at exit."""
    return plain_dataset(delta_table).to_table(columns=columns)


# ---------------------------------------------------------------------------------------------------
# maintenance: optimize, vacuum, history (python -m beam_pipeline.tables --help)

def _record_maintenance(loc, operation, versions, detail):
    """Maintenance commits are runs of their own in the event log, so ``snapshot`` follows them."""
    run_id = f"{operation}_{_now().strftime('%Y%m%dT%H%M%S%fZ')}"
    _append_rows(loc, EVENTS, [_event_row(run_id, "committed", None, mode=operation, table_versions=versions,
                                          summary=detail)], EVENT_SCHEMA, run_id)


def file_stats_of(loc, rel, version=None):
    """(files, rows, median rows per file) of a table version."""
    t = open_table(loc, rel, version)
    if t is None:
        return 0, 0, 0
    adds = pa.table(t.get_add_actions(flatten=True))
    rows = sorted(adds["num_records"].to_pylist()) if "num_records" in adds.column_names else []
    median = rows[len(rows) // 2] if rows else 0
    return len(rows), sum(r or 0 for r in rows), median


def optimize(loc, rels=None, target_file_mb=DEFAULT_TARGET_FILE_MB, zorder=True):
    """Compact every table's small files (silver reviews: Z-ordered on asin) and record it."""
    versions, detail = {}, {}
    for rel in rels or all_tables(loc):
        t = open_table(loc, rel)
        before = file_stats_of(loc, rel)
        opt = t.optimize
        if zorder and rel == SILVER_REVIEWS:
            metrics = opt.z_order(["asin"], target_size=target_file_mb << 20)
        else:
            metrics = opt.compact(target_size=target_file_mb << 20)
        t = open_table(loc, rel)
        versions[rel] = t.version()
        detail[rel] = {"files_before": before[0], "files_after": file_stats_of(loc, rel)[0],
                       "files_added": metrics.get("numFilesAdded"), "files_removed": metrics.get("numFilesRemoved")}
    _record_maintenance(loc, "optimize", versions, detail)
    return detail


def vacuum(loc, retention_hours=168, dry_run=False):
    """Delete files no version within the retention references (Delta's vacuum; the versions the last
    committed run names are always kept) and files of runs that never committed. -> {table: [files]}"""
    snap = snapshot_versions(loc)
    out = {}
    for rel in all_tables(loc):
        t = open_table(loc, rel)
        keep = [snap[rel]] if rel in snap else None
        out[rel] = t.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False,
                            keep_versions=keep)
    if not dry_run:
        out["orphans"] = remove_orphans(loc)
    return out


def describe(loc):
    """One line per table: version (as of the last committed run), files, rows, median rows per file."""
    snap = snapshot_versions(loc)
    lines = []
    for rel in all_tables(loc):
        v = snap.get(rel, table_version(loc, rel))
        files, rows, median = file_stats_of(loc, rel, v)
        latest = table_version(loc, rel)
        lines.append(f"{rel:40s} v{v}{'' if latest == v else f' (latest v{latest})':14s} {files:6,} files "
                     f"{rows:11,} rows  median {median:,} rows/file")
    return lines


def main(argv=None):
    import sys

    from beam_pipeline.cli import ArgumentParser
    parser = ArgumentParser(
        prog="python -m beam_pipeline.tables",
        description="Inspect and maintain the job's Delta tables under an output root (local path or "
                    "azfs://ACCOUNT/CONTAINER/PATH; Azure credentials from AZURE_STORAGE_CONNECTION_STRING or "
                    "delta-rs's Azure chain).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("show", help="every table: version, files, rows, median rows per file")
    p.add_argument("output")
    p = sub.add_parser("history", help="the event log (default) or one table's Delta history")
    p.add_argument("output")
    p.add_argument("--table", default=None, help="a table, e.g. silver/reviews (default: the event log)")
    p.add_argument("--limit", type=int, default=20, help="newest entries to show. Default 20")
    p = sub.add_parser("optimize", help="compact small files (silver/reviews Z-ordered on asin)")
    p.add_argument("output")
    p.add_argument("--table", action="append", default=None, help="only this table (repeatable). Default: all")
    p.add_argument("--target_file_mb", type=int, default=DEFAULT_TARGET_FILE_MB,
                   help=f"size of the compacted files. Default {DEFAULT_TARGET_FILE_MB}")
    p.add_argument("--no_zorder", action="store_true", help="plain compaction for silver/reviews too")
    p = sub.add_parser("vacuum", help="delete files older versions and failed runs left (ends time travel "
                                      "to versions older than the retention)")
    p.add_argument("output")
    p.add_argument("--retention_hours", type=int, default=168,
                   help="keep files that versions of the last N hours need. Default 168 (7 days, Delta's "
                        "default); 0 keeps only the current versions")
    p.add_argument("--dry_run", action="store_true", help="list what would be deleted, delete nothing")
    p = sub.add_parser("recover", help="finish a commit a killed run left (runs do this at start too)")
    p.add_argument("output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loc = Location(args.output)
    if args.command != "recover" and not all_tables(loc):
        print(f"no Delta tables under {loc.root}", file=sys.stderr)
        return 2
    if args.command == "show":
        print("\n".join(describe(loc)))
    elif args.command == "history":
        if args.table:
            for h in open_table(loc, args.table).history(args.limit):
                print(f"v{h['version']:<5} {datetime.datetime.fromtimestamp(h['timestamp'] / 1000, datetime.timezone.utc):%Y-%m-%d %H:%M:%S} "
                      f"{h.get('operation', ''):12s} run {h.get('run_id', '-')}")
        else:
            for r in events(loc)[-args.limit:]:
                print(f"{r['at']:%Y-%m-%d %H:%M:%S} {r['event']:15s} {r['mode']:9s} run {r['run_id']}  "
                      f"{r['table_versions'] or ''}")
    elif args.command == "optimize":
        for rel, d in optimize(loc, args.table, args.target_file_mb, not args.no_zorder).items():
            print(f"{rel:40s} files {d['files_before']} -> {d['files_after']}")
    elif args.command == "vacuum":
        for rel, files in vacuum(loc, args.retention_hours, args.dry_run).items():
            n = files if isinstance(files, int) else len(files)
            print(f"{rel:40s} {'would delete' if args.dry_run else 'deleted'} {n} files")
    elif args.command == "recover":
        done = recover(loc)
        print(f"finished {len(done)} interrupted commits: {', '.join(done) or 'none'}")
    return 0




def is_delta_folder(path):
    return bool(_list(io.join(str(path).rstrip("/"), "_delta_log", "*.json")))


def read_folder(path, columns=None):
    """A table folder as Arrow, whatever wrote it: a Delta table (the version of the last committed run
    when it is one of the job's tables under an output root, else its latest version) or a folder of
    hive-partitioned Parquet (a streaming run's silver)."""
    import pyarrow.dataset as ds
    path = str(path).rstrip("/")
    if not is_delta_folder(path):
        return ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=columns)
    for rel in (SILVER_REVIEWS, SILVER_PRODUCTS, DEAD_LETTERS):
        if path.endswith("/" + rel) or path.endswith(os.sep + rel.replace("/", os.sep)):
            return read(Location(path[:-len(rel) - 1]), rel, columns=columns)
    loc = Location(path)
    return arrow_of(_deltalake().DeltaTable(loc.uri(""), storage_options=loc.storage_options), columns)


if __name__ == "__main__":
    from beam_pipeline import hard_exit
    hard_exit(main())
