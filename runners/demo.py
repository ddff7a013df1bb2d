"""`make run`: the whole job end to end on the local stack, batch, insights, model, then streaming, with
embedded defaults.

    python -m runners.demo [--reviews 20000] [--seed 7] [--output out/batch]
                           [--model-output out/model] [--scored-output out/batch_scored]
                           [--stream-reviews 3000] [--stream-seed 8] [--stream-output out/stream]
                           [--only {batch,insights,model,stream}]

Batch leg:
1. starts Azurite (the local Azure Blob / ADLS stand-in) on 127.0.0.1:10000, or reuses the running one;
2. generates synthetic reviews and product metadata with ~1 % dirty rows and ~1 % duplicates
   (runners.generate; no real data is shipped);
3. uploads them to the container ``amazon`` (blobs raw/reviews/..., raw/metadata/...);
4. runs the batch job from ``azfs://devstoreaccount1/amazon/raw/...`` on the DirectRunner's in-process
   FnApiRunner with ``--full_refresh``, committing the Delta tables (silver, gold, dead letters, event log)
   under a local folder; checks the run summary against the generator's manifest and prints the versions;
5. lands one newly generated file in the container and runs the job again (incremental, the default): it
   reads only that file, and the versions move on;
6. says how to query the tables.

Insights leg (from the batch leg's tables):
1. prints the trending products of the day with the most trending rows (insights/trending_products);
2. picks the reviewer with the most recent brands and prints them, newest first (insights/recent_brands);
3. trains the recommender on the batch leg's silver (python -m training.recommend train, exported under
   OUTPUT/recommendations) and prints that reviewer's recommendations with the product titles.

Model leg:
1. trains a small sentiment model on the batch leg's silver (python -m training: tf.Transform + Keras,
   categories from main_cat, split by review-key hash, full-batch L-BFGS; the real-data evaluation is
   `make train-real`);
2. runs the batch job again from the same azfs:// input with --sentiment_model;
3. prints the predicted-sentiment gold totals and where the report and model card are.

Streaming leg (a clean slate every time: the hub keeps its events and the job resumes from its
checkpoint, so the endpoint's data and the output folder of the previous run are deleted first):
1. stops the local Event Hubs endpoint, deletes its data (.local/eventhubs) and the streaming output,
   and starts it again (runners.local_stack eventhubs: 127.0.0.1:5674, or a free port if that is
   taken; hub "reviews", 4 partitions);
2. generates a separate, smaller data set (3,000 reviews, another seed, its own folder);
3. publishes every review line as one event, round robin over the 4 partitions (runners.publish).
   A line over 1 MiB cannot be an event (the Event Hubs message limit): the publisher rejects and
   counts it, and it is left out of the expected counts;
4. runs the streaming job (``python -m beam_pipeline --source=eventhub ...``, 30-day windows) from the
   earliest event until the hub has been idle for 3 s;
5. says where the windowed outputs are, prints the reconciliation (events read = silver + dead letters +
   duplicates), checks it and the files on disk against the manifest, and shows gold rows.

Exit status 0 when every check passes, 1 otherwise. Azurite and the Event Hubs endpoint keep running
afterwards (so the data can be inspected); `make stop` stops both.
"""
import argparse
import glob
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runners import generate as gen
from runners import local_stack as stack

CONTAINER = "amazon"
STREAM_JOB_OPTIONS = ["--stop_after_idle_s=3", "--window_size=30d", "--max_out_of_orderness=3650d",
                      "--start_position=earliest"]


def _azurite():
    """The connection string of the running Azurite; starts it (detached, idempotent) if needed."""
    if not stack.running_connection_string():
        rc = stack.main(["azurite", "start"])
        if rc:
            raise SystemExit(f"could not start Azurite (rc {rc}); see {stack.DEFAULT_LOCATION}")
    print(f"[batch 1/6] Azurite running ({stack.redact(stack.running_connection_string())})")
    return stack.running_connection_string()


def _reasons(by_reason):
    """{"stage.reason": n} -> {"reason": n}, summed over stages (the manifest counts by reason)."""
    out = {}
    for name, n in by_reason.items():
        reason = name.split(".", 1)[1]
        out[reason] = out.get(reason, 0) + n
    return out


