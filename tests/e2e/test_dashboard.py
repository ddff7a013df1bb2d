"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

One module-scoped output: generated reviews plus lines that carry markup (``&lt;script&gt;`` and ``<img
onerror>`` in brand, text, title and summary; a ``<script>`` reviewer id and an ``<img onerror>`` asin,
which the cleaning rules leave as they are; a malformed line with ``<script>`` that becomes a dead letter),
run through the batch job. The server serves two roots: ``out`` (the job's tables only) and ``augmented``
(the same input run again with ``--sentiment_model``, a real SavedModel (tests/_sentiment_model.py), plus
a recommendations export and, when the job did not write them, insight tables the test writes in the
insights schema), so both the "not computed yet" notes and the rendered tables are seen.

For each page: it loads without console errors, the numbers it shows equal those recomputed here from the
tables with plain Python (``collections.Counter``), a filter changes them as expected, and a screenshot
goes to the test's tmp folder (``pytest --basetemp=DIR`` keeps them where you want). Then the markup test,
and last, a second batch run committed while the page is open shows up without a reload.

The browser must be installed: a missing one fails these tests with the command that installs it
(``make test`` installs it when it runs as root on Debian; CI does).
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests._waiting import wait_until

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCRIPT_TEXT = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"
IMG_TEXT = "<img src=x onerror=window.__pwned=2>"
EVIL_REVIEWER = "<script>window.__pwned=3</script>"
EVIL_ASIN = "<img src=x onerror=window.__pwned=4>"
DEAD_PAYLOAD_MARK = "<script>window.__pwned=5</script>"
UTC = datetime.timezone.utc
MAX_RECORDS = 60     # events the streaming test reads per partition, fewer than it publishes


# ------------------------------------------------------------------------------------------ fixtures

def _evil_lines(data):
    """Reviews and products carrying markup, appended to the generated input."""
    product = {"asin": "B0XSS00001", "title": IMG_TEXT + " Evil " + SCRIPT_TEXT, "brand": SCRIPT_TEXT,
               "main_cat": "Toys & Games", "category": ["Toys & Games", IMG_TEXT], "price": "$9.99", "image": []}
    product2 = dict(product, asin=EVIL_ASIN, title="Plain <b>bold</b> &lt;i&gt;x&lt;/i&gt; a < b > c",
                    brand="AT&T <3")
    base = 1543622400  # 2018-12-01
    reviews = [{"overall": 1.0 + i % 5, "verified": i % 3 != 0, "reviewTime": "12 01, 2018",
                "reviewerID": "AXSSREVIEWER01", "asin": "B0XSS00001", "reviewerName": IMG_TEXT,
                "reviewText": f"{SCRIPT_TEXT} and {IMG_TEXT} number {i}", "summary": IMG_TEXT + " " + SCRIPT_TEXT,
                "unixReviewTime": base + i * 3600} for i in range(40)]
    reviews += [{"overall": 4.0, "verified": True, "reviewTime": "12 10, 2018", "reviewerID": EVIL_REVIEWER,
                 "asin": EVIL_ASIN, "reviewerName": "x", "reviewText": f"evil {i}", "summary": SCRIPT_TEXT,
                 "unixReviewTime": base + 9 * 86400 + i * 60} for i in range(60)]
    (data / "metadata" / "evil.jsonl").write_text(json.dumps(product) + "\n" + json.dumps(product2) + "\n")
    (data / "reviews" / "evil.jsonl").write_text("\n".join(json.dumps(r) for r in reviews) + "\n"
                                                 + '{"broken": "' + DEAD_PAYLOAD_MARK + "\n")


def _run_job(data, out, *extra):
    cmd = [sys.executable, "-m", "beam_pipeline", "--source=files", f"--reviews={data}/reviews/*.jsonl",
           f"--products={data}/metadata/*.jsonl", f"--output={out}", *extra]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def read(out, rel):
    from beam_pipeline import tables
    return tables.read(tables.Location(str(out)), rel)


def _write_delta(path, table):
    from deltalake import write_deltalake
    write_deltalake(str(path), table, mode="overwrite")


def _augment(out):
    """Recommendations (the training.recommend export's schema, two models) and, where the job did not write
    them, insight tables in the insights schema, computed here from silver."""
    silver = read(out, "silver/reviews").to_pylist()
    by_reviewer = collections.Counter(r["reviewer_id"] for r in silver)
    top = [rid for rid, _ in by_reviewer.most_common(3)]
    asins = [a for a, _ in collections.Counter(r["asin"] for r in silver).most_common(6)]
    if EVIL_ASIN not in asins:
        asins[-1] = EVIL_ASIN
    rows = []
    for model, order in (("item-knn", asins), ("popularity", list(reversed(asins)))):
        for rid in top:
            for rank, asin in enumerate(order[:4], start=1):
                rows.append({"reviewer_id": rid, "rank": rank, "asin": asin, "score": 1.0 / rank, "model": model})
    _write_delta(out / "recommendations" / "recommendations", pa.Table.from_pylist(rows, schema=pa.schema([
        ("reviewer_id", pa.string()), ("rank", pa.int32()), ("asin", pa.string()), ("score", pa.float64()),
        ("model", pa.string())])))
    if read(out, "insights/trending_products") is None:
        for rel, key in (("trending_products", "asin"), ("trending_brands", "brand"), ("trending_main_cats", "main_cat")):
            per_day = collections.Counter((datetime.datetime.fromtimestamp(r["unix_review_time"], UTC).date(), r[key])
                                          for r in silver if r[key] is not None)
            day = max(d for d, _ in per_day)   # the latest day with reviews, and its keys by count
            keys = sorted(((n, k) for (d, k), n in per_day.items() if d == day), key=lambda x: (-x[0], x[1]))[:5]
            t = pa.table({"day": pa.array([day] * len(keys), pa.date32()), key: [k for _, k in keys],
                          "count": pa.array([n for n, _ in keys], pa.int64()), "baseline": [0.5] * len(keys),
                          "score": [float(10 - i) for i in range(len(keys))],
                          "rank": pa.array(range(1, len(keys) + 1), pa.int32()), "rule": ["test"] * len(keys)})
            _write_delta(out / "insights" / rel, t)
    if read(out, "insights/recent_brands") is None:
        latest = {}
        for r in silver:
            if r["brand"]:
                k = (r["reviewer_id"], r["brand"])
                latest[k] = max(latest.get(k, 0), r["unix_review_time"])
        per = collections.defaultdict(list)
        for (rid, brand), t in latest.items():
            per[rid].append((-t, brand))
        rows = [{"reviewer_id": rid, "brands": [b for _, b in sorted(v)],
                 "brand_times": [datetime.datetime.fromtimestamp(-t, UTC) for t, _ in sorted(v)],
                 "n_brands": len(v)} for rid, v in per.items()]
        _write_delta(out / "insights" / "recent_brands", pa.Table.from_pylist(rows, schema=pa.schema([
            ("reviewer_id", pa.string()), ("brands", pa.list_(pa.string())),
            ("brand_times", pa.list_(pa.timestamp("us", tz="UTC"))), ("n_brands", pa.int32())])))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("dashboard")
    data, out, aug = base / "data", base / "out", base / "augmented"
    r = subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(data), "--reviews", "1500",
                        "--files", "2", "--seed", "11"], cwd=REPO_ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 0, r.stderr
    _evil_lines(data)
    model = base / "model"
    with open(base / "model.log", "w") as log:   # the SavedModel is built while the first run goes on
        build = "import sys; from tests._sentiment_model import save_model; save_model(sys.argv[1])"
        building = subprocess.Popen([sys.executable, "-c", build, str(model)], cwd=REPO_ROOT, stdout=log, stderr=log,
                                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        _run_job(data, out)
        assert building.wait(timeout=300) == 0, (base / "model.log").read_text()[-3000:]
    _run_job(data, aug, f"--sentiment_model={model}")
    _augment(aug)
    from beam_pipeline.dashboard import data as dash_data
    from beam_pipeline.dashboard.server import Server
    server = Server([dash_data.Root(str(out), "out"), dash_data.Root(str(aug), "augmented")], "127.0.0.1", 0).start()
    shots = base / "screenshots"
    shots.mkdir()
    yield {"url": server.url, "data": data, "out": out, "aug": aug, "shots": shots, "base": base}
    server.stop()


@pytest.fixture(scope="module")
def browser(site):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the browser tests need Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
                    "apt-get install -y chromium chromium-driver (make test installs them when run as root)",
                    pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[dev]' (make test does)", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-", dir=site["base"])
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1300,1800", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# ------------------------------------------------------------------------------------------ helpers

def open_page(driver, site, page, root=0, params=""):
    driver.get(f"{site['url']}?root={root}#{page}{'?' + params if params else ''}")
    return wait_ready(driver, page)


def wait_ready(driver, page, previous=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = driver.execute_script("return document.body.dataset.ready || ''")
        if ready.startswith(page + ":") and ready != previous and not driver.execute_script(
                "return document.getElementById('status').className === 'busy'"):
            assert not ready.endswith(":error"), driver.find_element("id", "page").text
            return ready
        time.sleep(0.05)
    raise AssertionError(f"page {page} not ready after {timeout}s: {driver.find_element('id', 'page').text[:500]}")


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver, site, name):
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1300, min(max(900, height + 40), 6000))
    path = site["shots"] / f"dashboard-{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1300, 1800)
    assert path.stat().st_size > 10_000
    return path


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def chart_values(driver, chart, series):
    """{label: number} of one series of a chart, from its numbers table (data-* attributes)."""
    cells = js(driver, """
        return Array.from(document.querySelectorAll(`[data-chart="${arguments[0]}"] td[data-series]`))
          .filter(td => td.dataset.series === arguments[1]).map(td => [td.dataset.label, td.dataset.value]);""",
               chart, series)
    return {label: float(v) if v != "" else None for label, v in cells}


