"""runners.generate: deterministic synthetic input whose manifest matches what an independent reader finds."""
import collections
import glob
import gzip
import hashlib
import json
import os
import subprocess
import sys

import orjson
import pytest

from runners import generate as G
from transforms import reasons as R

N = 2000
SEED = 7
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gen(path, **kw):
    kw.setdefault("reviews", N)
    kw.setdefault("seed", SEED)
    return G.generate(str(path), **kw)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    return out, _gen(out)


def _read(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _lines(out, sub):
    return [line for p in sorted(glob.glob(os.path.join(str(out), sub, "*"))) for line in _read(p)]


def _classify_review(line):
    """The job's rules, written independently: (reason or None, parsed object or None)."""
    if len(line) > G.MAX_RECORD_BYTES:
        return R.TOO_LARGE, None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return R.INVALID_UTF8, None
    if text.lstrip().startswith("<"):
        return R.HTML_PAYLOAD, None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return R.MALFORMED_JSON, None
    if not isinstance(obj, dict):
        return R.NOT_AN_OBJECT, None
    if isinstance(obj.get("reviewText"), (dict, list)) or isinstance(obj.get("image"), (int, float, dict)):
        return R.WRONG_TYPE, obj
    if not obj.get("asin"):
        return R.MISSING_ASIN, obj
    if not obj.get("reviewerID"):
        return R.MISSING_REVIEWER_ID, obj
    ov = obj.get("overall")
    if ov is None:
        return R.MISSING_OVERALL, obj
    try:
        ov = float(ov)
    except ValueError:
        return R.OVERALL_NOT_NUMERIC, obj
    if not 1.0 <= ov <= 5.0:
        return R.OVERALL_OUT_OF_RANGE, obj
    if obj.get("unixReviewTime") is None:
        return R.MISSING_REVIEW_TIME, obj
    return None, obj


def _review_kind(line, reason, obj):
    """The defect kind of one line, found from its content alone."""
    if reason == R.TOO_LARGE:
        return "huge_line"
    if reason in (R.INVALID_UTF8, R.HTML_PAYLOAD, R.NOT_AN_OBJECT, R.WRONG_TYPE):
        return {R.INVALID_UTF8: "invalid_utf8", R.HTML_PAYLOAD: "html_page", R.NOT_AN_OBJECT: "json_array",
                R.WRONG_TYPE: "wrong_type"}[reason]
    if reason == R.MALFORMED_JSON:
        return "truncated_json" if line.startswith(b"{") else "log_line"
    if reason == R.MISSING_ASIN:
        return "missing_asin"
    if reason == R.MISSING_REVIEWER_ID:
        return "missing_reviewer_id"
    if reason == R.MISSING_OVERALL:
        return "overall_null" if "overall" in obj else "overall_absent"
    if reason == R.OVERALL_NOT_NUMERIC:
        return "overall_not_numeric"
    if reason == R.OVERALL_OUT_OF_RANGE:
        return "overall_zero" if float(obj["overall"]) == 0.0 else "overall_out_of_range"
    if reason == R.MISSING_REVIEW_TIME:
        return "missing_review_time"
    found = []
    if "helpful" in obj:
        found.append("schema_2014")
    if isinstance(obj["overall"], str):
        found.append("overall_string")
    if "," in obj.get("vote", ""):
        found.append("vote_commas")
    if isinstance(obj.get("verified"), str):
        found.append("verified_string")
    if isinstance(obj.get("unixReviewTime"), str):
        found.append("review_time_string")
    if isinstance(obj.get("style"), str):
        found.append("style_string")
    if obj.get("reviewText") is None:
        found.append("review_text_null")
    elif "<" in obj["reviewText"] or "&" in obj["reviewText"]:
        found.append("html_text")
    if "88" in obj.get("image", []):
        found.append("image_corrupt")
    assert len(found) <= 1, (found, line[:300])
    return found[0] if found else None


def _classify_product(line):
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return R.MALFORMED_JSON, None
    if not obj.get("asin"):
        return R.MISSING_ASIN, obj
    return None, obj


def _product_kind(obj):
    found = []
    mc, price, brand, title = obj["main_cat"], obj["price"], obj["brand"], obj["title"]
    if mc.startswith("<img"):
        found.append("main_cat_img")
    elif mc == "":
        found.append("main_cat_empty")
    elif "&amp;" in mc:
        found.append("main_cat_amp")
    if " - " in price:
        found.append("price_range")
    elif price == "":
        found.append("price_empty")
    elif not price.startswith("$"):
        found.append("price_junk")
    elif "," in price:
        found.append("price_thousands")
    if brand == "":
        found.append("brand_empty")
    elif brand == "Unknown":
        found.append("brand_unknown")
    elif brand.startswith("Visit Amazon's"):
        found.append("brand_visit_page")
    elif brand.startswith("By\n"):
        found.append("brand_by_newline")
    if title.startswith("<span"):
        found.append("title_span")
    elif "&amp;" in title or "&trade;" in title:
        found.append("title_entities")
    if "</span></span></span>" in obj["category"]:
        found.append("category_sentinel")
    assert len(found) <= 1, found
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------------------


def test_layout_and_file_entries(plain):
    out, m = plain
    names = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(str(out), "*", "*")))
    assert names == sorted(m["files"])
    assert names == ["metadata/products-00000-of-00001.jsonl"] + [
        f"reviews/part-{k:05d}-of-00004.jsonl" for k in range(4)]
    for rel, info in m["files"].items():
        data = open(os.path.join(out, rel), "rb").read()
        assert info["bytes"] == len(data)
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["lines"] == data.count(b"\n")
    with open(os.path.join(out, "manifest.json")) as fh:
        assert json.load(fh) == m
    assert m["generator"] == "runners.generate" and m["seed"] == SEED
    assert m["options"] == {"reviews": N, "files": 4, "dirty_rate": 0.01, "duplicate_rate": 0.01, "gzip": False,
                            "products_missing_rate": 0.02}


