"""The proof that batch and stream are one graph: the same reviews through batch (files) and through the
stream (the local Event Hubs endpoint, real clients), event time = review time, published out of order
within the out-of-orderness bound, give identical silver rows and identical gold tables.

Generated reviews (with dirty rows and exact duplicates) gain near duplicates: copies of a review that
share its content key but differ in summary, helpful votes, verified or rating (as later crawls of the same
review do); which copy survives is a rule on the rows, so both modes keep the same one. They are sorted by
review time, shuffled within blocks of 25 events and published round robin over 4 partitions; ``--max_out_of_orderness`` is the widest
event-time span of a block, so no review is late. The batch job reads the very lines that were published.
Silver rows are compared on every column except the lineage (``source``, ``source_position``: a file line
in one, a partition and sequence number in the other); gold tables (Delta, current values) on every row
and column, all-time rows included; the stream's pane changelog's last pane per window equals the gold row.
"""
import collections
import glob
import json
import os

import orjson
import pyarrow as pa
import pytest

from beam_pipeline.pipeline import run
from runners.eventhubs_local import LocalEventHubs
from runners.generate import generate
from runners.publish import publish, shuffle_blocks
from transforms import gold
from transforms.parse import review_time_of

from tests.e2e import _outputs as out  # noqa: E402

pytestmark = pytest.mark.e2e

N_REVIEWS = 3000
BLOCK = 25
WINDOW = "30d"
LINEAGE = ("source", "source_position")
INSIGHT_OPTIONS = ("--trending_min_count=1", "--trending_days=5")   # small data: non-empty trending tables


N_NEAR = 40   # reviews that gain copies differing outside the content key


def _near_duplicates(lines, n, seed=5):
    """Copies of ``n`` well-formed reviews that keep the content key and change the other fields."""
    import random
    rng = random.Random(seed)
    base = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("reviewerID") and r.get("asin") and r.get("reviewText") \
                and isinstance(r.get("unixReviewTime"), int) and r.get("overall") in (1.0, 2.0, 3.0, 4.0, 5.0):
            base.append(r)
    copies = []
    for r in rng.sample(base, n):
        for k in range(rng.randint(1, 3)):
            c = dict(r, summary=f"{r.get('summary', '')} (crawl {k})")
            if k % 2 == 0:
                c["vote"] = str(rng.randint(0, 9))
            c["verified"] = not r.get("verified", False) if k == 1 else r.get("verified", False)
            c["overall"] = float(rng.randint(1, 5)) if k == 2 else r["overall"]
            copies.append(json.dumps(c).encode())
    return copies


def _ordered_lines(data):
    lines = []
    for path in sorted(glob.glob(os.path.join(data, "reviews", "*.jsonl"))):
        with open(path, "rb") as fh:
            lines += [line.rstrip(b"\r\n") for line in fh if line.strip()]
    lines = [line for line in lines if len(line) < 1_000_000]  # an event is at most 1 MiB
    lines += _near_duplicates(lines, N_NEAR)
    # by review time (lines without one keep their relative place at the front), then out of order in blocks
    lines.sort(key=lambda line: review_time_of(line) or 0)
    return list(shuffle_blocks(lines, BLOCK, seed=3))


def _block_span(lines):
    span = 0
    for i in range(0, len(lines), BLOCK):
        times = [t for t in (review_time_of(line) for line in lines[i:i + BLOCK]) if t is not None]
        if times:
            span = max(span, max(times) - min(times))
    return span


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("equivalence")
    data = root / "data"
    generate(str(data), N_REVIEWS, files=2, seed=11)
    lines = _ordered_lines(str(data))
    published = root / "published.jsonl"
    published.write_bytes(b"\n".join(lines) + b"\n")
    ooo = _block_span(lines) + 1
    products = os.path.join(data, "metadata", "*.jsonl")

    batch_out = str(root / "batch")
    batch = run(["--runner=FnApiRunner", "--source=files", f"--reviews={published}", f"--products={products}",
                 f"--output={batch_out}", f"--window_size={WINDOW}", "--run_id=batch", *INSIGHT_OPTIONS])

    hub = LocalEventHubs(root / "hub", partitions=4, fsync=False).start()
    try:
        stats = publish(hub.connection_string, [str(published)], partitions=4, progress=False)
        assert stats.sent == len(lines)
        os.environ["EVENTHUB_CONNECTION_STRING"] = hub.connection_string
        stream_out = str(root / "stream")
        stream = run(["--runner=FnApiRunner", "--source=eventhub", f"--products={products}",
                      f"--output={stream_out}", f"--window_size={WINDOW}", f"--max_out_of_orderness={ooo}s",
                      "--start_position=earliest", "--stop_after_idle_s=2", "--run_id=stream", *INSIGHT_OPTIONS])
    finally:
        os.environ.pop("EVENTHUB_CONNECTION_STRING", None)
        hub.stop()
    return {"lines": lines, "batch": (batch_out, batch), "stream": (stream_out, stream), "hub_root": root / "hub",
            "products": products, "ooo": ooo}