def table_values(driver, selector):
    """The raw value (``data-value``) of every cell of the first table under ``selector``."""
    return js(driver, """
        return Array.from(document.querySelectorAll(arguments[0] + ' table tbody tr'))
          .map(tr => Array.from(tr.children).map(td => td.dataset.value));""", selector)


def meta_text(driver, chart):
    return js(driver, f"return document.querySelector('[data-chart=\"{chart}\"] .meta').textContent")


def kpi(driver, label):
    v = js(driver, "const k = Array.from(document.querySelectorAll('[data-kpi]')).find(x => x.dataset.kpi === arguments[0]);"
                   "return k ? k.querySelector('.v').dataset.value : null", label)
    return None if v in (None, "") else float(v)


def table_rows(driver, selector):
    """Text of every cell of the first table under ``selector``."""
    return js(driver, """
        const t = document.querySelector(arguments[0] + ' table');
        if (!t) return null;
        return Array.from(t.querySelectorAll('tbody tr')).map(tr => Array.from(tr.children).map(td => td.textContent));""",
              selector)


def act(driver, page, script):
    """Run ``script`` (a click that redraws the page) and wait for the redraw."""
    js(driver, "document.body.dataset.ready = 'stale'")
    js(driver, script)
    return wait_ready(driver, page, previous="stale")