def test_deterministic(tmp_path, plain):
    out, m = plain
    m2 = _gen(tmp_path / "again")
    assert m2 == m
    for rel in m["files"]:
        assert open(os.path.join(out, rel), "rb").read() == open(tmp_path / "again" / rel, "rb").read()
    # the same in a fresh process with another str hash seed
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(tmp_path / "proc"), "--reviews", str(N),
                    "--seed", str(SEED)], check=True, cwd=ROOT, env=env, capture_output=True)
    with open(tmp_path / "proc" / "manifest.json") as fh:
        assert json.load(fh)["files"] == m["files"]
    m3 = _gen(tmp_path / "other", seed=SEED + 1)
    assert all(m3["files"][k]["sha256"] != m["files"][k]["sha256"] for k in m["files"])


def test_counts_add_up(plain):
    _, m = plain
    for part in ("reviews", "products"):
        s = m[part]
        assert s["records_in"] == s["silver_rows"] + s["dead"] + s["duplicates"]
        assert s["dead"] == sum(s["dead_by_reason"].values())
    rv = m["reviews"]
    assert rv["records_in"] == N == sum(v["lines"] for k, v in m["files"].items() if k.startswith("reviews/"))
    assert m["products"]["records_in"] == m["files"]["metadata/products-00000-of-00001.jsonl"]["lines"]
    assert rv["matched_products"] + rv["unmatched_products"] == rv["silver_rows"]
    assert rv["unmatched_products"] > 0 and rv["matched_products"] > 0
    assert rv["dead"] == sum(rv["defects"][k] for k in G.REVIEW_DEAD_KINDS)
    assert set(rv["dead_by_reason"]) <= set(R.PARSE_REASONS + R.REVIEW_CLEAN_REASONS)
    assert set(m["products"]["dead_by_reason"]) == {R.MALFORMED_JSON, R.MISSING_ASIN}


def test_every_defect_kind_present(plain):
    _, m = plain
    assert set(m["reviews"]["defects"]) == set(G.REVIEW_KINDS)
    assert set(m["products"]["defects"]) == set(G.PRODUCT_KINDS)
    assert all(n >= 1 for n in m["reviews"]["defects"].values()), m["reviews"]["defects"]
    assert all(n >= 1 for n in m["products"]["defects"].values()), m["products"]["defects"]
    assert m["reviews"]["defects"]["huge_line"] == 1          # at most 1 per 100k rows, at least 1
    assert m["reviews"]["duplicates"] >= 1 and m["products"]["duplicates"] >= 1
    for kind, outcome in m["reviews"]["defect_outcomes"].items():
        if kind in G.REVIEW_DEAD_KINDS:
            stage, reason = G.REVIEW_DEAD_KINDS[kind]
            assert outcome == f"{stage}/{reason}"
            assert stage in (R.PARSE, R.CLEAN)
            assert reason in (R.PARSE_REASONS if stage == R.PARSE else R.REVIEW_CLEAN_REASONS)
        else:
            assert outcome == "silver"


