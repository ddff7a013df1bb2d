#!/usr/bin/env python3
"""The streaming leg of `make bench`: the streaming job against the raw azure-eventhub consumer, same events.

    .venv/bin/python bench/stream_bench.py [--sizes 20000,100000] [--repeats 3] [--large-repeats 1]
                                           [--configs enqueued,review] [--startup-events 400]
                                           [--work bench/work/stream]

For each size N (a multiple of 4):
1. generate reviews with runners.generate (seed 42) and keep the first N lines that can be sent as one
   event (the generator's ~1.1 MB "huge_line" cannot: 1 MiB is the link's limit), once;
2. start the local Event Hubs endpoint (runners.local_stack.EventHubsEndpoint: --no-fsync, 4 partitions,
   a fresh data dir) in its OWN process, so that its CPU is counted in neither side, and publish the N
   events round robin (N/4 per partition; checked: nothing rejected);
3. repeat: the raw consumer (this script with --raw-consumer: one EventHubConsumerClient per partition,
   receive_batch from "-1", max_batch_size 300 and prefetch 300 like the job's reader, stops at N events),
   then the streaming job once per configuration, each into a fresh --output:
       enqueued  --event_time=enqueued_time --window_size=1m          (live-stream-like: few windows)
       review    --event_time=review_time --window_size=30d --max_out_of_orderness=3650d
                                                                      (historical replay: many windows)
   with --max_records=N/4 (per partition: the job ends when every partition's range is read, no idle wait).
   A job run counts only if it exits 0 and its run summary (the event log's last committed run)
   reconciles with records_read and eventhub.events_read both equal to N; otherwise its time is not
   reported (the script fails at the end).

Process accounting is bench/benchlib.py's. Before each run the script waits (at most --quiet-wait s) for
the machine to be idle, and it reports the CPU other processes used during each run ("other processes' CPU s": a test suite running beside the
benchmark shows there), the 1/5/15-min load average before each pair, and the git commit (and whether
the job's sources were modified) at each job run. Each run is a child process in its own session, reaped
with os.wait4: wall = monotonic clock around start and reap (interpreter start and imports included, for
both sides), cpu and peak RSS = the kernel's accounting of the child. The endpoint's CPU during each run is read from /proc. The ratio "speed vs raw"
(raw wall / job wall = job events/s / raw events/s) is taken pair by pair (the raw run just before the
job run, in the same endpoint), then the median. --startup-events runs both sides once on a tiny hub to
show the fixed start-up cost. The sustained (marginal) rate between the two largest sizes,
(N2 - N1) / (wall2 - wall1), is start-up free.

Writes bench/results/stream-<size>.json per size (every run, checks and the machine's load average),
stream-startup.json, and a "Streaming benchmark" section of bench/results/README.md (replaced in place
between its markers, the batch table is kept), and prints the table. Speed is measured here, never
asserted in tests. The endpoint, the raw consumer and the job share this machine's cores: the figures
are for this machine, not for Azure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages (runners)
from benchlib import (add_run_options, fmt, git_state, loadavg, med, run_child, tail, wait_quiet,  # noqa: E402
                      write_section)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PARTITIONS = 4
MAX_EVENT_BYTES = 1_000_000          # lines above this cannot be sent as one event (link limit 1 MiB)
CONFIGS = {
    "enqueued": ["--event_time=enqueued_time", "--window_size=1m"],
    "review": ["--event_time=review_time", "--window_size=30d", "--max_out_of_orderness=3650d"],
}
SECTION_BEGIN, SECTION_END = "<!-- stream-bench:begin -->", "<!-- stream-bench:end -->"
JOB_SOURCES = ("beam_pipeline", "transforms", "runners")


# ---------------------------------------------------------------------------------------------------
# the raw consumer (runs as its own process: python bench/stream_bench.py --raw-consumer N)

def raw_consumer(n):
    """Receive N events from every partition's start; print one JSON line with the counts and times."""
    t_start = time.monotonic()
    import threading
    from azure.eventhub import EventHubConsumerClient
    conn = os.environ["EVENTHUB_CONNECTION_STRING"]
    lock, done = threading.Lock(), threading.Event()
    got = {"events": 0, "bytes": 0, "first": None}

    def on_batch(_ctx, events):
        size = sum(len(b"".join(ev.body)) for ev in events)  # touch every body, as the job does
        with lock:
            if got["first"] is None:
                got["first"] = time.monotonic()
            got["events"] += len(events)
            got["bytes"] += size
            if got["events"] >= n:
                done.set()

    t_import = time.monotonic()
    clients = [EventHubConsumerClient.from_connection_string(conn, consumer_group="$Default")
               for _ in range(PARTITIONS)]
    threads = [threading.Thread(target=c.receive_batch, daemon=True, kwargs=dict(
        on_event_batch=on_batch, partition_id=str(i), starting_position="-1", max_batch_size=300, prefetch=300,
        max_wait_time=None)) for i, c in enumerate(clients)]
    t_recv = time.monotonic()
    for t in threads:
        t.start()
    finished = done.wait(600)
    t_done = time.monotonic()
    for c in clients:
        c.close()
    print(json.dumps({"events": got["events"], "bytes": got["bytes"], "finished": finished,
                      "import_s": round(t_import - t_start, 3), "receive_s": round(t_done - t_recv, 3),
                      "first_to_last_s": round(t_done - got["first"], 3) if got["first"] else None}), flush=True)
    sys.stdout.flush()
    os._exit(0 if finished and got["events"] == n else 1)


