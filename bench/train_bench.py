#!/usr/bin/env python3
"""The training leg: training time and peak memory on the real reviews, and the sentiment model's scoring
throughput inside the batch job's graph.

    .venv/bin/python bench/train_bench.py [--repeats 2] [--pairs 3] [--score-repeats 3] [--work bench/work/train]

Input: the real Amazon reviews and product metadata in ../shared/data/amazon (reviews/*.jsonl.gz,
metadata/*.jsonl.gz); without them the script says so and exits 0, measuring nothing.

1. The batch job once (python -m beam_pipeline --source=files, no model) makes the silver that training reads;
   its time is reported on its own. It must reconcile.
2. Training, --repeats times: `python -m training --silver=<that silver> --output=<fresh dir>` with the default
   options (tf.Transform, logistic regression on tf-idf, evaluation with bootstrap, export, the two baselines):
   wall, CPU, peak RSS, and the report's own timing (transform_s, train_s, baselines_s, total_s). A run counts
   only if it exits 0 and writes report.json and saved_model/. The fixed floor is measured once beside it: an
   interpreter that only imports tensorflow and tensorflow_transform.
3. Scoring in the graph, --pairs pairs: the same batch job without and with --sentiment_model=<the first
   training run's saved_model> (order alternating pair by pair, so drift does not favour one side). A run
   counts only if it reconciles and (with the model) scored_rows = silver_rows. Reported: walls, peak RSS, the
   added wall pair by pair and the added time per scored review (the median added wall / scored rows; it
   includes importing TensorFlow and loading the model once, so it is an upper bound of the marginal cost).
4. Scoring in process: beam_pipeline.scoring.score_table (batch 4096, as the job calls it) over the whole
   real silver table, in a fresh child process per mode, --score-repeats timed passes after one warm-up pass:
       1 thread   tf.config.threading.set_intra_op_parallelism_threads(1) and ..._inter_op_... (1) before the
                  model is loaded: "per core"
       default    TensorFlow's own thread pools (both cores)
   with the import and load times and the CPU seconds of the timed passes (reviews per CPU second is the
   per-core figure of the default mode).

Each timed run is a child process in its own session, reaped with os.wait4: wall = monotonic clock around
start and reap (interpreter start and imports included), CPU and peak RSS = the kernel's accounting of the
child (ru_maxrss: the largest single process of its tree); the RSS summed over the child's process group is
also sampled from /proc every 0.1 s (tree peak). Before each run the script waits (at most --quiet-wait s)
for the machine to be idle and reports the CPU other processes used meanwhile and the load average.

Targets (the issue): training under 5 minutes, scoring at least 2,000 reviews/s per core.

Writes bench/results/training.json (every run, checks, the machine's load) and a "Training benchmark" section
of bench/results/README.md (replaced in place between its markers; the other sections are kept), and prints
the table. Speed is measured here, never asserted in tests.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchlib import (add_run_options, fmt, git_state, loadavg, med, run_child, tail, wait_quiet,  # noqa: E402
                      write_section)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data" / "amazon"
REVIEWS, PRODUCTS = DATA / "reviews" / "*.jsonl.gz", DATA / "metadata" / "*.jsonl.gz"
SECTION_BEGIN, SECTION_END = "<!-- train-bench:begin -->", "<!-- train-bench:end -->"
SOURCES = ("beam_pipeline", "transforms", "training")
TRAINING_TARGET_S = 300
SCORING_TARGET_PER_CORE = 2000


# ---------------------------------------------------------------------------------------------------
# the in-process scorer (runs as its own process: python bench/train_bench.py --score-worker MODE MODEL SILVER R)

def score_worker(mode, model, silver, repeats):
    """Time beam_pipeline.scoring.score_table over the whole silver table; print one JSON line."""
    t0 = time.monotonic()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if mode == "1thread":  # before anything runs: TF fixes its thread pools on first use
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from beam_pipeline import scoring
    t_import = time.monotonic()
    fn = scoring.load_model(model)
    t_load = time.monotonic()
    from beam_pipeline.tables import read_folder
    table = read_folder(silver, columns=list(scoring.INPUTS))
    t_read = time.monotonic()
    labels, _ = scoring.score_table(fn, table)  # warm-up pass: tracing, first-call costs
    t_warm = time.monotonic()
    passes = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        labels, probs = scoring.score_table(fn, table)
        passes.append({"wall_s": round(time.perf_counter() - w0, 4), "cpu_s": round(time.process_time() - c0, 4)})
    print(json.dumps({
        "mode": mode, "rows": table.num_rows, "batch_size": scoring.DEFAULT_BATCH_SIZE,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "import_s": round(t_import - t0, 3), "load_s": round(t_load - t_import, 3), "read_s": round(t_read - t_load, 3),
        "warmup_pass_s": round(t_warm - t_read, 3), "passes": passes,
        "positive_fraction": round(float(labels.mean()), 4) if len(labels) else None}), flush=True)
    sys.stdout.flush()
    os._exit(0)


def import_floor():
    """What every training run pays before any work: the interpreter and the TF / tf.Transform imports."""
    import tensorflow  # noqa: F401
    import tensorflow_transform  # noqa: F401
    os._exit(0)


# ---------------------------------------------------------------------------------------------------
# the runs

def batch_cmd(out, model=None):
    return [sys.executable, "-m", "beam_pipeline", "--source=files", f"--reviews={REVIEWS}", f"--products={PRODUCTS}",
            f"--output={out}"] + ([f"--sentiment_model={model}"] if model else [])


def training_cmd(silver, out):
    return [sys.executable, "-m", "training", f"--silver={silver}", f"--output={out}"]


def timed(ctx, cmd, tag):
    waited, load = wait_quiet(ctx["quiet_wait"]), loadavg()
    stdout, stderr = ctx["logs"] / f"{tag}.out", ctx["logs"] / f"{tag}.err"
    r = run_child(cmd, ctx["env"], ctx["timeout"], stdout, stderr, sample_tree=True)
    r.update(tag=tag, waited_for_quiet_s=waited, loadavg_before=load, command=" ".join(map(str, cmd)))
    return r, stdout, stderr


def run_batch(ctx, tag, model=None, keep=False):
    out = ctx["work"] / "out" / tag
    shutil.rmtree(out, ignore_errors=True)
    r, _, stderr = timed(ctx, batch_cmd(out, model), tag)
    r["sentiment_model"] = str(model) if model else None
    try:
        from beam_pipeline import tables   # the run summary is in the event log of the run's commit
        s = tables.last_summary(tables.Location(str(out)))
        if s is None:
            raise ValueError(f"no committed run in {out}")
        rv = s["reviews"]
        r["check"] = {k: rv.get(k) for k in ("records_read", "silver_rows", "dead_letters", "duplicates_dropped",
                                             "reconciled", "scored_rows")}
        r["check"]["products_reconciled"] = s["products"]["reconciled"]
        r["pipeline_s"] = s.get("seconds")
        r["ok"] = (r["rc"] == 0 and rv["reconciled"] and s["products"]["reconciled"]
                   and (rv.get("scored_rows") == rv["silver_rows"] if model else not rv.get("scored_rows")))
    except (OSError, ValueError, KeyError) as err:
        r["check"], r["ok"] = {"summary_error": repr(err)}, False
    if not r["ok"]:
        r["error"] = tail(stderr)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return r, out


def run_training(ctx, silver, tag):
    out = ctx["work"] / "out" / tag
    shutil.rmtree(out, ignore_errors=True)
    r, _, stderr = timed(ctx, training_cmd(silver, out), tag)
    r["output"] = str(out)
    try:
        rep = json.loads((out / "report.json").read_text())
        t = rep["timing"]
        r["timing"] = t
        r["baselines_total_s"] = round(sum((t.get("baselines_s") or {}).values()), 2)
        r["examples"] = rep["data"]["examples"]
        r["model"] = {k: rep["model"].get(k) for k in ("vocabulary", "optimizer", "iterations_run", "epochs_run", "best_validation", "threshold")}
        r["test"] = {name: {k: res.get(k) for k in ("roc_auc", "macro_f1", "accuracy") if k in res}
                     for name, res in rep["results"].items()}
        r["ok"] = r["rc"] == 0 and (out / "saved_model" / "saved_model.pb").exists()
    except (OSError, ValueError, KeyError) as err:
        r["report_error"], r["ok"] = repr(err), False
    if not r["ok"]:
        r["error"] = tail(stderr)
    return r, out


def run_scorer(ctx, mode, model, silver, repeats):
    cmd = [sys.executable, Path(__file__).resolve(), "--score-worker", mode, model, silver, repeats]
    r, stdout, stderr = timed(ctx, cmd, f"score-{mode}")
    report = None
    for line in Path(stdout).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    r["report"] = report
    r["ok"] = r["rc"] == 0 and report is not None and bool(report["passes"])
    if r["ok"]:
        walls = [p["wall_s"] for p in report["passes"]]
        cpus = [p["cpu_s"] for p in report["passes"]]
        n = report["rows"]
        r["reviews_per_s"] = round(n / statistics.median(walls), 1)
        r["reviews_per_s_best"] = round(n / min(walls), 1)
        r["reviews_per_cpu_s"] = round(n / statistics.median(cpus), 1)
        r["cores_used"] = round(statistics.median(cpus) / statistics.median(walls), 2)
    else:
        r["error"] = tail(stderr)
    return r


def compare_scoring(ctx, models, silver, rounds, repeats):
    """The 1-thread score worker on each of ``models`` in turn, ``rounds`` times (alternating, so drift does
    not favour one) -> {"runs": [...], "summary": {model: median pass, reviews/s per core},
    "second_over_first_pass_time": B's median pass / A's}."""
    runs = []
    for rnd in range(rounds):
        for model in (models if rnd % 2 == 0 else models[::-1]):
            r = run_scorer(ctx, "1thread", model, silver, repeats)
            r.update(round=rnd, model=str(model))
            show(f"round {rnd} {model}", r)
            runs.append(r)
    summary = {}
    for model in models:
        walls = [p["wall_s"] for r in runs if r["model"] == str(model) and r["ok"] for p in r["report"]["passes"]]
        if walls:
            rows = next(r["report"]["rows"] for r in runs if r["model"] == str(model) and r["ok"])
            summary[str(model)] = {"passes": len(walls), "median_pass_s": statistics.median(walls),
                                   "reviews_per_s_per_core": round(rows / statistics.median(walls))}
    a, b = (summary.get(str(m)) for m in models)
    return {"models": [str(m) for m in models], "silver": str(silver), "rounds": rounds, "repeats": repeats,
            "runs": runs, "summary": summary,
            "second_over_first_pass_time": round(b["median_pass_s"] / a["median_pass_s"], 3) if a and b else None}


def show(label, r):
    extra = ""
    if "check" in r and "silver_rows" in r["check"]:
        c = r["check"]
        extra = f"  read {c['records_read']:,} silver {c['silver_rows']:,} scored {c.get('scored_rows') or 0:,}"
        if r.get("pipeline_s") is not None:
            extra += f"  pipeline {r['pipeline_s']:.2f} s"
    if r.get("timing"):
        t = r["timing"]
        extra = (f"  report: transform {t['transform_s']} s train {t['train_s']} s baselines {r['baselines_total_s']} s "
                 f"total {t['total_s']} s")
    if r.get("reviews_per_s"):
        rep = r["report"]
        extra = (f"  {r['reviews_per_s']:,.0f} reviews/s ({r['reviews_per_cpu_s']:,.0f} per CPU s, "
                 f"{r['cores_used']} cores busy) over {rep['rows']:,} rows; import {rep['import_s']} s load "
                 f"{rep['load_s']} s")
    print(f"  {label:30s} wall {r['wall_s']:7.2f} s  cpu {r['cpu_s']:6.2f} s  peak {r['peak_mb']:6.0f} MB "
          f"(tree {r['tree_peak_mb_sampled']:.0f})  other cpu {r['other_cpu_s']} s  load {r['loadavg_before'][0]}  "
          f"{'ok' if r['ok'] else 'FAILED rc=' + str(r['rc'])}{extra}", flush=True)
    if not r["ok"]:
        print("    " + r.get("error", "").replace("\n", "\n    "), flush=True)


# ---------------------------------------------------------------------------------------------------
# report

def summarise(rec):
    s = {}
    b = rec["batch_for_silver"]
    s["batch_once"] = {k: b.get(k) for k in ("wall_s", "cpu_s", "peak_mb", "pipeline_s")}
    tr = [r for r in rec["training"]["runs"] if r["ok"]]
    if tr:
        s["training"] = {
            "ok_runs": len(tr), "wall_s": med([r["wall_s"] for r in tr]), "wall_s_max": max(r["wall_s"] for r in tr),
            "cpu_s": med([r["cpu_s"] for r in tr]), "peak_mb": med([r["peak_mb"] for r in tr]),
            "peak_mb_max": max(r["peak_mb"] for r in tr),
            "tree_peak_mb_max": max(r["tree_peak_mb_sampled"] for r in tr),
            "transform_s": med([r["timing"]["transform_s"] for r in tr]),
            "train_s": med([r["timing"]["train_s"] for r in tr]),
            "baselines_s": med([r["baselines_total_s"] for r in tr]),
            "report_total_s": med([r["timing"]["total_s"] for r in tr]),
            "report_scoring_reviews_per_s": med([r["timing"]["scoring_reviews_per_s"] for r in tr])}
        s["training"]["meets_target"] = s["training"]["wall_s_max"] < TRAINING_TARGET_S
    pairs = [p for p in rec["graph"]["pairs"] if p["without"]["ok"] and p["with"]["ok"]]
    if pairs:
        added = [round(p["with"]["wall_s"] - p["without"]["wall_s"], 3) for p in pairs]
        added_pipeline = [round(p["with"]["pipeline_s"] - p["without"]["pipeline_s"], 3) for p in pairs
                          if p["with"].get("pipeline_s") is not None and p["without"].get("pipeline_s") is not None]
        scored = pairs[0]["with"]["check"]["scored_rows"]
        g = {"ok_pairs": len(pairs), "scored_rows": scored,
             "without": {"wall_s": med([p["without"]["wall_s"] for p in pairs]),
                         "pipeline_s": med([p["without"]["pipeline_s"] for p in pairs]),
                         "cpu_s": med([p["without"]["cpu_s"] for p in pairs]),
                         "peak_mb": med([p["without"]["peak_mb"] for p in pairs])},
             "with": {"wall_s": med([p["with"]["wall_s"] for p in pairs]),
                      "pipeline_s": med([p["with"]["pipeline_s"] for p in pairs]),
                      "cpu_s": med([p["with"]["cpu_s"] for p in pairs]),
                      "peak_mb": med([p["with"]["peak_mb"] for p in pairs])},
             "added_wall_s": {"median": med(added), "min": min(added), "max": max(added), "pairs": added},
             "added_pipeline_s": {"median": med(added_pipeline), "pairs": added_pipeline} if added_pipeline else None}
        g["added_ms_per_review"] = round(1000 * g["added_wall_s"]["median"] / scored, 4) if scored else None
        g["added_cpu_ms_per_review"] = (round(1000 * (g["with"]["cpu_s"] - g["without"]["cpu_s"]) / scored, 4)
                                        if scored else None)
        if added_pipeline and scored:
            g["added_pipeline_ms_per_review"] = round(1000 * g["added_pipeline_s"]["median"] / scored, 4)
        s["graph"] = g
    sc = {m: r for m, r in rec["in_process"].items() if r["ok"]}
    if sc:
        s["in_process"] = {m: {k: r[k] for k in ("reviews_per_s", "reviews_per_s_best", "reviews_per_cpu_s",
                                                 "cores_used")} | {"rows": r["report"]["rows"],
                                                                   "import_s": r["report"]["import_s"],
                                                                   "load_s": r["report"]["load_s"],
                                                                   "peak_mb": r["peak_mb"]}
                           for m, r in sc.items()}
        if "1thread" in sc:
            s["in_process"]["per_core_reviews_per_s"] = sc["1thread"]["reviews_per_s"]
            s["in_process"]["meets_target"] = sc["1thread"]["reviews_per_s"] >= SCORING_TARGET_PER_CORE
    return s


def text_section(rec, s, elapsed):
    m = rec["machine"]
    git = m["git"] or {}
    lines = ["## Training benchmark: training time and peak memory on the real reviews, scoring throughput in the graph",
             "",
             f"Machine: {m['cores']} cores, load average at start {', '.join(map(str, m['loadavg_at_start']))} "
             f"(1/5/15 min), at end {', '.join(map(str, rec['loadavg_at_end']))}. Command: "
             f"`.venv/bin/python bench/train_bench.py` ({elapsed / 60:.1f} min). Measured {m['date_utc']} at "
             f"{git.get('commit', '?')}{' (sources modified)' if git.get('sources_modified') else ''}.",
             "",
             f"Input: the real reviews in ../shared/data/amazon ({rec['input']['review_files']} review files, "
             f"{rec['input']['product_files']} metadata files); the batch job ran once to make the silver "
             f"({fmt(s['batch_once']['wall_s'], '.2f', ' s')} wall, {fmt(s['batch_once']['peak_mb'], ',.0f', ' MB')} peak, "
             f"{rec['batch_for_silver']['check'].get('silver_rows', 0):,} silver rows of "
             f"{rec['batch_for_silver']['check'].get('records_read', 0):,} read). Walls are whole child processes "
             "(interpreter start and imports included); peak RSS is the kernel's ru_maxrss of the child (largest "
             "single process), tree = RSS summed over its process group, sampled every 0.1 s. Before each run the "
             "script waits for an idle machine; \"other CPU\" is what other processes still used during the run "
             "(this script's own polling excluded).",
             ""]
    t = s.get("training")
    lines += ["| measurement | wall (median) | runs | peak RSS | CPU s | breakdown | target | met |",
              "|---|---:|---:|---:|---:|---|---|---|"]
    if t:
        tr = [r for r in rec["training"]["runs"] if r["ok"]]
        lines.append(
            f"| training: `python -m training --silver=...` (defaults, baselines included) | {t['wall_s']:.1f} s "
            f"(max {t['wall_s_max']:.1f}) | {t['ok_runs']} | {t['peak_mb']:,.0f} MB (max {t['peak_mb_max']:,.0f}, tree "
            f"{t['tree_peak_mb_max']:,.0f}) | {t['cpu_s']:.1f} | report total {t['report_total_s']:.1f} s = tf.Transform "
            f"{t['transform_s']:.1f} + fit {t['train_s']:.1f} + baselines {t['baselines_s']:.1f} + evaluation/export; "
            f"outside the report (start, imports, reading) {t['wall_s'] - t['report_total_s']:.1f} s; "
            f"other CPU {', '.join(str(r['other_cpu_s']) for r in tr)} s | < {TRAINING_TARGET_S // 60} min | "
            f"{'yes' if t['meets_target'] else 'NO'} |")
    else:
        lines.append("| training | FAILED | 0 | - | - | - | < 5 min | - |")
    f = rec.get("import_floor")
    if f and f.get("ok"):
        lines.append(f"| floor: interpreter + `import tensorflow, tensorflow_transform` | {f['wall_s']:.1f} s | 1 | "
                     f"{f['peak_mb']:,.0f} MB | {f['cpu_s']:.1f} | every training run pays it | - | - |")
    ip = s.get("in_process", {})
    for mode, label in (("1thread", "scoring in process, TF 1 intra + 1 inter-op thread (per core)"),
                        ("default", "scoring in process, TF default threads")):
        r = ip.get(mode)
        if not r:
            continue
        tgt = f">= {SCORING_TARGET_PER_CORE:,} reviews/s" if mode == "1thread" else "-"
        met = ("yes" if r["reviews_per_s"] >= SCORING_TARGET_PER_CORE else "NO") if mode == "1thread" else "-"
        lines.append(f"| {label}: `score_table` over {r['rows']:,} silver rows, batch 4096 | "
                     f"{r['reviews_per_s']:,.0f} reviews/s (best {r['reviews_per_s_best']:,.0f}) | "
                     f"{rec['score_repeats']} pass{'es' if rec['score_repeats'] > 1 else ''} | {r['peak_mb']:,.0f} MB | - | {r['reviews_per_cpu_s']:,.0f} reviews "
                     f"per CPU s, {r['cores_used']} cores busy; import {r['import_s']:.1f} s, model load "
                     f"{r['load_s']:.1f} s | {tgt} | {met} |")
    if t:
        lines.append(f"| (training report's own figure: signature on 4,096 test reviews, default threads) | "
                     f"{t['report_scoring_reviews_per_s']:,.0f} reviews/s | {t['ok_runs']} | - | - | - | - | - |")
    g = s.get("graph")
    out = ["\n".join(lines)]
    if g:
        gl = ["| batch job over the real reviews | wall (median) | pipeline s (summary) | peak RSS | CPU s | runs |",
              "|---|---:|---:|---:|---:|---:|",
              f"| without a model | {g['without']['wall_s']:.2f} s | {fmt(g['without']['pipeline_s'], '.2f', ' s')} | "
              f"{g['without']['peak_mb']:,.0f} MB | {g['without']['cpu_s']:.1f} | {g['ok_pairs']} |",
              f"| with `--sentiment_model` (scores {g['scored_rows']:,} rows) | {g['with']['wall_s']:.2f} s | "
              f"{fmt(g['with']['pipeline_s'], '.2f', ' s')} | {g['with']['peak_mb']:,.0f} MB | {g['with']['cpu_s']:.1f} | "
              f"{g['ok_pairs']} |"]
        a = g["added_wall_s"]
        note = (f"Scoring in the graph: the model adds {a['median']:.2f} s of wall (median of pairs, {a['min']:.2f} to "
                f"{a['max']:.2f}), {g['added_ms_per_review']:.3f} ms per scored review "
                f"({g['scored_rows'] / a['median']:,.0f} reviews/s of added wall) and "
                f"{fmt(g['added_cpu_ms_per_review'], '.3f', ' ms')} CPU per review; this includes importing TensorFlow "
                f"and loading the model once")
        if g.get("added_pipeline_ms_per_review") is not None:
            note += (f"; inside the run's own timer (its summary's seconds) the model adds "
                     f"{g['added_pipeline_s']['median']:.2f} s = {g['added_pipeline_ms_per_review']:.3f} ms per review")
        if "1thread" in ip:
            fixed = ip["1thread"]["import_s"] + ip["1thread"]["load_s"]
            note += (f". The fixed part measured in process: TF import {ip['1thread']['import_s']:.1f} s + model load "
                     f"{ip['1thread']['load_s']:.1f} s")
            if a["median"] > fixed:
                note += (f"; without it the marginal in-graph rate is about "
                         f"{g['scored_rows'] / (a['median'] - fixed):,.0f} reviews/s (an estimate: added wall minus "
                         "that fixed part)")
        note += (". Pairs alternate the order (without/with, then with/without). A run counts only if it reconciles "
                 "and, with the model, scored_rows = silver_rows.")
        out += ["\n".join(gl), note]
    out.append(f"Targets (the issue): training under 5 minutes on 2 cores; scoring at least "
               f"{SCORING_TARGET_PER_CORE:,} reviews/s per core (the 1-thread in-process figure).")
    return "\n\n".join(out) + "\n"


def _context(a):
    """The runs' shared settings from the parsed options; creates the log folder."""
    work = Path(a.work).resolve()
    ctx = {"work": work, "logs": work / "logs", "timeout": a.timeout, "quiet_wait": a.quiet_wait,
           "env": dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")}
    ctx["logs"].mkdir(parents=True, exist_ok=True)
    return ctx


def main(argv=None):
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--repeats", type=int, default=2, help="training runs (default 2)")
    ap.add_argument("--pairs", type=int, default=3, help="batch job pairs without/with the model (default 3)")
    ap.add_argument("--score-repeats", type=int, default=3,
                    help="timed score_table passes over the whole silver per thread mode, after one warm-up (default 3)")
    add_run_options(ap, work="train", what="the silver, the trained models, outputs and run logs",
                             quiet_wait=30, written="training.json")
    ap.add_argument("--compare-models", nargs=2, metavar=("MODEL_A", "MODEL_B"),
                    help="instead of the whole leg: the 1-thread in-process scoring of two SavedModels, alternating "
                         "for --rounds rounds of --score-repeats passes over --silver; writes score-compare.json")
    ap.add_argument("--silver", help="--compare-models: the silver review table to score")
    ap.add_argument("--rounds", type=int, default=2, help="--compare-models: rounds (default 2)")
    ap.add_argument("--score-worker", nargs=4, metavar=("MODE", "MODEL", "SILVER", "REPEATS"), help=argparse.SUPPRESS)
    ap.add_argument("--import-floor", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.score_worker:
        mode, model, silver, repeats = a.score_worker
        score_worker(mode, model, silver, int(repeats))
        return
    if a.import_floor:
        import_floor()
        return
    if a.compare_models:
        if not a.silver:
            ap.error("--compare-models needs --silver")
        ctx = _context(a)
        rec = compare_scoring(ctx, a.compare_models, a.silver, a.rounds, a.score_repeats)
        rec["machine"] = {"cores": os.cpu_count(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "git": git_state(SOURCES)}
        Path(a.results).mkdir(parents=True, exist_ok=True)
        (Path(a.results) / "score-compare.json").write_text(json.dumps(rec, indent=1))
        print(json.dumps(rec["summary"], indent=1), f"\nsecond / first pass time: {rec['second_over_first_pass_time']}")
        return
    if a.repeats < 1 or a.pairs < 0 or a.score_repeats < 1:
        ap.error("--repeats and --score-repeats must be >= 1, --pairs >= 0")
    review_files, product_files = sorted(REVIEWS.parent.glob(REVIEWS.name)), sorted(PRODUCTS.parent.glob(PRODUCTS.name))
    if not review_files:
        print(f"SKIPPED: the real data is absent ({REVIEWS} matches nothing; ../shared/data/amazon beside the "
              "checkout). Nothing measured, nothing written.")
        return
    RESULTS = Path(a.results).resolve()
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    ctx = _context(a)
    machine = {"cores": os.cpu_count(), "loadavg_at_start": loadavg(),
               "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git_state(SOURCES)}
    print(f"machine: {machine['cores']} cores, load average at start {machine['loadavg_at_start']}", flush=True)
    rec = {"machine": machine, "repeats": a.repeats, "pairs": a.pairs, "score_repeats": a.score_repeats,
           "input": {"reviews": str(REVIEWS), "products": str(PRODUCTS), "review_files": len(review_files),
                     "product_files": len(product_files),
                     "bytes": sum(p.stat().st_size for p in review_files + product_files)},
           "targets": {"training_wall_s_below": TRAINING_TARGET_S,
                       "scoring_reviews_per_s_per_core_at_least": SCORING_TARGET_PER_CORE}}
    failed = False

    print("batch job once, for the silver:", flush=True)
    b, silver_out = run_batch(ctx, "batch-silver", keep=True)
    show("batch (silver)", b)
    rec["batch_for_silver"] = b
    if not b["ok"]:
        sys.exit("the batch run for the silver failed; nothing else measured")
    silver = silver_out / "silver" / "reviews"

    print("training:", flush=True)
    floor, _, _ = timed(ctx, [sys.executable, Path(__file__).resolve(), "--import-floor"], "import-floor")
    floor["ok"] = floor["rc"] == 0
    show("floor (import tf, tft)", floor)
    rec["import_floor"] = floor
    runs, model = [], None
    for rep in range(a.repeats):
        r, out = run_training(ctx, silver, f"training-{rep}")
        show(f"training #{rep}", r)
        runs.append(r)
        if r["ok"] and model is None:
            model = out / "saved_model"
        elif not r["ok"]:
            failed = True
    rec["training"] = {"command": " ".join(map(str, training_cmd(silver, "<fresh dir>"))), "runs": runs,
                       "model_used_for_scoring": str(model) if model else None}

    rec["graph"], rec["in_process"] = {"pairs": []}, {}
    if model is None:
        print("no trained model: scoring not measured", flush=True)
        failed = True
    else:
        print(f"scoring in the graph (model {model.relative_to(ROOT) if model.is_relative_to(ROOT) else model}):",
              flush=True)
        for i in range(a.pairs):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            pair = {"pair": i, "order": list(order), "loadavg_before": loadavg()}
            for side in order:
                r, _ = run_batch(ctx, f"graph-{i}-{side}", model=model if side == "with" else None)
                show(f"pair {i} {side} model", r)
                pair[side] = r
                failed |= not r["ok"]
            rec["graph"]["pairs"].append(pair)
        print("scoring in process (score_table over the whole silver):", flush=True)
        for mode in ("1thread", "default"):
            r = run_scorer(ctx, mode, model, silver, a.score_repeats)
            show(f"score_table {mode}", r)
            rec["in_process"][mode] = r
            failed |= not r["ok"]
    rec["loadavg_at_end"] = loadavg()
    elapsed = time.monotonic() - t_start
    rec["elapsed_s"] = round(elapsed, 1)
    rec["summary"] = summarise(rec)
    (RESULTS / "training.json").write_text(json.dumps(rec, indent=1) + "\n")
    text = text_section(rec, rec["summary"], elapsed)
    write_section(RESULTS / "README.md", SECTION_BEGIN, SECTION_END, text)
    print()
    print(text)
    print(f"train bench finished in {elapsed:.0f} s")
    if failed:
        sys.exit(f"some runs FAILED (see above and {ctx['logs']}); their times are not reported")


if __name__ == "__main__":
    main()