def test_review_defects_match_an_independent_reading(plain):
    out, m = plain
    lines = _lines(out, "reviews")
    assert len(lines) == N and all(lines)
    reasons = collections.Counter()
    kinds = collections.Counter()
    good = []
    for line in lines:
        reason, obj = _classify_review(line)
        if reason:
            reasons[reason] += 1
            kinds[_review_kind(line, reason, obj)] += 1
        else:
            good.append((line, obj))
    rv = m["reviews"]
    assert dict(reasons) == rv["dead_by_reason"]
    assert sum(reasons.values()) == rv["dead"]
    # cleaned kinds: count each distinct good line once (duplicates are copies)
    distinct = {}
    for line, obj in good:
        distinct.setdefault(line, obj)
    for line, obj in distinct.items():
        kind = _review_kind(line, None, obj)
        if kind:
            kinds[kind] += 1
    assert dict(kinds) == {k: n for k, n in rv["defects"].items() if n}
    assert len(distinct) == rv["silver_rows"]
    assert len(good) - len(distinct) == rv["duplicates"]
    # the huge line is valid JSON, just too long
    huge = [line for line in lines if len(line) > G.MAX_RECORD_BYTES]
    assert len(huge) == rv["defects"]["huge_line"]
    assert all(isinstance(orjson.loads(line), dict) and len(line) < 1_300_000 for line in huge)


def test_duplicates_are_copies_of_good_lines_and_keys_are_unique(plain):
    out, m = plain
    lines = _lines(out, "reviews")
    counts = collections.Counter(lines)
    # dead lines may repeat by chance only for the fixed payloads (html pages, "[1, 2, 3]"), never JSON rows
    good_copies = sum(c - 1 for line, c in counts.items() if c > 1 and _classify_review(line)[0] is None)
    assert good_copies == m["reviews"]["duplicates"]
    keys = set()
    for line in counts:
        reason, obj = _classify_review(line)
        if reason is None:
            key = (obj["reviewerID"], obj["asin"], int(obj["unixReviewTime"]), obj.get("reviewText"))
            assert key not in keys
            keys.add(key)
    assert len(keys) == m["reviews"]["silver_rows"]


def test_products_match_an_independent_reading(plain):
    out, m = plain
    pr = m["products"]
    plines = _lines(out, "metadata")
    assert len(plines) == pr["records_in"]
    reasons = collections.Counter()
    kinds = collections.Counter()
    good = collections.Counter()
    by_asin = {}
    for line in plines:
        reason, obj = _classify_product(line)
        if reason:
            reasons[reason] += 1
            kinds["product_malformed" if reason == R.MALFORMED_JSON else "product_missing_asin"] += 1
            continue
        good[line] += 1
        by_asin.setdefault(obj["asin"], set()).add(line)
        assert set(obj) == {"asin", "title", "brand", "main_cat", "category", "price", "image", "rank", "date",
                            "also_buy", "description"}
    assert dict(reasons) == pr["dead_by_reason"]
    assert len(good) == pr["silver_rows"] == len(by_asin)          # one distinct line per asin
    assert sum(good.values()) - len(good) == pr["duplicates"]
    for line in good:
        kind = _product_kind(orjson.loads(line))
        if kind:
            kinds[kind] += 1
    assert dict(kinds) == {k: n for k, n in pr["defects"].items() if n}

    # the join: every product belongs to an asin of a good review; a few such asins have no product
    review_rows = {}
    for line in _lines(out, "reviews"):
        reason, obj = _classify_review(line)
        if reason is None:
            review_rows[line] = obj["asin"]
    review_asins = set(review_rows.values())
    assert set(by_asin) <= review_asins
    assert len(review_asins - set(by_asin)) == pr["asins_without_product"] >= 1
    matched = sum(1 for a in review_rows.values() if a in by_asin)
    assert matched == m["reviews"]["matched_products"]


