#!/usr/bin/env python3
"""The dashboard's first view on the tables of a 1M-review run (issue 19: under 2 seconds).

    .venv/bin/python bench/dashboard_bench.py [--size 1m] [--work bench/work] [--output ROOT] [--runs 3]
                                              [--job-pythonpath DIR]

1. the tables: ``--output ROOT`` if given, else the batch job over ../shared/bench/make_data.py's input
   (seed 42, the same input as ``make bench``; generated once under --work) into WORK/out/SIZE/dashboard;
2. for each run: a fresh dashboard process (cold caches), then headless Chromium opens the Review insights
   page and the time from navigation start to the page's "ready" mark (every chart drawn) is the first
   view; then every other API is timed cold and warm with urllib, with its response size.

Writes bench/results/dashboard.json and prints a summary. Needs /usr/bin/chromium and /usr/bin/chromedriver
for the browser figure (without them, only the API timings are taken and the JSON says so).
``--job-pythonpath`` runs the job from another checkout (for example one that also writes the insight
tables), so the figure can include them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
RESULTS = ROOT / "bench" / "results"
SIZES = {"20k": (20_000, 2), "200k": (200_000, 4), "1m": (1_000_000, 8)}


def sh(cmd, **kw):
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_output(a):
    if a.output:
        return Path(a.output)
    n, files = SIZES[a.size]
    data, out = Path(a.work) / "data" / a.size, Path(a.work) / "out" / a.size / "dashboard"
    if not (data / "manifest.json").exists():
        sh([sys.executable, SHARED_BENCH / "make_data.py", "--out", data, "--reviews", n, "--files", files,
            "--seed", 42])
    if not (out / "_pipeline" / "events").exists():
        env = {**os.environ, "PYTHONPATH": a.job_pythonpath or str(ROOT)}
        t = time.perf_counter()
        sh([sys.executable, "-m", "beam_pipeline", "--source=files", f"--reviews={data}/reviews/*.jsonl",
            f"--products={data}/metadata/products.jsonl", f"--output={out}", "--full_refresh"],
           env=env, cwd=a.job_pythonpath or ROOT, stdout=subprocess.DEVNULL)
        print(f"job: {time.perf_counter() - t:.1f} s", flush=True)
    return out


def start_server(output):
    proc = subprocess.Popen([sys.executable, "-m", "beam_pipeline.dashboard", f"--output={output}", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline()
    m = re.search(r"(http://\S+/)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the dashboard did not start: {line}{proc.stderr.read()}")
    return proc, m.group(1)


def get(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t, len(body), json.loads(body) if body[:1] in (b"{", b"[") else None


def browser():
    if not (os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver", os.X_OK)):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1300,1800", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def first_view(driver, url, page="insights"):
    """Navigation start -> the page's ready mark (all charts of the page drawn), in seconds (browser clock)."""
    driver.get("about:blank")
    driver.get(url + "#" + page)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = driver.execute_script("return document.body.dataset.ready || ''")
        if ready.startswith(page + ":"):
            if ready.endswith(":error"):
                raise SystemExit("the page reported an error: " + driver.find_element("id", "page").text[:500])
            driver.execute_script("performance.mark('ready-seen')")
            break
        time.sleep(0.01)
    # the page sets the mark itself when it finishes drawing; measure from navigation start to that moment
    return driver.execute_script("""
        const m = performance.getEntriesByName('dashboard-ready');
        return (m.length ? m[m.length - 1].startTime : performance.getEntriesByName('ready-seen')[0].startTime) / 1000;""")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--size", default="1m", choices=list(SIZES), help="input size when the job runs (default 1m)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"), help="inputs and outputs (default bench/work)")
    ap.add_argument("--output", default=None, help="an existing output root to measure (skips the job)")
    ap.add_argument("--runs", type=int, default=3, help="cold first views, each with a fresh server (default 3)")
    ap.add_argument("--job-pythonpath", default=None, help="checkout whose job writes the tables (default this one)")
    ap.add_argument("--result", default=str(RESULTS / "dashboard.json"), help="where the JSON goes")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from beam_pipeline import tables
    out = ensure_output(a)
    loc = tables.Location(str(out))
    silver = tables.open_table(loc, tables.SILVER_REVIEWS)
    n_silver = sum(json.loads(e["summary"])["reviews"]["silver_rows"] for e in tables.events(loc)
                   if e["event"] == "committed" and e["summary"] and "reviews" in json.loads(e["summary"]))
    gold = sorted(t for t in tables.all_tables(loc) if t.startswith("gold/"))
    driver = browser()
    views, apis = [], []
    try:
        for run in range(a.runs):
            proc, url = start_server(out)
            try:
                if driver is not None:
                    views.append(first_view(driver, url))
                    print(f"run {run + 1}: first view (Review insights, cold server) {views[-1]:.2f} s", flush=True)
                timings = {}
                api = url + "api/"
                for name, path in (("meta", "meta?root=0"), ("insights", "insights?root=0"),
                                   ("insights_verified_filter", "insights?root=0&verified=1"),
                                   ("insights_brand_filter", None), ("trending", "trending?root=0"),
                                   ("reviewers", "reviewers?root=0"), ("reviewer", None), ("health", "health?root=0"),
                                   ("dead_letters", "dead_letters?root=0&limit=25"), ("version", "version?root=0")):
                    if name == "insights_brand_filter":
                        brand = (get(api + "meta?root=0")[2].get("brands") or [""])[0]
                        path = "insights?root=0&brand=" + urllib.request.quote(brand)
                    if name == "reviewer":
                        rid = get(api + "reviewers?root=0")[2]["reviewers"][0]["reviewer_id"]
                        path = "reviewer?root=0&id=" + urllib.request.quote(rid)
                    cold, size, _ = get(api + path)
                    warm, _, _ = get(api + path)
                    timings[name] = {"cold_s": round(cold, 3), "warm_s": round(warm, 3), "bytes": size}
                apis.append(timings)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        if driver is not None:
            driver.quit()
    names = list(apis[0])
    summary = {name: {"cold_s_median": round(statistics.median(r[name]["cold_s"] for r in apis), 3),
                      "warm_s_median": round(statistics.median(r[name]["warm_s"] for r in apis), 3),
                      "bytes": apis[0][name]["bytes"]} for name in names}
    result = {
        "what": "dashboard first view: navigation start -> every chart of Review insights drawn, headless Chromium, "
                "a fresh dashboard process per run (cold caches); then each API cold and warm",
        "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "output": str(out), "silver_rows": n_silver, "silver_files": len(silver.file_uris()), "gold_tables": gold,
        "first_view_s": [round(v, 3) for v in views], "first_view_s_median": round(statistics.median(views), 3)
        if views else None, "browser": driver is not None, "target_s": 2.0, "apis": summary, "runs": apis,
    }
    Path(a.result).parent.mkdir(parents=True, exist_ok=True)
    Path(a.result).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("silver_rows", "first_view_s", "first_view_s_median")}))
    for name, s in summary.items():
        print(f"  {name:26s} cold {s['cold_s_median']:6.3f} s  warm {s['warm_s_median']:6.3f} s  {s['bytes']:>9,} bytes")
    print(f"wrote {a.result}")


if __name__ == "__main__":
    main()