def _silver(root):
    table = out.silver_reviews(root)
    rows = [{k: v for k, v in r.items() if k not in LINEAGE} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS))


def _gold(root, family):
    return out.gold(root, family)


def _last_panes(root, family):
    """The changelog's last pane of each window (the pane a watcher of the stream saw last)."""
    t = out.table(root, f"gold_changelog/{family}")
    last = {}
    for r in t.to_pylist():
        key = r["window_start"]
        if key not in last or r["pane_index"] > last[key][0]["pane_index"]:
            last[key] = [r]
        elif r["pane_index"] == last[key][0]["pane_index"]:
            last[key].append(r)
    rows = [r for group in last.values() for r in group]
    return pa.Table.from_pylist(rows, schema=t.schema).drop_columns(["pane_index", "pane_timing", "pane_is_last",
                                                                     "run_id"])


def _rows(table, family):
    order = [(c, "ascending") for c in ("window_start",) + family.keys]
    if "rank" in table.column_names:
        order = [("window_start", "ascending"), ("rank", "ascending")]
    return table.sort_by(order).to_pylist()


def test_same_counts(both):
    _, b = both["batch"]
    _, s = both["stream"]
    n = len(both["lines"])
    assert b["reviews"]["records_read"] == s["reviews"]["records_read"] == s["eventhub"]["events_read"] == n
    for key in ("silver_rows", "dead_letters", "duplicates_dropped", "dead_letters_by_reason", "products_matched"):
        assert b["reviews"][key] == s["reviews"][key], key
    assert s["reviews"]["reconciled"] and b["reviews"]["reconciled"]
    assert "window.too_late" not in s["reviews"]["dead_letters_by_reason"]


def test_identical_silver_rows(both):
    b, s = _silver(both["batch"][0]), _silver(both["stream"][0])
    assert len(b) == both["batch"][1]["reviews"]["silver_rows"] > 2500
    assert b == s


def _near_groups(lines):
    """Content key -> every copy (parsed line) of the reviews that gained near duplicates."""
    groups = {}
    parsed = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict):
            continue
        key = (r.get("reviewerID"), r.get("asin"), r.get("unixReviewTime"), r.get("reviewText"))
        if all(isinstance(k, (str, int)) for k in key):
            parsed.append((key, r))
            if "(crawl " in str(r.get("summary")):
                groups[key] = []
    for key, r in parsed:
        if key in groups:
            groups[key].append(r)
    return groups


def test_near_duplicates_keep_the_copy_with_most_votes_in_both_modes(both):
    """Of the copies that differ outside the content key, one survives, and it is one with the most votes."""
    groups = _near_groups(both["lines"])
    assert len(groups) == N_NEAR and all(len(g) >= 2 for g in groups.values())
    assert sum(len({c.get("summary") for c in g}) > 1 for g in groups.values()) == N_NEAR
    for mode in ("batch", "stream"):
        silver = out.silver_reviews(both[mode][0]).to_pylist()
        kept = collections.defaultdict(list)
        for r in silver:
            key = (r["reviewer_id"], r["asin"], r["unix_review_time"], r["review_text"])
            if key in groups:
                kept[key].append(r)
        assert set(kept) == set(groups)
        for key, copies in groups.items():
            assert len(kept[key]) == 1, (mode, key)
            most = max(int(c["vote"]) if c.get("vote") is not None else -1 for c in copies)
            survivor = kept[key][0]
            assert (survivor["vote"] if survivor["vote"] is not None else -1) == most
            assert survivor["summary"] in {c.get("summary") for c in copies}


@pytest.mark.parametrize("family", [f for f in gold.FAMILIES if f.source == "reviews"], ids=lambda f: f.name)
def test_identical_gold_tables(both, family):
    b = _gold(both["batch"][0], family.name)
    s = _gold(both["stream"][0], family.name).select(b.column_names)
    assert b.num_rows > 10
    assert _rows(b, family) == _rows(s, family)


@pytest.mark.parametrize("family", [f for f in gold.FAMILIES if f.source == "reviews" and f.windowed],
                         ids=lambda f: f.name)