def test_realistic_review_rows(plain):
    out, m = plain
    stars = collections.Counter()
    pos = {5: 0, 1: 0}
    n_rows = {5: 0, 1: 0}
    keys_seen = 0
    for line in set(_lines(out, "reviews")):
        reason, obj = _classify_review(line)
        if reason or "helpful" in obj:
            continue
        r = float(obj["overall"])
        stars[r] += 1
        assert obj["reviewerID"].startswith("A") and len(obj["reviewerID"]) == 14
        assert obj["asin"].startswith("B0") and len(obj["asin"]) == 10
        ts = int(obj["unixReviewTime"])
        assert ts % 86400 == 0 and 1262304000 <= ts < 1546300800
        if list(obj)[:5] == ["overall", "verified", "reviewTime", "reviewerID", "asin"]:
            keys_seen += 1
        if r in pos and obj.get("reviewText"):
            n_rows[r] += 1
            text = obj["reviewText"].lower()
            pos[r] += any(w in text for w in ("love", "great", "excellent", "perfect", "recommend it"))
    total = sum(stars.values())
    assert 0.5 < stars[5.0] / total < 0.7
    assert 0.03 < stars[1.0] / total < 0.14
    assert keys_seen > 0.95 * total
    # the text follows the rating
    assert pos[5] / n_rows[5] > 0.6 > 0.25 > pos[1] / n_rows[1]


def test_gzip_is_readable_and_same_content(tmp_path, plain):
    out, m = plain
    mg = _gen(tmp_path / "gz", gzip=True)
    assert all(k.endswith(".jsonl.gz") for k in mg["files"])
    for rel in mg["files"]:
        data = open(tmp_path / "gz" / rel, "rb").read()
        assert data[:2] == b"\x1f\x8b"
        assert hashlib.sha256(data).hexdigest() == mg["files"][rel]["sha256"]
        with gzip.open(tmp_path / "gz" / rel, "rb") as fh:
            assert fh.read() == open(os.path.join(out, rel[:-3]), "rb").read()
    for part in ("reviews", "products"):
        assert mg[part] == m[part]
    # deterministic gzip too (no name, no mtime in the header)
    mg2 = _gen(tmp_path / "gz2", gzip=True)
    assert mg2["files"] == mg["files"]


def test_stale_parts_are_replaced(tmp_path):
    _gen(tmp_path, reviews=1200, files=4)
    (tmp_path / "reviews" / "part-00009-of-00010.jsonl.gz").write_bytes(b"old")
    m = _gen(tmp_path, reviews=1200, files=2, gzip=True)
    assert sorted(os.listdir(tmp_path / "reviews")) == ["part-00000-of-00002.jsonl.gz",
                                                         "part-00001-of-00002.jsonl.gz"]
    assert sorted(os.listdir(tmp_path / "metadata")) == ["products-00000-of-00001.jsonl.gz"]
    assert len(m["files"]) == 3


def test_small_and_clean_runs(tmp_path):
    m = _gen(tmp_path / "clean", reviews=1500, dirty_rate=0.0, duplicate_rate=0.0, products_missing_rate=0.0)
    rv, pr = m["reviews"], m["products"]
    assert rv["dead"] == rv["duplicates"] == 0 and rv["silver_rows"] == 1500
    assert not any(rv["defects"].values()) and not any(pr["defects"].values())
    assert rv["unmatched_products"] == 0 and pr["records_in"] == pr["silver_rows"]
    m = _gen(tmp_path / "tiny", reviews=10, files=4)
    assert m["reviews"]["records_in"] == 10
    assert sum(v["lines"] for k, v in m["files"].items() if k.startswith("reviews/")) == 10


def test_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "runners.generate", "--help"], cwd=ROOT, capture_output=True,
                       text=True, check=True)
    for opt in ("--out", "--reviews", "--files", "--seed", "--dirty-rate", "--duplicate-rate", "--gzip",
                "--products-missing-rate"):
        assert opt in r.stdout
    r = subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(tmp_path), "--reviews", "1000",
                        "--files", "2", "--seed", "5", "--gzip"], cwd=ROOT, capture_output=True, text=True,
                       check=True)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    with open(tmp_path / "manifest.json") as fh:
        m = json.load(fh)
    assert summary["reviews"] == 1000 and summary["silver_rows"] == m["reviews"]["silver_rows"]
    assert m["seed"] == 5 and m["options"]["gzip"] is True and m["options"]["files"] == 2
    bad = subprocess.run([sys.executable, "-m", "runners.generate", "--out", str(tmp_path), "--reviews", "10",
                          "--dirty-rate", "1.5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
