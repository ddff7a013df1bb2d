"""End to end over the real Amazon reviews in ../shared/data/amazon (skipped where absent): every line
of every file is accounted for, and the 2014-schema files map onto silver instead of dying."""
from __future__ import annotations

import collections
import gzip
import json
import pytest

from beam_pipeline.pipeline import run
from tests.e2e import _outputs as out

pytestmark = pytest.mark.e2e

def _records(path):
    """(line number, parsed object) of every non-blank line of a gzipped JSON-lines file."""
    with gzip.open(path, "rb") as fh:
        for i, line in enumerate(fh.read().split(b"\n"), 1):
            if line.strip():
                yield i, json.loads(line)


@pytest.fixture(scope="module")
def real_run(shared_data_dir, tmp_path_factory):
    reviews = sorted(str(p) for p in (shared_data_dir / "reviews").glob("*.jsonl.gz"))
    metadata = sorted(str(p) for p in (shared_data_dir / "metadata").glob("*.jsonl.gz"))
    assert reviews and metadata
    output = tmp_path_factory.mktemp("real_out")
    summary = run(["--runner=FnApiRunner", "--source=files",
                   f"--reviews={shared_data_dir / 'reviews' / '*.jsonl.gz'}",
                   f"--products={shared_data_dir / 'metadata' / '*.jsonl.gz'}",
                   f"--output={output}", "--run_id=real"])
    raw_reviews = {p: dict(_records(p)) for p in reviews}
    raw_products = {p: dict(_records(p)) for p in metadata}
    return summary, output, raw_reviews, raw_products


@pytest.fixture(scope="module")
def silver_rows(real_run):
    return out.silver_reviews(real_run[1]).to_pylist()


def test_every_line_is_accounted_for(real_run):
    summary, output, raw_reviews, raw_products = real_run
    letters = out.dead_letters(output)
    for reason, n in collections.Counter(f"{d['record_type']}:{d['stage']}.{d['reason']}" for d in letters).items():
        print(f"dead letter {reason}: {n}")
    for kind, raw in (("reviews", raw_reviews), ("products", raw_products)):
        s = summary[kind]
        assert s["files_read"] == len(raw)
        assert s["records_read"] == sum(len(v) for v in raw.values())
        assert s["records_read"] == s["silver_rows"] + s["dead_letters"] + s["duplicates_dropped"]
        assert s["reconciled"] is True
    stored = out.run_summary(output)
    assert stored == {k: v for k, v in summary.items() if k not in ("table_versions", "commit_seconds")}
    rows = out.silver_reviews(output)
    assert rows.num_rows == summary["reviews"]["silver_rows"]
    assert out.silver_products(output).num_rows == summary["products"]["silver_rows"]
    assert len(letters) == summary["reviews"]["dead_letters"] + summary["products"]["dead_letters"]
    assert not out.staged_files(output)


def test_no_dead_letters_for_well_formed_real_lines(real_run):
    """Every real line is a JSON object with a reviewer, an asin, a rating in 1..5 and a review time
    (checked here with json), so none of them may be a dead letter."""
    summary, output, raw_reviews, raw_products = real_run
    for recs in raw_reviews.values():
        for obj in recs.values():
            assert obj.get("reviewerID") and obj.get("asin") and obj.get("unixReviewTime") is not None
            assert 1 <= float(obj["overall"]) <= 5
    for recs in raw_products.values():
        assert all(isinstance(o.get("asin"), str) and o["asin"].strip() for o in recs.values())
    letters = out.dead_letters(output)
    detail = [(d["record_type"], d["stage"], d["reason"], d["detail"], d["source"], d["source_position"])
              for d in letters[:20]]
    assert not letters, f"{len(letters)} dead letters for well-formed real lines, e.g. {detail}"
    assert summary["reviews"]["dead_letters"] == summary["products"]["dead_letters"] == 0