def test_changelog_last_pane_is_the_gold_row(both, family):
    """Except in windows where a later copy replaced one an earlier pane counted: the changelog is the
    panes as they fired (a fired pane is history), gold the current value (docs/tables.md)."""
    g = _gold(both["stream"][0], family.name)
    g = g.filter(g["window_start"].is_valid())
    last = _last_panes(both["stream"][0], family.name).select(g.column_names)
    times = {t for _, _, t, _ in _near_groups(both["lines"])}
    size = 30 * 86400

    def untouched(rows):
        return [r for r in rows if not any(out.epoch(r["window_start"]) <= t < out.epoch(r["window_start"]) + size
                                           for t in times)]
    g_rows, last_rows = untouched(_rows(g, family)), untouched(_rows(last, family))
    assert len(g_rows) > 10
    assert g_rows == last_rows


INSIGHT_TABLES = ("insights/trending_products", "insights/trending_brands", "insights/trending_main_cats",
                  "insights/recent_brands", "gold/distinct_counts")


def test_new_gold_families_are_compared():
    """Every insight family that reads reviews is among the families the tests above compare."""
    names = {f.name for f in gold.FAMILIES if f.source == "reviews"}
    assert {f.name for f in gold.INSIGHT_FAMILIES if f.source == "reviews"} <= names
    assert set(gold.DERIVED) == {"distinct_counts"}


@pytest.mark.parametrize("rel", INSIGHT_TABLES)
def test_identical_insight_tables(both, rel):
    """Trending tables (from the merged daily state), distinct counts (from the top_reviewers and
    reviews_by_main_cat state) and recent brands (from the new silver rows) are the same in both modes."""
    b = out.table(both["batch"][0], rel)
    s = out.table(both["stream"][0], rel).select(b.column_names)
    assert b.num_rows > 0
    assert sorted(map(repr, b.to_pylist())) == sorted(map(repr, s.to_pylist()))


def test_dead_letters_carry_partition_and_sequence_number(both):
    letters = [d for d in out.dead_letters(both["stream"][0]) if d["record_type"] == "review"]
    assert len(letters) == both["stream"][1]["reviews"]["dead_letters"]
    by_partition = collections.Counter(d["source"] for d in letters)
    assert set(by_partition) <= {f"eventhub:reviews/{p}" for p in "0123"}
    lines = both["lines"]
    for d in letters:  # event i went to partition i % 4 as that partition's sequence number i // 4
        partition = int(d["source"].rsplit("/", 1)[1])
        line = lines[d["source_position"] * 4 + partition]
        assert d["payload_bytes"] == len(line)
        assert d["payload"] == line[:4096].decode("utf-8", "backslashreplace")


def test_checkpoint_is_in_the_event_log(both):
    """The stream's commit row holds every partition's last sequence number: 4 partitions, round robin."""
    from beam_pipeline import tables
    root, summary = both["stream"]
    n = len(both["lines"])
    stored = tables.checkpoint(tables.Location(root), summary["eventhub"]["checkpoint_key"])
    assert {p: v["sequence_number"] for p, v in stored.items()} == \
        {str(p): (n - 1 - p) // 4 for p in range(4) if n > p}
    assert stored == summary["eventhub"]["checkpoint"]


def test_a_second_stream_run_over_the_same_events_adds_nothing(both, tmp_path):
    """Read again from the earliest event (as after a lost checkpoint): every review is already in silver,
    so each is a counted duplicate, and silver and gold are unchanged."""
    root, first = both["stream"]
    hub = both["hub_root"]
    before = _silver(root), {f: _rows(_gold(root, f.name), f) for f in gold.FAMILIES if f.source == "reviews"}
    h = LocalEventHubs(hub, partitions=4, fsync=False).start()
    try:
        os.environ["EVENTHUB_CONNECTION_STRING"] = h.connection_string
        again = run(["--runner=FnApiRunner", "--source=eventhub", f"--products={both['products']}",
                     f"--output={root}", f"--window_size={WINDOW}", f"--max_out_of_orderness={both['ooo']}s",
                     "--start_position=earliest", "--stop_after_idle_s=2", "--run_id=again"])
    finally:
        os.environ.pop("EVENTHUB_CONNECTION_STRING", None)
        h.stop()
    assert again["reviews"]["silver_rows"] == 0
    assert again["reviews"]["duplicates_dropped"] == first["reviews"]["silver_rows"] + first["reviews"]["duplicates_dropped"]
    assert again["reviews"]["reconciled"]
    after = _silver(root), {f: _rows(_gold(root, f.name), f) for f in gold.FAMILIES if f.source == "reviews"}
    assert after == before