# ---------------------------------------------------------------------------------------------------
# inputs and the endpoint

def size_label(n):
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def make_events(work, n):
    """-> (events file with exactly n sendable lines, products glob, mean event bytes). Generated once."""
    data = work / "data" / size_label(n)
    events = data / "events.jsonl"
    if not events.exists():
        shutil.rmtree(data, ignore_errors=True)
        reviews = n + n // 50 + 100  # a margin: lines too large for one event are skipped
        sh([sys.executable, "-m", "runners.generate", "--out", data, "--reviews", reviews,
            "--files", max(1, min(8, n // 25_000)), "--seed", 42], stdout=subprocess.DEVNULL)
        kept = 0
        with open(str(events) + ".tmp", "wb") as out:
            for part in sorted((data / "reviews").glob("*.jsonl")):
                with open(part, "rb") as fh:
                    for line in fh:
                        if kept < n and line.strip() and len(line) <= MAX_EVENT_BYTES:
                            out.write(line if line.endswith(b"\n") else line + b"\n")
                            kept += 1
        if kept != n:
            sys.exit(f"could only keep {kept} sendable lines of {reviews} generated, wanted {n}")
        os.replace(str(events) + ".tmp", events)
    mean_bytes = (events.stat().st_size - n) / n
    return events, f"{data}/metadata/*.jsonl", mean_bytes


def start_endpoint(data_dir):
    """The local endpoint (runners.local_stack.EventHubsEndpoint: its own process, no fsync) on a fresh
    data dir; its log is in that dir."""
    from runners.local_stack import EventHubsEndpoint
    shutil.rmtree(data_dir, ignore_errors=True)
    return EventHubsEndpoint(data_dir, partitions=PARTITIONS, fsync=False).start()


def publish_events(conn, events, n):
    from runners.publish import publish
    stats = publish(conn, [str(events)], partitions=PARTITIONS, progress=False)
    want = {str(p): n // PARTITIONS for p in range(PARTITIONS)}
    if stats.sent != n or stats.rejected or stats.per_partition != want:
        sys.exit(f"publishing {n} events went wrong: {stats}")
    return stats.to_dict()


# ---------------------------------------------------------------------------------------------------
# the two sides

def raw_cmd(n):
    return [sys.executable, Path(__file__).resolve(), "--raw-consumer", n]


def job_cmd(out, products, n, config):
    return [sys.executable, "-m", "beam_pipeline", "--source=eventhub", f"--output={out}", f"--products={products}",
            f"--max_records={n // PARTITIONS}", "--start_position=earliest", *CONFIGS[config]]


def output_files(out):
    """files the job wrote, by top folder (silver, gold, dead_letters), checkpoints and summary excluded"""
    counts = {}
    for top in ("silver", "gold", "dead_letters"):
        counts[top] = sum(len(files) for _, _, files in os.walk(out / top))
    counts["total"] = sum(counts.values())
    return counts


def run_raw(ctx, n, tag):
    waited = wait_quiet(ctx["quiet_wait"])
    stdout, stderr = ctx["logs"] / f"{tag}.out", ctx["logs"] / f"{tag}.err"
    r = run_child(raw_cmd(n), ctx["env"], ctx["timeout"], stdout, stderr, watch_pid=ctx["endpoint"].pid)
    report = None
    for line in Path(stdout).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    r["report"], r["waited_for_quiet_s"] = report, waited
    r["ok"] = r["rc"] == 0 and report is not None and report["events"] == n
    if not r["ok"]:
        r["error"] = tail(stderr)
    return r


def run_job(ctx, n, config, tag, products, keep):
    out = ctx["work"] / "out" / size_label(n) / tag
    shutil.rmtree(out, ignore_errors=True)
    cmd = job_cmd(out, products, n, config)
    stdout, stderr = ctx["logs"] / f"{tag}.out", ctx["logs"] / f"{tag}.err"
    waited = wait_quiet(ctx["quiet_wait"])
    r = run_child(cmd, ctx["env"], ctx["timeout"], stdout, stderr, watch_pid=ctx["endpoint"].pid)
    r["waited_for_quiet_s"], r["git"] = waited, git_state(JOB_SOURCES)  # the lead may change the job between runs
    r["command"] = " ".join(map(str, cmd))
    check = {"events_published": n}
    try:
        from beam_pipeline import tables
        summary = tables.last_summary(tables.Location(str(out)))
        if summary is None:
            raise ValueError(f"no committed run in {out}")
        rv = summary["reviews"]
        check.update(records_read=rv["records_read"], silver_rows=rv["silver_rows"], dead_letters=rv["dead_letters"],
                     duplicates_dropped=rv["duplicates_dropped"], reconciled=rv["reconciled"],
                     products_reconciled=summary["products"]["reconciled"],
                     events_read=summary["eventhub"]["events_read"], pipeline_s=summary["seconds"])
        check["ok"] = (r["rc"] == 0 and rv["reconciled"] and summary["products"]["reconciled"]
                       and rv["records_read"] == n and summary["eventhub"]["events_read"] == n)
    except (OSError, ValueError, KeyError) as err:
        check.update(ok=False, summary_error=repr(err))
    r["check"] = check
    r["ok"] = check["ok"]
    r["files"] = output_files(out) if out.exists() else None
    if not r["ok"]:
        r["error"] = tail(stderr)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return r


def show(tag, r):
    extra = ""
    if "check" in r:
        c = r["check"]
        extra = (f" read {c.get('records_read')} silver {c.get('silver_rows')} dead {c.get('dead_letters')} dups "
                 f"{c.get('duplicates_dropped')} files {r['files']['total'] if r['files'] else '-'}")
    elif r.get("report"):
        extra = f" receive {r['report']['receive_s']:.2f} s"
    print(f"  {tag:28s} wall {r['wall_s']:7.2f} s  cpu {r['cpu_s']:6.2f} s  peak {r['peak_mb']:6.0f} MB  endpoint cpu "
          f"{r['endpoint_cpu_s'] if r['endpoint_cpu_s'] is not None else '-'} s  other cpu {r['other_cpu_s']} s  "
          f"{'ok' if r['ok'] else 'FAILED rc=' + str(r['rc'])}{extra}", flush=True)
    if not r["ok"]:
        print("    " + r.get("error", "").replace("\n", "\n    "), flush=True)


def bench_size(ctx, n, repeats, configs, keep):
    events, products, mean_bytes = make_events(ctx["work"], n)
    label = size_label(n)
    endpoint = ctx["endpoint"] = start_endpoint(ctx["work"] / "hub" / label)
    try:
        ctx["env"] = dict(os.environ, PYTHONPATH=str(ROOT), EVENTHUB_CONNECTION_STRING=endpoint.connection_string)
        t0 = time.monotonic()
        published = publish_events(endpoint.connection_string, events, n)
        print(f"{label}: {n:,} events ({mean_bytes:,.0f} bytes on average) published in "
              f"{time.monotonic() - t0:.1f} s; endpoint pid {endpoint.pid}", flush=True)
        runs = []
        for rep in range(repeats):
            load = loadavg()
            raw = run_raw(ctx, n, f"{label}-raw-{rep}")
            show(f"{label} raw #{rep}", raw)
            pair = {"repeat": rep, "loadavg_before": load, "raw": raw, "job": {}}
            for config in configs:
                job = run_job(ctx, n, config, f"{label}-{config}-{rep}", products, keep)
                show(f"{label} job {config} #{rep}", job)
                pair["job"][config] = job
            runs.append(pair)
    finally:
        endpoint.stop()
    raw_ok = [p["raw"] for p in runs if p["raw"]["ok"]]
    record = {"events": n, "label": label, "partitions": PARTITIONS, "mean_event_bytes": round(mean_bytes, 1),
              "published": published, "repeats": repeats, "raw_command": " ".join(map(str, raw_cmd(n))),
              "raw": {"wall_s": med([r["wall_s"] for r in raw_ok]),
                      "receive_s": med([r["report"]["receive_s"] for r in raw_ok]),
                      "cpu_s": med([r["cpu_s"] for r in raw_ok]), "peak_mb": med([r["peak_mb"] for r in raw_ok]),
                      "endpoint_cpu_s": med([r["endpoint_cpu_s"] for r in raw_ok if r["endpoint_cpu_s"] is not None]),
                      "other_cpu_s": med([r["other_cpu_s"] for r in raw_ok]), "ok_runs": len(raw_ok)},
              "configs": {}, "runs": runs}
    if raw_ok:
        record["raw"]["events_per_s"] = round(n / record["raw"]["wall_s"], 1)
        record["raw"]["events_per_s_receive_only"] = round(n / record["raw"]["receive_s"], 1)
    for config in configs:
        pairs = [(p["raw"], p["job"][config]) for p in runs]
        good = [(r, j) for r, j in pairs if r["ok"] and j["ok"]]
        jobs = [j for _, j in good]
        c = {"args": CONFIGS[config], "ok_runs": len(jobs), "failed_runs": len(pairs) - len(good)}
        if jobs:
            ratios = [round(r["wall_s"] / j["wall_s"], 3) for r, j in good]
            c.update(wall_s=med([j["wall_s"] for j in jobs]), pipeline_s=med([j["check"]["pipeline_s"] for j in jobs]),
                     cpu_s=med([j["cpu_s"] for j in jobs]), peak_mb=med([j["peak_mb"] for j in jobs]),
                     peak_mb_max=max(j["peak_mb"] for j in jobs),
                     endpoint_cpu_s=med([j["endpoint_cpu_s"] for j in jobs if j["endpoint_cpu_s"] is not None]),
                     other_cpu_s=med([j["other_cpu_s"] for j in jobs]),
                     files=jobs[-1]["files"], speed_vs_raw={"median": med(ratios), "min": min(ratios),
                                                            "max": max(ratios), "pairs": ratios},
                     counts={k: jobs[-1]["check"][k] for k in ("records_read", "silver_rows", "dead_letters",
                                                                "duplicates_dropped", "events_read")})
            c["events_per_s"] = round(n / c["wall_s"], 1)
        record["configs"][config] = c
    return record


# ---------------------------------------------------------------------------------------------------
# report

def table(records, startup):
    sizes = sorted(records.values(), key=lambda r: r["events"])
    lines = ["| events | side | wall (median) | events/s | speed vs raw (median of pairs) | peak RSS | CPU s | "
             "endpoint CPU s | other processes' CPU s | files written | runs |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rec in sizes:
        raw = rec["raw"]
        lines.append(f"| {rec['label']} | raw consumer | {fmt(raw['wall_s'], '.2f', ' s')} "
                     f"(receive {fmt(raw['receive_s'], '.2f', ' s')}) | {fmt(raw.get('events_per_s'), ',.0f')} | 1.00x | "
                     f"{fmt(raw['peak_mb'], ',.0f', ' MB')} | {fmt(raw['cpu_s'], '.1f')} | "
                     f"{fmt(raw['endpoint_cpu_s'], '.1f')} | {fmt(raw.get('other_cpu_s'), '.1f')} | - | {raw['ok_runs']} |")
        for config, c in rec["configs"].items():
            s = c.get("speed_vs_raw") or {}
            ratio = (f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if s else "-")
            files = c.get("files")
            lines.append(f"| {rec['label']} | job, {config} | {fmt(c.get('wall_s'), '.2f', ' s')} | "
                         f"{fmt(c.get('events_per_s'), ',.0f')} | {ratio} | {fmt(c.get('peak_mb'), ',.0f', ' MB')} | "
                         f"{fmt(c.get('cpu_s'), '.1f')} | {fmt(c.get('endpoint_cpu_s'), '.1f')} | {fmt(c.get('other_cpu_s'), '.1f')} | "
                         f"{files['total'] if files else '-'} | {c['ok_runs']}"
                         f"{' (' + str(c['failed_runs']) + ' FAILED)' if c['failed_runs'] else ''} |")
    out = ["\n".join(lines)]
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        rows = []
        def rate(wall_a, wall_b):
            return (b["events"] - a["events"]) / (wall_b - wall_a) if wall_a and wall_b and wall_b > wall_a else None

        raw_rate = rate(a["raw"]["wall_s"], b["raw"]["wall_s"])
        rows.append(f"raw consumer {fmt(raw_rate, ',.0f', ' events/s')}")
        for config in b["configs"]:
            ca, cb = a["configs"].get(config, {}), b["configs"].get(config, {})
            job_rate = rate(ca.get("wall_s"), cb.get("wall_s"))
            growth = ((cb["peak_mb"] - ca["peak_mb"]) * 1024 / ((b["events"] - a["events"]) / 1000)
                      if ca.get("peak_mb") and cb.get("peak_mb") else None)
            rows.append(f"job {config} {fmt(job_rate, ',.0f', ' events/s')}"
                        + (f" ({job_rate / raw_rate:.2f}x)" if job_rate and raw_rate else "")
                        + f", peak RSS {fmt(ca.get('peak_mb'), ',.0f')} -> {fmt(cb.get('peak_mb'), ',.0f', ' MB')}"
                        + (f" ({growth:+,.0f} KB per 1,000 extra events)" if growth is not None else ""))
        out.append(f"Sustained rate from {a['label']} to {b['label']} (extra events / extra median wall, start-up "
                   f"cancels): " + "; ".join(rows) + ".")
    if startup:
        parts = [f"raw consumer {startup['raw']['wall_s']:.2f} s"] + [
            f"job {config} {c['wall_s']:.2f} s" for config, c in startup["configs"].items() if c.get("wall_s")]
        out.append(f"Fixed start-up (one run each on {startup['events']} events): " + ", ".join(parts) + ".")
    return "\n\n".join(out)


def sh(cmd, **kw):
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), **kw)


def main(argv=None):
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="20000,100000",
                    help="event counts, comma-separated, multiples of 4 (default 20000,100000)")
    ap.add_argument("--repeats", type=int, default=3, help="raw/job pairs at the smallest size (default 3)")
    ap.add_argument("--large-repeats", type=int, default=1,
                    help="raw/job pairs at every larger size (default 1: keeps the whole run near 10 min on 2 cores)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"job configurations, comma-separated, of {', '.join(CONFIGS)} (default all)")
    ap.add_argument("--startup-events", type=int, default=400,
                    help="one run of each side on this many events, for the fixed start-up cost (0: skip; default 400)")
    add_run_options(ap, work="stream", what="inputs, hub logs, outputs and run logs", quiet_wait=60,
                             written="stream-*.json")
    ap.add_argument("--keep-outputs", action="store_true", help="keep every job's output (default: deleted once counted)")
    ap.add_argument("--raw-consumer", type=int, metavar="N", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.raw_consumer is not None:
        raw_consumer(a.raw_consumer)
        return
    sizes = sorted(int(s) for s in a.sizes.split(",") if s.strip())
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        ap.error(f"--configs: unknown {', '.join(bad) or '(none given)'}; use {', '.join(CONFIGS)}")
    if any(n < PARTITIONS or n % PARTITIONS for n in sizes + ([a.startup_events] if a.startup_events else [])):
        ap.error(f"every size must be a positive multiple of {PARTITIONS} (round robin over {PARTITIONS} partitions)")
    RESULTS = Path(a.results).resolve()
    t_start = time.monotonic()
    work = Path(a.work).resolve()
    ctx = {"work": work, "logs": work / "logs", "timeout": a.timeout, "quiet_wait": a.quiet_wait}
    ctx["logs"].mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "loadavg_at_start": loadavg(),
               "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git_state(JOB_SOURCES)}
    print(f"machine: {machine['cores']} cores, load average at start {machine['loadavg_at_start']}", flush=True)
    failed = False
    startup = None
    if a.startup_events:
        rec = bench_size(ctx, a.startup_events, 1, configs, a.keep_outputs)
        startup = {"events": a.startup_events, "raw": rec["raw"], "configs": rec["configs"], "machine": machine,
                   "runs": rec["runs"]}
        failed |= any(c["failed_runs"] for c in rec["configs"].values()) or not rec["raw"]["ok_runs"]
        (RESULTS / "stream-startup.json").write_text(json.dumps(startup, indent=1) + "\n")
    records = {}
    for i, n in enumerate(sizes):
        rec = bench_size(ctx, n, a.repeats if i == 0 else a.large_repeats, configs, a.keep_outputs)
        rec["machine"] = machine
        rec["loadavg_at_end"] = loadavg()
        failed |= any(c["failed_runs"] for c in rec["configs"].values()) or rec["raw"]["ok_runs"] < rec["repeats"]
        (RESULTS / f"stream-{rec['label']}.json").write_text(json.dumps(rec, indent=1) + "\n")
        records[rec["label"]] = rec
    elapsed = time.monotonic() - t_start
    heading = ["## Streaming benchmark: the streaming job vs the raw azure-eventhub consumer (same events, paired runs)",
               "",
               f"Machine: {machine['cores']} cores, load average at start {', '.join(map(str, machine['loadavg_at_start']))} "
               f"(1/5/15 min). Command: `.venv/bin/python bench/stream_bench.py` ({elapsed / 60:.1f} min). Measured "
               f"{machine['date_utc']} at {machine['git']['commit'] if machine['git'] else '?'}"
               f"{' (job sources modified)' if machine['git'] and machine['git']['sources_modified'] else ''}.",
               "",
               f"Local Event Hubs endpoint in its own process ({PARTITIONS} partitions, --no-fsync), events published "
               "round robin once per size; both sides read the same events from the same endpoint. Raw consumer: one "
               "EventHubConsumerClient per partition, receive_batch from \"-1\" until N events. Job: "
               f"`python -m beam_pipeline --source=eventhub --max_records=N/{PARTITIONS}` + products, parse, clean, "
               "dedupe, windowed silver/gold/dead-letter Parquet, commit; enqueued = `--event_time=enqueued_time "
               "--window_size=1m`, review = `--event_time=review_time --window_size=30d --max_out_of_orderness=3650d`. "
               "Walls are whole processes (interpreter start included); a job run counts only if it reconciles with "
               "records_read = events_read = N. Speed vs raw = raw wall / job wall, pair by pair, median (min-max). "
               "Events: runners.generate --seed 42 review lines (the one > 1 MB line left out), mean size "
               + ", ".join(f"{r['label']} {r['mean_event_bytes']:,.0f} B" for r in records.values()) + ".",
               "", ""]
    text = "\n".join(heading) + table(records, startup) + \
        "\n\nTarget: speed >= 0.8x the raw consumer; peak RSS flat from 20k to 100k events.\n"
    write_section(RESULTS / "README.md", SECTION_BEGIN, SECTION_END, text)
    print()
    print(text)
    print(f"stream bench finished in {elapsed:.0f} s")
    if failed:
        sys.exit("some runs FAILED (see above and bench/work/stream/logs); their times are not reported")


if __name__ == "__main__":
    main()