def set_filter(driver, page, **values):
    """Set filter inputs and fire their change events in one script (so only the last redraw completes),
    then wait for that redraw."""
    js(driver, "document.body.dataset.ready = 'stale'")
    js(driver, """
        for (const [key, value] of Object.entries(arguments[0])) {
          const el = document.getElementById('f-' + key);
          if (el.type === 'checkbox') el.checked = !!value; else el.value = value;
          el.dispatchEvent(new Event('change'));
        }""", values)
    return wait_ready(driver, page, previous="stale")


def label(v):
    return str(int(v)) if isinstance(v, float) and v.is_integer() else "(none)" if v is None else str(v)


# ------------------------------------------------------------------------------------------ tests

def test_insights_page_numbers_and_filters(site, browser):
    d = browser
    open_page(d, site, "insights")
    assert console_errors(d) == []
    silver = read(site["out"], "silver/reviews").to_pylist()
    assert kpi(d, "reviews") == len(silver)
    assert kpi(d, "distinct reviewers") == len({r["reviewer_id"] for r in silver})
    assert kpi(d, "distinct products") == len({r["asin"] for r in silver})
    assert kpi(d, "mean rating") == pytest.approx(sum(r["overall"] for r in silver) / len(silver))
    rating = collections.Counter(label(r["overall"]) for r in silver)
    assert chart_values(d, "by_rating", "reviews") == {k: float(v) for k, v in rating.items()}
    years = collections.Counter(str(r["year"]) for r in silver)
    assert chart_values(d, "per_year", "reviews") == {k: float(v) for k, v in years.items()}
    sent = collections.Counter("negative" if r["overall"] <= 2 else "positive" if r["overall"] >= 4 else "neutral"
                               for r in silver)
    assert chart_values(d, "sentiment", "from rating") == {k: float(sent[k]) for k in ("negative", "neutral", "positive")}
    verified = collections.Counter((label(r["overall"]), r["verified"]) for r in silver)
    assert chart_values(d, "rating_verified", "verified") == {
        k: float(verified[(k, True)]) for k in sorted(rating)}
    cats = collections.Counter(label(r["main_cat"]) for r in silver)
    assert chart_values(d, "main_cats", "reviews") == {k: float(v) for k, v in cats.items()}
    brands = collections.Counter(r["brand"] for r in silver)
    shown = table_rows(d, '[data-chart="brands"]')
    assert [(row[0], int(row[1].replace(",", ""))) for row in shown[:5]] == [
        (label(b), n) for b, n in sorted(brands.items(), key=lambda x: (-x[1], x[0] is None, x[0] or ""))[:5]]
    # insight families: drawn from their tables when the job wrote them, else named as not computed yet
    for fam in ("top_words", "top_summaries", "top_reviewer_names", "rating_by_brand", "products_by_secondary_cat"):
        if read(site["out"], f"gold/{fam}") is None:
            chart = {"products_by_secondary_cat": "secondary_cats"}.get(fam, fam)
            assert "not computed yet" in js(d, f"return document.querySelector('[data-chart={chart}]').textContent")
    words = read(site["out"], "gold/top_words")
    if words is not None:
        for s in ("negative", "neutral", "positive"):
            want = sorted(((r["word"], r["n_occurrences"]) for r in words.to_pylist() if r["sentiment"] == s),
                          key=lambda x: (-x[1], x[0]))[:15]
            assert chart_values(d, "top_words", s) == {w: float(n) for w, n in want}
    summaries = read(site["out"], "gold/top_summaries")
    if summaries is not None:
        want = sorted(((r["summary_norm"], r["n_reviews"]) for r in summaries.to_pylist()), key=lambda x: (-x[1], x[0]))
        assert chart_values(d, "top_summaries", "reviews") == {w: float(n) for w, n in want[:15]}
    screenshot(d, site, "insights")

    # filters: verified only, then a main category, then a brand, then a time range
    set_filter(d, "insights", verified=True)
    ver = [r for r in silver if r["verified"]]
    assert kpi(d, "reviews") == len(ver)
    assert chart_values(d, "by_rating", "reviews") == {
        k: float(v) for k, v in collections.Counter(label(r["overall"]) for r in ver).items()}
    assert "filtered by verified only" in js(d, "return document.querySelector('[data-chart=by_rating] .meta').textContent")
    assert "not filtered by verified only" in js(
        d, "return document.querySelector('[data-chart=products_main_cat] .meta').textContent")
    # the rankings follow the filter too: recomputed here from the verified rows
    summaries = collections.Counter((r["summary"] or "").strip().lower() for r in ver)
    summaries.pop("", None)
    assert chart_values(d, "top_summaries", "reviews") == {
        k: float(n) for k, n in sorted(summaries.items(), key=lambda x: (-x[1], x[0]))[:15]}
    names = collections.Counter(r["reviewer_name"] for r in ver if r["reviewer_name"] is not None)
    assert chart_values(d, "top_reviewer_names", "reviews") == {
        k: float(n) for k, n in sorted(names.items(), key=lambda x: (-x[1], x[0]))[:15]}
    per_brand = collections.defaultdict(list)
    for r in ver:
        if r["brand"] is not None:
            per_brand[r["brand"]].append(r["overall"])
    ranked = [(b, len(v), sum(v) / len(v)) for b, v in per_brand.items() if len(v) >= 10]   # --rating_min_reviews
    want = [[b, n, m, end, rank] for end, order in (("top", -1), ("bottom", 1))
            for rank, (b, n, m) in enumerate(sorted(ranked, key=lambda x: (order * x[2], -x[1], x[0]))[:10], start=1)]
    got = [[b, int(n), float(m), end, int(rank)] for b, n, m, end, rank in table_values(d, '[data-chart="rating_by_brand"]')]
    assert got == want and len(want) > 2
    for chart in ("top_words", "top_summaries", "top_reviewer_names", "rating_by_product", "rating_by_brand"):
        assert "filtered by verified only" in meta_text(d, chart), chart
    cat = "Toys & Games"
    set_filter(d, "insights", main_cat=cat)
    sel = [r for r in ver if r["main_cat"] == cat]
    assert kpi(d, "reviews") == len(sel)
    assert chart_values(d, "main_cats", "reviews") == {cat: float(len(sel))}
    set_filter(d, "insights", verified=False, main_cat="", brand="AT&T <3")
    assert kpi(d, "reviews") == sum(r["brand"] == "AT&T <3" for r in silver) == 60
    set_filter(d, "insights", brand="", **{"from": "2016-01-01", "to": "2016-12-31"})
    in_2016 = [r for r in silver if r["year"] == 2016]
    assert kpi(d, "reviews") == len(in_2016)
    assert chart_values(d, "per_year", "reviews") == {"2016": float(len(in_2016))}
    assert console_errors(d) == []
    js(d, "document.getElementById('f-clear').click()")
    wait_ready(d, "insights")