def _check(summary, manifest, kinds=("reviews", "products")):
    """Compare the job's counts with what the generator injected."""
    problems = []
    for kind in kinds:
        got, want = summary[kind], manifest[kind]
        for key, wkey in (("records_read", "records_in"), ("silver_rows", "silver_rows"),
                          ("dead_letters", "dead"), ("duplicates_dropped", "duplicates")):
            if got[key] != want[wkey]:
                problems.append(f"{kind}.{key}: job {got[key]} != generator {want[wkey]}")
        got_reasons = _reasons(got["dead_letters_by_reason"])
        if got_reasons != want["dead_by_reason"]:
            problems.append(f"{kind} dead letters by reason: job {got_reasons} != generator {want['dead_by_reason']}")
    return problems


# --------------------------------------------------------------------------------------------- batch
def _versions(output, indent="            "):
    from beam_pipeline import tables
    lines = tables.describe(tables.Location(output))
    return "\n".join(indent + line for line in lines if not line.startswith(("_state/", "gold/", "gold_changelog/")))


def batch_leg(a):
    cs = _azurite()
    manifest = gen.generate(a.data, a.reviews, files=4, seed=a.seed, gzip=True)
    print(f"[batch 2/6] generated {a.reviews:,} reviews and {manifest['products']['records_in']:,} product lines "
          f"in {a.data} (manifest.json lists every injected defect)")
    stack.ensure_container(cs, CONTAINER)
    _clear_blobs(cs, "raw/")  # files an earlier demo landed would be read too
    blobs = stack.upload_tree(cs, CONTAINER, a.data, prefix="raw")
    print(f"[batch 3/6] uploaded {len(blobs)} blobs to {stack.azfs_url(CONTAINER, 'raw')}")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = cs  # the job reads credentials from the environment only
    from beam_pipeline.pipeline import run
    output = os.path.abspath(a.output)
    argv = ["--source=adls", f"--reviews={stack.azfs_url(CONTAINER, 'raw/reviews/*.jsonl.gz')}",
            f"--products={stack.azfs_url(CONTAINER, 'raw/metadata/*.jsonl.gz')}", f"--output={output}"]
    print("[batch 4/6] running the batch job (DirectRunner / FnApiRunner), --full_refresh: the demo rebuilds its "
          "tables from scratch each time ...", flush=True)
    summary = run(argv + ["--full_refresh"])
    problems = _check(summary, manifest)
    if problems:
        print("[batch 4/6] MISMATCH against the generator's manifest:\n  " + "\n  ".join(problems))
        return False
    print(f"[batch 4/6] every count matches the generator's manifest ({Path(a.data) / 'manifest.json'}). "
          f"Delta tables after run 1:\n{_versions(output)}")

    # a new file lands: the next run (incremental, the default) reads that file only
    extra_dir = Path(a.data).parent / "extra"
    shutil.rmtree(extra_dir, ignore_errors=True)
    extra = gen.generate(str(extra_dir), max(500, a.reviews // 10), files=1, seed=a.seed + 1000, gzip=True)
    landed = "raw/reviews/landed-later.jsonl.gz"
    stack.upload_tree(cs, CONTAINER, extra_dir / "reviews", prefix=landed.rsplit("/", 1)[0])
    src = next((extra_dir / "reviews").glob("*.jsonl.gz"))
    _rename_blob(cs, f"raw/reviews/{src.name}", landed)
    print(f"[batch 5/6] a new file landed: {stack.azfs_url(CONTAINER, landed)} ({extra['reviews']['records_in']:,} "
          "lines); running the job again, incrementally ...", flush=True)
    second = run(argv)
    files = second["files"]["reviews"]
    ok = (files["new"] == 1 and files["changed"] == 0 and second["reviews"]["files_read"] == 1
          and second["reviews"]["records_read"] == extra["reviews"]["records_in"] and second["reviews"]["reconciled"])
    print(f"[batch 6/6] {'OK' if ok else 'UNEXPECTED'}: the second run read {files['new']} new file and skipped "
          f"{files['skipped']} already ingested; {second['reviews']['silver_rows']:,} rows appended "
          f"({second['reviews']['duplicates_of_earlier_runs']:,} were already in silver). Delta tables after run 2:\n"
          f"{_versions(output)}")
    print("Query them, e.g. (DuckDB over the Delta tables, at the last committed run's versions):\n"
          f"  .venv/bin/python -c \"from beam_pipeline import tables; import duckdb; "
          f"g = tables.dataset(tables.Location('{a.output}'), 'gold/reviews_by_rating'); "
          f"print(duckdb.sql('select overall, n_reviews from g where window_start is null order by 1'))\"\n"
          f"  .venv/bin/python -m beam_pipeline.tables show {a.output}      (history, optimize, vacuum: --help)",
          flush=True)
    return ok


def insights_leg(a):
    """Trending products, one reviewer's recent brands and their recommendations, from the batch leg's tables."""
    from beam_pipeline import tables
    loc = tables.Location(a.output)
    trending = tables.read(loc, tables.TRENDING["daily_products"][0])
    if trending is None or not trending.num_rows:
        print(f"[insights 1/3] no trending table under {a.output}/insights (was the batch leg run with --no_insights?)")
        return False
    days = trending.group_by("day").aggregate([([], "count_all")]).sort_by([("count_all", "descending"),
                                                                             ("day", "descending")])
    day = days["day"][0].as_py()
    top = trending.filter(pa_compute().equal(trending["day"], days["day"][0])).sort_by("rank").slice(0, 5)
    print(f"[insights 1/3] trending products on {day} ({trending['rule'][0].as_py()} rule: that day's count against "
          f"the trailing days; {tables.TRENDING['daily_products'][0]}, {trending.num_rows:,} rows over "
          f"{days.num_rows:,} days):")
    for r in top.to_pylist():
        print(f"            #{r['rank']} {r['asin']:12s} {r['count']:4d} reviews that day, baseline {r['baseline']:.2f}, "
              f"score {r['score']:.2f}")
    recent = tables.read(loc, tables.RECENT_BRANDS)
    if recent is None or not recent.num_rows:
        print(f"[insights 2/3] no recent-brands table under {a.output}/insights")
        return False
    recent = recent.sort_by([("n_brands", "descending"), ("reviewer_id", "ascending")])
    reviewer = recent["reviewer_id"][0].as_py()
    brands = recent["brands"][0].as_py()
    print(f"[insights 2/3] reviewer {reviewer}: {len(brands)} recent brands, newest first "
          f"({tables.RECENT_BRANDS}, {recent.num_rows:,} reviewers): {', '.join(brands[:8])}"
          + (" ..." if len(brands) > 8 else ""))
    model_dir = os.path.join(a.output, "recommendations")
    print(f"[insights 3/3] training the recommender on {a.output}/silver/reviews (python -m training.recommend "
          f"train) ...", flush=True)
    rc, output = _run_showing_progress([sys.executable, "-m", "training.recommend", "train",
                                        f"--silver={os.path.join(a.output, 'silver', 'reviews')}",
                                        f"--output={model_dir}"], "[recommend")
    if rc != 0:
        print(f"[insights 3/3] training the recommender failed (exit {rc}):\n{output[-3000:]}")
        return False
    from training.recommend.export import Recommender
    rec = Recommender.load(model_dir)
    t = time.perf_counter()
    picks = rec.recommend(reviewer, 5)
    ms = (time.perf_counter() - t) * 1000
    products = tables.read(loc, tables.SILVER_PRODUCTS)
    titles = dict(zip(products["asin"].to_pylist(), products["title"].to_pylist())) if products is not None else {}
    print(f"[insights 3/3] recommendations for {reviewer} ({rec.model}, from the exported tables in {ms:.2f} ms; "
          f"{model_dir}):")
    for r in picks:
        print(f"            #{r['rank']} {r['asin']:12s} {(titles.get(r['asin']) or '')[:60]}")
    return bool(picks)


def _run_showing_progress(cmd, marker, indent="            "):
    """Run ``cmd``, printing the lines of its output that start with ``marker`` (its progress lines) as
    they come -> (exit status, its whole output, stdout and stderr together, for a failure message)."""
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(marker):
                print(indent + line.rstrip(), flush=True)
    return proc.returncode, "".join(lines)


def pa_compute():
    import pyarrow.compute as pc
    return pc


def _clear_blobs(cs, prefix):
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(cs).get_container_client(CONTAINER)
    for blob in container.list_blobs(name_starts_with=prefix):
        container.delete_blob(blob.name)


def _rename_blob(cs, src, dst):
    """Give the uploaded file a name no earlier demo run used (a new file to the incremental run)."""
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(cs).get_container_client(CONTAINER)
    data = container.download_blob(src).readall()
    container.upload_blob(dst, data, overwrite=True)
    container.delete_blob(src)


# --------------------------------------------------------------------------------------------- model
def model_leg(a):
    """Train a small sentiment model on the batch leg's silver, then score a batch run with it."""
    silver = os.path.join(a.output, "silver", "reviews")
    print(f"[model 1/3] training a sentiment model on {silver} (tf.Transform + Keras; generated reviews, "
          "categories from main_cat, split by review-key hash, full-batch L-BFGS) ...", flush=True)
    cmd = [sys.executable, "-m", "training", f"--silver={silver}", "--category=main_cat", "--split=hash",
           f"--output={a.model_output}", "--bootstrap=200"]
    rc, output = _run_showing_progress(cmd, "[training")
    if rc != 0:
        print(f"[model 1/3] training failed (exit {rc}):\n{output[-4000:]}")
        return False
    import json
    with open(os.path.join(a.model_output, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    m = report["results"]["model"]
    print(f"[model 1/3] trained in {report['timing']['total_s']:.0f} s: test AUC {m['roc_auc']:.3f}, macro-F1 "
          f"{m['macro_f1']:.3f} (generated text is easy; the real-data evaluation is `make train-real`)")
    model = os.path.join(a.model_output, "saved_model")
    print(f"[model 2/3] scoring: the batch job again, from the same azfs:// input, with --sentiment_model={model}",
          flush=True)
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = _azurite()  # the batch leg's Azurite (reused when running)
    from beam_pipeline.pipeline import run
    summary = run(["--source=adls", f"--reviews={stack.azfs_url(CONTAINER, 'raw/reviews/*.jsonl.gz')}",
                   f"--products={stack.azfs_url(CONTAINER, 'raw/metadata/*.jsonl.gz')}",
                   f"--output={os.path.abspath(a.scored_output)}", f"--sentiment_model={model}", "--full_refresh"])
    from beam_pipeline import tables
    gold = tables.read(tables.Location(os.path.abspath(a.scored_output)), "gold/predicted_sentiment")
    totals = gold.filter(gold["window_start"].is_null()).to_pylist()
    print(f"[model 3/3] {summary['reviews']['silver_rows']:,} silver rows scored into {a.scored_output}/silver "
          f"(columns predicted_sentiment, sentiment_probability); gold/predicted_sentiment all-time:")
    for row in totals:
        print(f"            {row['predicted_sentiment']:9s} {row['n_reviews']:7,} reviews, mean probability "
              f"{row['mean_sentiment_probability']:.3f}, agrees with the rating on {row['agreement_share']:.1%} "
              "of polar-rated reviews")
    print(f"  report: {a.model_output}/report.md, model card: {a.model_output}/model_card.md", flush=True)
    return True


# --------------------------------------------------------------------------------------------- streaming
def stream_output_problem(path):
    """Why the streaming leg may not delete ``path`` first (None: it may): a folder holding anything the
    streaming job does not write is the user's."""
    from beam_pipeline.tables import OWN_FOLDERS   # the top folders the job writes (insights included)
    out = Path(path)
    if not out.is_dir():
        return None
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_FOLDERS)
    if foreign:
        return (f"--stream-output {out} holds {', '.join(foreign[:5])}, which the streaming job does not write; "
                "not deleting it. Choose another --stream-output (or empty it yourself)")
    return None


def _clear_stream_output(path):
    """Delete the previous streaming output (``main`` has checked it is the job's own)."""
    problem = stream_output_problem(path)
    if problem:   # filled between the check and this leg
        raise SystemExit(f"error: {problem}")
    if Path(path).is_dir():
        shutil.rmtree(path)


def _fresh_endpoint():
    """Stop the recorded endpoint, delete its data, start it again: -> its state (port, connection string)."""
    stopped = stack.stop_eventhubs()
    data_dir = stack.EVENTHUBS_DEFAULT_DATA_DIR
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
        state, _ = stack.start_eventhubs()
    except RuntimeError as exc:
        raise SystemExit(f"could not start the local Event Hubs endpoint: {exc}") from None
    previous = "" if stopped.startswith("not running") else " (the previous one was stopped)"
    print(f"[stream 1/5] Event Hubs endpoint {state['endpoint']} running from an empty {_rel(data_dir)}{previous}: "
          f"hub {state['hub']!r}, {state['partitions']} partitions, pid {state['pid']}, log {_rel(state['log'])}")
    return state


def _rel(path):
    """``path`` relative to the current folder when it is inside it (shorter lines), else as is."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def _on_disk(out):
    """Counts of what the streaming run committed to the Delta tables under ``out``, read back."""
    from beam_pipeline import tables
    loc = tables.Location(os.path.abspath(out))
    snapshot = tables.snapshot_versions(loc)
    silver = tables.read(loc, tables.SILVER_REVIEWS)
    dead = tables.read(loc, tables.DEAD_LETTERS)
    dead_lines = {"reviews": 0, "products": 0}
    for kind in (dead["record_type"].to_pylist() if dead is not None else []):
        dead_lines["reviews" if kind == "review" else "products"] += 1
    files, _, median = tables.file_stats_of(loc, tables.SILVER_REVIEWS, snapshot.get(tables.SILVER_REVIEWS))
    families = sorted(rel.split("/", 1)[1] for rel in snapshot if rel.startswith("gold/"))
    g = tables.read(loc, "gold/reviews")
    windowed = g.filter(g["window_start"].is_valid()) if g is not None else None
    changelog = tables.read(loc, f"{tables.GOLD_CHANGELOG}/reviews")
    return {"silver_files": files, "silver_median_rows": median, "silver_rows": silver.num_rows if silver else 0,
            "dead_lines": dead_lines, "families": families,
            "windows": windowed.num_rows if windowed is not None else 0,
            "panes": changelog.num_rows if changelog is not None else 0,
            "window_reviews": int(sum(windowed["n_reviews"].to_pylist())) if windowed is not None else 0}


def _check_stream(summary, manifest, stats, disk):
    """The streaming run against the generator's manifest, less the lines that could not be events."""
    m = manifest["reviews"]
    too_large = m["dead_by_reason"].get("too_large", 0)
    r, eh = summary["reviews"], summary["eventhub"]
    want_reasons = {k: v - (too_large if k == "too_large" else 0) for k, v in m["dead_by_reason"].items()}
    want_reasons = {k: v for k, v in want_reasons.items() if v}
    checks = [
        ("lines the publisher rejected (over 1 MiB)", stats.rejected, too_large),
        ("events published", stats.sent, m["records_in"] - stats.rejected - stats.blank_skipped),
        ("eventhub.events_read", eh["events_read"], stats.sent),
        ("reviews.records_read", r["records_read"], stats.sent),
        ("reviews.silver_rows", r["silver_rows"], m["silver_rows"]),
        ("reviews.dead_letters", r["dead_letters"], m["dead"] - too_large),
        ("reviews.duplicates_dropped", r["duplicates_dropped"], m["duplicates"]),
        ("reviews.products_matched", r["products_matched"], m["matched_products"]),
        ("reviews.products_unmatched", r["products_unmatched"], m["unmatched_products"]),
        ("reviews dead letters by reason", _reasons(r["dead_letters_by_reason"]), want_reasons),
        ("silver review rows in the Delta table", disk["silver_rows"], m["silver_rows"]),
        ("review dead letters in the Delta table", disk["dead_lines"]["reviews"], m["dead"] - too_large),
        ("product dead letters in the Delta table", disk["dead_lines"]["products"], manifest["products"]["dead"]),
        ("gold/reviews n_reviews summed over the windows", disk["window_reviews"], m["silver_rows"]),
        ("checkpointed events (sum of last sequence number + 1)",
         sum(v["sequence_number"] + 1 for v in eh["checkpoint"].values()), stats.sent),
    ]
    problems = [f"{name}: got {got}, expected {want}" for name, got, want in checks if got != want]
    problems += _check(summary, manifest, kinds=("products",))
    if not r["reconciled"]:
        problems.append("the job's own reconciliation failed (records read != silver + dead letters + duplicates)")
    return problems, len(checks)


def _show_gold(out, n_windows=3):
    import duckdb  # noqa: F401 - DuckDB reads the Arrow datasets below by their Python names
    from beam_pipeline import tables
    loc = tables.Location(os.path.abspath(out))
    g = tables.dataset(loc, "gold/reviews")              # noqa: F841 - read by DuckDB
    c = tables.dataset(loc, "gold_changelog/reviews")    # noqa: F841 - read by DuckDB
    print(f"Gold current values of the {n_windows} latest windows (gold/reviews), and their panes (gold_changelog):")
    print(duckdb.sql(f"""
        select strftime(window_start, '%Y-%m-%d') as window_start, strftime(window_end, '%Y-%m-%d') as window_end,
               n_reviews, round(mean_overall, 2) as mean_overall
        from g where window_start is not null order by window_start desc limit {n_windows}"""))
    print(duckdb.sql(f"""
        select strftime(window_start, '%Y-%m-%d') as window_start, pane_index, pane_timing, pane_is_last, n_reviews
        from c where window_start in (select window_start from g where window_start is not null
                                      order by window_start desc limit {n_windows})
        order by window_start desc, pane_index"""), flush=True)


def stream_leg(a):
    from runners.publish import publish

    _clear_stream_output(a.stream_output)
    state = _fresh_endpoint()
    manifest = gen.generate(a.stream_data, a.stream_reviews, files=4, seed=a.stream_seed, gzip=True)
    too_large = manifest["reviews"]["dead_by_reason"].get("too_large", 0)
    print(f"[stream 2/5] generated {a.stream_reviews:,} reviews ({too_large} over 1 MiB) and "
          f"{manifest['products']['records_in']:,} product lines in {a.stream_data} (seed {a.stream_seed})", flush=True)

    review_files = sorted(glob.glob(os.path.join(a.stream_data, "reviews", "*.jsonl.gz")))
    print("[stream 3/5] publishing every review line as one event, round robin over partitions 0..3 ...", flush=True)
    stats = publish(state["connection_string"], review_files, partitions=4, rate=0, progress=True)
    per = " ".join(f"{pid}={n:,}" for pid, n in stats.per_partition.items())
    print(f"[stream 3/5] published {stats.sent:,} events in {stats.seconds:.1f} s ({per})")
    if stats.rejected:
        print(f"            {stats.rejected} line(s) NOT published: over the 1 MiB Event Hubs message limit, so they "
              f"cannot be events (the generator's huge_line defect; the batch leg dead-letters it as "
              f"parse.too_large). Left out of the expected counts below.")
    if stats.blank_skipped:
        print(f"            {stats.blank_skipped} blank line(s) skipped (not records)")

    cmd = [sys.executable, "-m", "beam_pipeline", "--source=eventhub", f"--output={a.stream_output}",
           f"--products={os.path.join(a.stream_data, 'metadata', '*.jsonl.gz')}", *STREAM_JOB_OPTIONS]
    shown = shlex.join([".venv/bin/python" if c == sys.executable else c for c in cmd])
    print(f"[stream 4/5] running the streaming job until the hub is idle for 3 s (eval \"$(python -m "
          f"runners.local_stack eventhubs env)\" first to run it yourself):\n  {shown}", flush=True)
    env = dict(os.environ, **{stack.EVENTHUBS_CONNECTION_ENV: state["connection_string"]})
    rc = subprocess.run(cmd, env=env).returncode
    from beam_pipeline import tables
    loc = tables.Location(os.path.abspath(a.stream_output))
    committed = [e for e in tables.events(loc) if e["event"] == "committed" and e["mode"] == "stream"]
    if rc not in (0, 1) or not committed:
        print(f"[stream 5/5] FAILED: the streaming job exited with status {rc} and committed nothing to "
              f"{a.stream_output}")
        return False
    summary = json.loads(committed[-1]["summary"])
    r, eh = summary["reviews"], summary["eventhub"]
    disk = _on_disk(a.stream_output)
    out = _rel(a.stream_output)
    checkpoint = ", ".join(f"{pid}@{v['sequence_number']}" for pid, v in sorted(eh["checkpoint"].items()))
    print(f"[stream 5/5] streaming run committed to the Delta tables under {out}/ (30-day windows):\n"
          f"  silver/reviews          {disk['silver_rows']:,} rows in {disk['silver_files']} files (median "
          f"{disk['silver_median_rows']:,} rows)\n"
          f"  gold/<family>           {len(disk['families'])} tables of current values: one row per window and key "
          f"({disk['windows']} windows in gold/reviews), plus the all-time rows (window_start null)\n"
          f"  gold_changelog/<family> every pane of every window (early / on time / late): {disk['panes']} rows in "
          f"gold_changelog/reviews\n"
          f"  dead_letters            {disk['dead_lines']['reviews']} review + {disk['dead_lines']['products']} "
          f"product rows\n"
          f"  checkpoint              in the event log (_pipeline/events, key {eh['checkpoint_key']}): "
          f"partition@last sequence number {checkpoint}\n"
          + _versions(a.stream_output))
    print(f"Reconciliation: events read {eh['events_read']:,}; reviews read {r['records_read']:,} = silver "
          f"{r['silver_rows']:,} + dead letters {r['dead_letters']:,} + duplicates {r['duplicates_dropped']:,}  "
          f"[{'reconciled' if r['reconciled'] else 'DOES NOT RECONCILE'}]")
    m = manifest["reviews"]
    print(f"Generator's manifest: {m['records_in']:,} lines = silver {m['silver_rows']:,} + dead {m['dead']:,} + "
          f"duplicates {m['duplicates']:,}; minus {stats.rejected} unpublishable line(s) (too_large) -> expected "
          f"{m['records_in'] - stats.rejected:,} events = {m['silver_rows']:,} + {m['dead'] - too_large:,} + "
          f"{m['duplicates']:,}")
    problems, n_checks = _check_stream(summary, manifest, stats, disk)
    if problems:
        print("MISMATCH (streaming leg) against the generator's manifest:\n  " + "\n  ".join(problems))
        return False
    print(f"All {n_checks} streaming checks match the manifest ({Path(a.stream_data) / 'manifest.json'}): events, "
          f"counts, dead letters by reason, product joins, and the files on disk.")
    _show_gold(out)
    print(f"Open them, e.g.:\n  .venv/bin/python -m beam_pipeline.tables show {out}\n"
          f"  .venv/bin/python -c \"from beam_pipeline import tables; import duckdb; "
          f"d = tables.dataset(tables.Location('{os.path.abspath(a.stream_output)}'), 'dead_letters'); "
          f"print(duckdb.sql('select record_type, stage, reason, source, source_position from d order by all'))\"",
          flush=True)
    return True


FOLDER_OPTIONS = ("data", "output", "stream_data", "stream_output", "model_output", "scored_output")


def build_parser():
    from beam_pipeline.cli import ArgumentParser
    ap = ArgumentParser(prog="python -m runners.demo", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--reviews", type=int, default=20000, help="number of review lines to generate (default 20000)")
    ap.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    ap.add_argument("--data", default=".local/demo/data", help="where the generated files go (default .local/demo/data)")
    ap.add_argument("--output", default="out/batch", help="job output root (default out/batch)")
    ap.add_argument("--stream-reviews", type=int, default=3000,
                    help="review lines published to the hub for the streaming leg (default 3000)")
    ap.add_argument("--stream-seed", type=int, default=8, help="generator seed of the streaming leg (default 8)")
    ap.add_argument("--stream-data", default=".local/demo/stream-data",
                    help="where the streaming leg's generated files go (default .local/demo/stream-data)")
    ap.add_argument("--stream-output", default="out/stream",
                    help="streaming job output root, deleted first on every run (default out/stream)")
    ap.add_argument("--model-output", default="out/model",
                    help="where the model leg writes the model, its report and model card (default out/model)")
    ap.add_argument("--scored-output", default="out/batch_scored",
                    help="output root of the batch run scored with that model (default out/batch_scored)")
    ap.add_argument("--only", choices=("batch", "insights", "model", "stream"), default=None, help="run one leg only "
                    "(insights and model need the batch leg's output; model also the Azurite it started)")
    return ap


def main(argv=None):
    from beam_pipeline.cli import fail, folder_problem
    a = build_parser().parse_args(argv)
    problems = [folder_problem(getattr(a, name), "--" + name.replace("_", "-")) for name in FOLDER_OPTIONS]
    if a.only in (None, "stream"):
        problems.append(stream_output_problem(a.stream_output))
    if any(problems):   # before Azurite, the hub or the generator start
        return fail("; ".join(p for p in problems if p))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    started = time.monotonic()
    timings, ok, ran = [], True, []
    for only, name, leg in (("batch", "batch", batch_leg), ("insights", "insights", insights_leg),
                             ("model", "model", model_leg), ("stream", "streaming", stream_leg)):
        if a.only not in (None, only):
            continue
        if timings:
            print(flush=True)
        t = time.monotonic()
        ran.append(only)
        ok = leg(a)
        timings.append(f"{name} leg {time.monotonic() - t:.1f} s")
        if not ok:
            break
    print("\n" + final_block(a, ran, ok, time.monotonic() - started, timings), flush=True)
    return 0 if ok else 1


LEGS = ("batch", "insights", "model", "stream")
DASHBOARD_URL = "http://127.0.0.1:8050/"


def output_folders(a, legs):
    """[(what, absolute folder)] of every folder the ``legs`` write, in the order they write them."""
    rows = {
        "batch": [("generated reviews and metadata", a.data),
                  ("the file landed for the incremental run", os.path.join(os.path.dirname(a.data), "extra")),
                  ("batch Delta tables: silver, gold, dead letters, event log", a.output),
                  ("insight tables: trending, recent brands", os.path.join(a.output, "insights"))],
        "insights": [("recommendations (training.recommend export)", os.path.join(a.output, "recommendations"))],
        "model": [("sentiment model: saved_model, report.md, model_card.md", a.model_output),
                  ("batch tables scored with that model", a.scored_output)],
        "stream": [("generated reviews for the stream", a.stream_data),
                   ("streaming Delta tables", a.stream_output)],
    }
    return [(what, os.path.abspath(path)) for leg in LEGS if leg in legs for what, path in rows[leg]]


def final_block(a, legs, ok, seconds, timings):
    """The last lines of ``make run``: the outcome, every output folder with its absolute path, and the
    dashboard over the tables (its command with absolute paths, and its URL)."""
    lines = [(f"{'Done' if ok else 'FAILED'} in {seconds:.1f} s ({', '.join(timings)}). Azurite and the Event Hubs "
              "endpoint keep running for inspection; `make stop` stops both."), "Outputs:"]
    folders = output_folders(a, legs)
    width = max((len(what) for what, _ in folders), default=0)
    lines += [f"  {what:{width}s}  {path}" for what, path in folders]
    roots = [os.path.abspath(p) for leg, p in (("batch", a.output), ("model", a.scored_output),
                                                 ("stream", a.stream_output)) if leg in legs]
    if ok and roots:
        command = shlex.join([sys.executable, "-m", "beam_pipeline.dashboard", *(f"--output={r}" for r in roots)])
        lines += [f"Dashboard: {command}", f"  then open {DASHBOARD_URL} (`make dashboard` serves the default folders)"]
    return "\n".join(lines)


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