def test_duplicates_are_exactly_the_repeated_content_keys(real_run, silver_rows):
    """Silver holds one row per distinct (reviewer, asin, time, text) content key (the text being the
    review text, or the summary where the text is missing), and nothing else."""
    summary, output, raw_reviews, _ = real_run
    keys = set()
    for recs in raw_reviews.values():
        for obj in recs.values():
            text = obj.get("reviewText") if obj.get("reviewText") is not None else obj.get("summary")
            keys.add((obj["reviewerID"], obj["asin"], int(obj["unixReviewTime"]), text))
    rows = silver_rows
    out.check_no_duplicate_content_keys(rows)
    assert len(rows) == len(keys)
    assert summary["reviews"]["duplicates_dropped"] == sum(len(v) for v in raw_reviews.values()) - len(keys)
    # the copy kept for each key follows the survivor rule (transforms/enrich.py): most helpful votes,
    # then a digest of the other fields; copies equal in every field keep the first by (source, line)
    copies = {}
    for path in sorted(raw_reviews):
        for pos in sorted(raw_reviews[path]):
            obj = raw_reviews[path][pos]
            text = obj.get("reviewText") if obj.get("reviewText") is not None else obj.get("summary")
            key = (obj["reviewerID"], obj["asin"], int(obj["unixReviewTime"]), text)
            copies.setdefault(key, []).append((_raw_votes(obj), path, pos, obj))
    kept = {(r["source"], r["source_position"]) for r in rows}
    n_decided_by_votes = 0
    for key, group in copies.items():
        top = max(g[0] for g in group)
        best = [g for g in group if g[0] == top]
        allowed = {(g[1], g[2]) for g in best}
        if len({json.dumps(g[3], sort_keys=True) for g in best}) == 1:
            allowed = {(best[0][1], best[0][2])}           # identical copies: the first by (source, line)
        n_decided_by_votes += len(best) == 1 and len(group) > 1
        survivors = kept & {(g[1], g[2]) for g in group}
        assert len(survivors) == 1 and survivors <= allowed, (key, sorted(survivors), sorted(allowed))
    print(f"{sum(len(g) > 1 for g in copies.values()):,} content keys with copies, "
          f"{n_decided_by_votes:,} of them decided by votes")


def _raw_votes(obj):
    """Helpful votes of a raw record as the survivor rule sees them: 2018 ``vote`` "1,234", 2014
    ``helpful`` [votes, total], 0 when neither is there, -1 when ``vote`` is not a number."""
    if obj.get("vote") is not None:
        digits = str(obj["vote"]).replace(",", "").strip()
        return int(digits) if digits.isdigit() else -1
    helpful = obj.get("helpful")
    return int(helpful[0]) if helpful else 0


def _is_2014(obj):
    """The 2014 review schema, told by its fields (never by file name): ``helpful`` [helpful, total]
    and none of the 2018 fields ``vote``, ``verified``, ``style``, ``image``."""
    return "helpful" in obj and not {"vote", "verified", "style", "image"} & set(obj)


def test_2014_schema_records_map_onto_silver(real_run, silver_rows):
    """Every silver row of a 2014-schema record carries that record's values, with the 2018-only
    columns null; rows of 2018-schema records keep their own verified flag. Which records are which
    is read off the raw records' fields."""
    summary, output, raw_reviews, _ = real_run
    n_2014 = n_2018 = 0
    for r in silver_rows:
        obj = raw_reviews[r["source"]][r["source_position"]]
        assert r["overall"] == obj["overall"] and r["reviewer_id"] == obj["reviewerID"]
        assert r["unix_review_time"] == obj["unixReviewTime"]
        if _is_2014(obj):
            n_2014 += 1
            assert r["verified"] is None
            assert r["vote"] == obj["helpful"][0]
            assert r["style"] is None and r["image_urls"] is None and r["image_count"] == 0
        else:
            n_2018 += 1
            assert r["verified"] == obj.get("verified")
    raw_2014 = sum(1 for recs in raw_reviews.values() for o in recs.values() if _is_2014(o))
    print(f"silver rows from 2014-schema records: {n_2014:,} of {raw_2014:,} such records; 2018: {n_2018:,}")
    assert n_2014 > 0 and n_2018 > 0      # the shared folder mixes both schemas
    # every 2014-schema record is in silver unless it repeats another record's content key
    dups_2014 = raw_2014 - n_2014
    assert 0 <= dups_2014 <= summary["reviews"]["duplicates_dropped"]


def test_products_join_on_real_metadata(real_run, silver_rows):
    summary, output, _, raw_products = real_run
    rows = silver_rows
    asins = {o["asin"].strip() for recs in raw_products.values() for o in recs.values()}
    products = out.silver_products(output).to_pylist()
    assert {p["asin"] for p in products} == asins
    matched = sum(1 for r in rows if r["asin"] in asins)
    assert matched == summary["reviews"]["products_matched"]
    assert len(rows) - matched == summary["reviews"]["products_unmatched"]
    assert matched > 0


def test_gold_on_real_data(real_run, silver_rows):
    _, output, _, _ = real_run
    rows = silver_rows
    out.check_gold(output, rows, out.silver_products(output).to_pylist(), 10)
    out.check_silver_layout(output, rows)
    out.check_silver_schema(output)