def test_model_predicted_sentiment_of_a_scored_run(site, browser):
    """The augmented root's run was scored by a real SavedModel: the model-predicted counts and shares shown
    beside the rating-derived ones equal those counted here from its silver table, without a filter (read from
    gold/predicted_sentiment) and with one (counted from silver). A gold family with none of the filters'
    columns says on the page that it is all time, not filtered."""
    d = browser
    open_page(d, site, "insights", root=1)
    assert console_errors(d) == []
    assert read(site["aug"], "gold/predicted_sentiment") is not None
    silver = read(site["aug"], "silver/reviews").to_pylist()
    sentiments = ("negative", "neutral", "positive")

    def check(rows):
        pred = collections.Counter(r["predicted_sentiment"] for r in rows)
        assert None not in pred and pred["negative"] and pred["positive"]    # every row scored, both labels
        shown = {r[0]: r for r in table_values(d, '[data-chart="sentiment_table"]')}
        assert [shown[s][3] for s in sentiments] == [str(pred[s]) for s in sentiments]
        assert [float(shown[s][4]) for s in sentiments] == pytest.approx([pred[s] / len(rows) for s in sentiments])
        assert shown["total"][3] == str(len(rows))
        assert chart_values(d, "sentiment", "from model") == {s: float(pred[s]) for s in sentiments}
        rated = collections.Counter("negative" if r["overall"] <= 2 else "positive" if r["overall"] >= 4
                                    else "neutral" for r in rows)
        assert chart_values(d, "sentiment", "from rating") == {s: float(rated[s]) for s in sentiments}

    check(silver)
    assert "gold/predicted_sentiment" in meta_text(d, "sentiment_table")
    set_filter(d, "insights", verified=True)
    check([r for r in silver if r["verified"]])
    assert "filtered by verified only" in meta_text(d, "sentiment_table")
    generic = [c for c in js(d, "return Array.from(document.querySelectorAll('[data-chart]')).map(c => c.dataset.chart)")
               if c.startswith("family_")]
    assert "family_predicted_sentiment_by_brand" in generic
    for chart in generic:
        assert "all time, not filtered (this table has no column for verified only)" in meta_text(d, chart), chart
    assert console_errors(d) == []
    screenshot(d, site, "insights-scored")
    js(d, "document.getElementById('f-clear').click()")
    wait_ready(d, "insights")


def test_gold_and_silver_paths_agree(site):
    """Unfiltered charts read gold; a filter reads silver. A filter that keeps every row (a time range around
    all the data) must give the same numbers as gold: the two paths use the same rules."""
    from beam_pipeline.dashboard import data
    root = data.Root(str(site["out"]))
    gold_charts = {c["id"]: c for c in data.insights(root, {})["charts"]}
    everything = {"from": "1990-01-01", "to": "2100-01-01"}
    silver_charts = {c["id"]: c for c in data.insights(root, data.parse_filters(everything))["charts"]}
    rankings = ("top_words", "top_summaries", "top_reviewer_names", "rating_by_product", "rating_by_brand")
    assert all(read(site["out"], f"gold/{fam}") is not None for fam in rankings)   # the job's insights are on
    for cid in ("by_rating", "rating_verified", "per_year", "sentiment", "sentiment_by_year", "length_sentiment",
                "verified_sentiment", "main_cats", "brands", "top_reviewers") + rankings:
        g, s = gold_charts[cid], silver_charts[cid]
        assert g["source"].startswith("gold/") or cid == "per_year", (cid, g["source"])
        assert s["source"] == "silver/reviews" and s["applied"] == ["time"], cid
        for key in ("labels", "series", "rows", "groups"):
            if key in g:
                assert g[key] == s[key], cid
        assert g.get("rows", g.get("labels", True)), cid    # something to compare
    assert {i["label"]: i["value"] for i in gold_charts["kpis"]["items"]} == pytest.approx(
        {i["label"]: i["value"] for i in silver_charts["kpis"]["items"]})


def test_trending_page(site, browser):
    d = browser
    for root, out in ((0, site["out"]), (1, site["aug"])):
        open_page(d, site, "trending", root=root)
        assert console_errors(d) == []
        silver = read(out, "silver/reviews").to_pylist()
        for kind, key in (("products", "asin"), ("brands", "brand"), ("main_cats", "main_cat")):
            t = read(out, f"insights/trending_{kind}")
            text = js(d, f"return document.querySelector('[data-trending={kind}]').textContent")
            if t is None:
                assert "not computed yet" in text and f"insights/trending_{kind}" in text
                continue
            day = js(d, "return document.getElementById('trend-day').value")
            want = sorted((r for r in t.to_pylist() if r["day"].isoformat() == day), key=lambda r: r["rank"])
            shown = table_rows(d, f"[data-trending={kind}]") or []
            assert [(int(row[0]), row[1]) for row in shown] == [(r["rank"], r[key]) for r in want]
            counts = [int(row[3 if key == "asin" else 2].replace(",", "")) for row in shown]
            assert counts == [r["count"] for r in want]
            # the small chart: reviews per day over the 14 days ending on the chosen day, from the tables
            end = datetime.date.fromisoformat(day)
            for r in want[:3]:
                per_day = collections.Counter(datetime.datetime.fromtimestamp(x["unix_review_time"], UTC).date()
                                              for x in silver if x[key] == r[key])
                expected = [per_day[end - datetime.timedelta(days=13 - i)] for i in range(14)]
                aria = js(d, """
                    const rows = Array.from(document.querySelectorAll(`[data-trending="${arguments[0]}"] tbody tr`));
                    const row = rows.find(tr => tr.children[1].textContent === arguments[1]);
                    return row.querySelector('svg.spark').getAttribute('aria-label');""", kind, r[key])
                assert aria == "daily counts " + ", ".join(map(str, expected))
        screenshot(d, site, f"trending-{'out' if root == 0 else 'augmented'}")


def test_reviewer_page(site, browser):
    d = browser
    out = site["aug"]
    silver = read(out, "silver/reviews").to_pylist()
    rid = collections.Counter(r["reviewer_id"] for r in silver if r["reviewer_id"] != EVIL_REVIEWER).most_common(1)[0][0]
    open_page(d, site, "reviewer", root=1, params="id=" + rid)
    assert console_errors(d) == []
    mine = [r for r in silver if r["reviewer_id"] == rid]
    assert js(d, "return document.querySelector('[data-section=history] h3').textContent") == \
        f"History: {len(mine):,} reviews"
    rows = table_rows(d, "[data-section=history]")
    assert sorted(r[1] for r in rows) == sorted(r["asin"] for r in mine)
    recent = [r for r in read(out, "insights/recent_brands").to_pylist() if r["reviewer_id"] == rid][0]
    shown = js(d, "return Array.from(document.querySelectorAll('[data-section=recent_brands] li')).map(li => li.dataset.brand)")
    assert shown == recent["brands"]
    titles = {p["asin"]: p["title"] for p in read(out, "silver/products").to_pylist()}
    recs = read(out, "recommendations/recommendations").to_pylist()
    for model in ("item-knn", "popularity"):
        want = sorted((r for r in recs if r["reviewer_id"] == rid and r["model"] == model), key=lambda r: r["rank"])
        got = table_rows(d, f'[data-model="{model}"]')
        assert [(int(g[0]), g[1], g[2]) for g in got] == [(w["rank"], w["asin"], titles.get(w["asin"]) or "–")
                                                           for w in want]
    screenshot(d, site, "reviewer")
    # the same reviewer on the job's own output: recommendations are named as not computed yet
    open_page(d, site, "reviewer", root=0, params="id=" + rid)
    assert "not computed yet" in js(d, "return document.querySelector('[data-section=recommendations]').textContent")
    assert "training.recommend" in js(d, "return document.querySelector('[data-section=recommendations]').textContent")
    assert console_errors(d) == []


def test_health_page(site, browser):
    d = browser
    open_page(d, site, "health")
    assert console_errors(d) == []
    from beam_pipeline import tables
    events = tables.events(tables.Location(str(site["out"])))
    committed = [e for e in events if e["event"] == "committed"]
    runs = table_rows(d, "[data-section=runs]")
    assert len(runs) == len(committed)
    summary = json.loads(committed[-1]["summary"])
    assert runs[0][3] == committed[-1]["run_id"]
    assert int(runs[0][5].replace(",", "")) == summary["reviews"]["records_read"]
    assert int(runs[0][6].replace(",", "")) == summary["reviews"]["silver_rows"]
    dead = read(site["out"], "dead_letters").to_pylist()
    by_reason = collections.Counter((r["record_type"], r["stage"], r["reason"]) for r in dead)
    shown = {(a, b, c): int(n.replace(",", "")) for a, b, c, n in table_rows(d, "[data-section=dead_by_reason]")}
    assert shown == dict(by_reason)
    assert f"1–{min(25, len(dead))} of {len(dead)}" in js(d, "return document.getElementById('dead-range').textContent")
    # browse: pick the reason of the markup line, then the row, and read its raw payload
    act(d, "health", """Array.from(document.querySelectorAll('[data-section=dead_by_reason] tbody tr'))
             .find(tr => tr.children[2].textContent === 'malformed_json' && tr.children[0].textContent === 'review')
             .click()""")
    malformed = [r for r in dead if r["reason"] == "malformed_json" and r["record_type"] == "review"]
    assert f"of {len(malformed)}" in js(d, "return document.getElementById('dead-range').textContent")
    js(d, """Array.from(document.querySelectorAll('[data-section=dead_letters] tbody tr'))
             .find(tr => tr.textContent.includes('evil.jsonl')).click()""")
    evil = [r for r in malformed if r["source"].endswith("evil.jsonl")][0]
    assert js(d, "return document.getElementById('dead-payload').textContent") == evil["payload"]
    assert DEAD_PAYLOAD_MARK in evil["payload"]
    assert "no streaming run" in js(d, "return document.querySelector('[data-section=freshness]').textContent")
    latest = max(r["unix_review_time"] for r in read(site["out"], "silver/reviews").to_pylist())
    assert js(d, "return document.getElementById('latest-event').textContent").startswith(
        datetime.datetime.fromtimestamp(latest, UTC).strftime("%Y-%m-%d"))
    screenshot(d, site, "health")
    assert console_errors(d) == []


def test_markup_is_shown_as_text_and_never_runs(site, browser):
    """Markup from the data, carried through the job: shown as the exact text the tables hold, never parsed."""
    d = browser
    silver = read(site["aug"], "silver/reviews").to_pylist()
    evil_rows = [r for r in silver if r["reviewer_id"] == EVIL_REVIEWER]
    assert evil_rows and all(r["asin"] == EVIL_ASIN for r in evil_rows)   # the job keeps ids as they are
    brand = next(r["brand"] for r in silver if r["asin"] == "B0XSS00001")  # what cleaning made of the markup

    def never_ran():
        assert js(d, "return window.__pwned === undefined")
        assert js(d, "return document.querySelectorAll('img').length") == 0      # <img ...> never became an element
        assert js(d, "return Array.from(document.scripts).map(s => s.getAttribute('src'))") == ["/static/app.js"]
        assert not any("pwned" in e["message"] for e in d.get_log("browser"))

    open_page(d, site, "insights", root=1)
    body = js(d, "return document.getElementById('page').textContent")
    assert EVIL_REVIEWER in body                      # most active reviewers: its id, as text
    assert brand in [row[0] for row in table_rows(d, '[data-chart="brands"]')]
    assert "AT&T <3" in [row[0] for row in table_rows(d, '[data-chart="brands"]')]
    never_ran()
    from urllib.parse import quote
    open_page(d, site, "reviewer", root=1, params="id=" + quote(EVIL_REVIEWER, safe=""))
    assert js(d, "return document.getElementById('reviewer-id').value") == EVIL_REVIEWER
    rows = table_rows(d, "[data-section=history]")
    assert {r[1] for r in rows} == {EVIL_ASIN} and len(rows) == len(evil_rows)
    never_ran()
    open_page(d, site, "trending", root=1)
    never_ran()
    open_page(d, site, "health", root=1)
    js(d, """Array.from(document.querySelectorAll('[data-section=dead_letters] tbody tr'))
             .find(tr => tr.textContent.includes('evil.jsonl')).click()""")
    assert DEAD_PAYLOAD_MARK in js(d, "return document.getElementById('dead-payload').textContent")
    never_ran()
    screenshot(d, site, "markup")


def test_a_run_committed_while_the_page_is_open_appears(site, browser):
    d = browser
    open_page(d, site, "insights")
    before = kpi(d, "reviews")
    version = js(d, "return document.body.dataset.ready")
    js(d, "window.__still_here = 1")
    extra = site["base"] / "more"
    r = subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(extra), "--reviews", "300",
                        "--files", "1", "--seed", "12", "--dirty-rate", "0"], cwd=REPO_ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 0, r.stderr
    shutil.copy(next((extra / "reviews").glob("*.jsonl")), site["data"] / "reviews" / "landed-later.jsonl")
    _run_job(site["data"], site["out"])                     # incremental: reads only the landed file
    after = len(read(site["out"], "silver/reviews"))
    assert after > before
    wait_until(lambda: kpi(d, "reviews") == after, 20, 0.2)   # the page polls the event log
    assert kpi(d, "reviews") == after
    assert js(d, "return window.__still_here") == 1         # redrawn in place, not reloaded
    assert js(d, "return document.body.dataset.ready") != version
    assert "updated" in d.find_element("id", "status").text
    open_page(d, site, "health")
    assert len(table_rows(d, "[data-section=runs]")) == 2
    assert console_errors(d) == []


def test_a_streaming_run_committed_while_the_page_is_open_appears(site, browser):
    """New reviews published to the local Event Hubs endpoint, read by a streaming run into the same tables
    while the page is open: the page redraws with the new reviews, and the health page shows the stream's
    checkpoint (partitions, watermark) from the event log. The run reads MAX_RECORDS events per partition
    (--max_records) of the more it was sent: each partition's lag in events shown equals the endpoint's own
    count of its events minus those read."""
    from runners.eventhubs_local import LocalEventHubs
    from runners.publish import publish

    d = browser
    open_page(d, site, "insights")
    before = kpi(d, "reviews")
    extra = site["base"] / "streamed"
    r = subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(extra), "--reviews", "200",
                        "--files", "1", "--seed", "13", "--dirty-rate", "0"], cwd=REPO_ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 0, r.stderr
    hub = LocalEventHubs(site["base"] / "hub", partitions=2, fsync=False).start()
    try:
        stats = publish(hub.connection_string, [str(next((extra / "reviews").glob("*.jsonl")))], partitions=2,
                        progress=False)
        stored = hub.partition_sizes()           # the endpoint's own count of the events in each partition
        assert stats.sent > 0 and stored == stats.per_partition and min(stored.values()) > MAX_RECORDS
        cmd = [sys.executable, "-m", "beam_pipeline", "--source=eventhub", f"--output={site['out']}",
               f"--products={site['data']}/metadata/*.jsonl", "--start_position=earliest", "--stop_after_idle_s=2",
               f"--max_records={MAX_RECORDS}", "--window_size=30d", "--max_out_of_orderness=3650d"]
        r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                                "EVENTHUB_CONNECTION_STRING": hub.connection_string})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        hub.stop()
    after = len(read(site["out"], "silver/reviews"))
    assert after > before
    wait_until(lambda: kpi(d, "reviews") == after, 20, 0.2)   # the page polls the event log
    assert kpi(d, "reviews") == after
    open_page(d, site, "health")
    assert js(d, "return document.getElementById('watermark') ? document.getElementById('watermark').textContent : ''")
    # per partition: read from the start, MAX_RECORDS events each; the rest is the lag in events
    shown = js(d, "return Array.from(document.querySelectorAll('#partitions tbody tr'))"
                  ".map(tr => Array.from(tr.children).slice(0, 4).map(td => td.dataset.value))")
    assert shown == [[pid, str(MAX_RECORDS - 1), str(n - 1), str(n - MAX_RECORDS)] for pid, n in sorted(stored.items())]
    assert js(d, "return document.getElementById('lag-events').textContent") == \
        f"{sum(n - MAX_RECORDS for n in stored.values()):,}"
    d.save_screenshot(str(site["shots"] / "health-after-stream.png"))
    assert console_errors(d) == []


def test_freshness_of_a_streaming_commit():
    """The freshness block from a streaming run's event-log row (positions per partition, watermarks, and
    the lag in events the commit recorded)."""
    from beam_pipeline.dashboard import data

    class Empty:
        def table_version(self, rel):
            return None
    now = 1_700_000_000
    at = datetime.datetime.fromtimestamp(now - 30, UTC)
    events = [{"event": "committed", "checkpoint_key": "reviews/$Default", "run_id": "r1", "at": at,
               "positions": json.dumps({"0": {"sequence_number": 41, "watermark_s": now - 100},
                                        "1": {"sequence_number": 7, "watermark_s": now - 400}}),
               "summary": json.dumps({"eventhub": {"partitions": {
                   "0": {"consumed_sequence_number": 41, "hub_last_sequence_number": 41, "lag_events": 0,
                         "hub_last_enqueued_time_s": now - 5},
                   "1": {"consumed_sequence_number": 7, "hub_last_sequence_number": 19, "lag_events": 12,
                         "hub_last_enqueued_time_s": now - 6}}}})}]
    f = data.freshness(Empty(), events, now)
    s = f["stream"]
    assert s["watermark_lag_s"] == 400 and s["commit_age_s"] == pytest.approx(30) and s["lag_events"] == 12
    assert [(p["partition"], p["sequence_number"], p["hub_last_sequence_number"], p["lag_events"], p["lag_s"])
            for p in s["partitions"]] == [("0", 41, 41, 0, 100), ("1", 7, 19, 12, 400)]
    # an older commit without the hub's ends: positions only, lag in events unknown
    older = [dict(events[0], summary=None)]
    s = data.freshness(Empty(), older, now)["stream"]
    assert s["lag_events"] is None and [p["lag_events"] for p in s["partitions"]] == [None, None]
    assert data.freshness(Empty(), [], now)["stream"]["kind"] == "missing"


def test_cli_refuses_a_root_without_tables(tmp_path):
    r = subprocess.run([sys.executable, "-m", "beam_pipeline.dashboard", f"--output={tmp_path}", "--port", "0"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 2
    assert "no Delta tables of the job here" in r.stderr and "make run" in r.stderr
