"""The proof that batch and stream are one graph: the same reviews through batch (files) and through the
stream (the local Event Hubs endpoint, real clients), event time = review time, published out of order
within the out-of-orderness bound, give identical silver rows and identical gold values per window.

Generated reviews (with dirty rows and exact duplicates) are sorted by review time, shuffled within blocks
of 25 events and published round robin over 4 partitions; ``--max_out_of_orderness`` is the widest
event-time span of a block, so no review is late. The batch job reads the very lines that were published.
Silver rows are compared on every column except the lineage (``source``, ``source_position``: a file line
in one, a partition and sequence number in the other); gold on every column of the windowed rows, taking
the stream's last pane per window.
"""
import collections
import glob
import json
import os

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
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


def _ordered_lines(data):
    lines = []
    for path in sorted(glob.glob(os.path.join(data, "reviews", "*.jsonl"))):
        with open(path, "rb") as fh:
            lines += [line.rstrip(b"\r\n") for line in fh if line.strip()]
    lines = [line for line in lines if len(line) < 1_000_000]  # an event is at most 1 MiB
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
                 f"--output={batch_out}", f"--window_size={WINDOW}", "--run_id=batch"])

    hub = LocalEventHubs(root / "hub", partitions=4, fsync=False).start()
    try:
        stats = publish(hub.connection_string, [str(published)], partitions=4, progress=False)
        assert stats.sent == len(lines)
        os.environ["EVENTHUB_CONNECTION_STRING"] = hub.connection_string
        stream_out = str(root / "stream")
        stream = run(["--runner=FnApiRunner", "--source=eventhub", f"--products={products}",
                      f"--output={stream_out}", f"--window_size={WINDOW}", f"--max_out_of_orderness={ooo}s",
                      "--start_position=earliest", "--stop_after_idle_s=2", "--run_id=stream"])
    finally:
        os.environ.pop("EVENTHUB_CONNECTION_STRING", None)
        hub.stop()
    return {"lines": lines, "batch": (batch_out, batch), "stream": (stream_out, stream)}


def _silver(root):
    table = out.silver_reviews(root)  # batch: the Delta table; stream: hive-partitioned Parquet
    rows = [{k: v for k, v in r.items() if k not in LINEAGE} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS))


def _batch_gold(root, family):
    t = out.gold(root, family)
    return t.filter(t["window_start"].is_valid())


def _stream_gold(root, family):
    tables = [pq.read_table(f) for f in glob.glob(os.path.join(root, "gold", family, "*.parquet"))]
    last = {}
    for t in tables:  # the last pane of each window is its value
        key, pane = t["window_start"][0].as_py(), t["pane_index"][0].as_py()
        if key not in last or pane > last[key][0]:
            last[key] = (pane, t)
    return pa.concat_tables([t.drop_columns(["pane_index", "pane_timing", "pane_is_last", "run_id"])
                            for _, t in last.values()])


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


@pytest.mark.parametrize("family", [f for f in gold.FAMILIES if f.source == "reviews"], ids=lambda f: f.name)
def test_identical_gold_per_window(both, family):
    b = _batch_gold(both["batch"][0], family.name)
    s = _stream_gold(both["stream"][0], family.name).select(b.column_names)
    assert b.num_rows > 10
    assert _rows(b, family) == _rows(s, family)


def test_each_stream_gold_file_holds_one_window(both):
    root = both["stream"][0]
    files = glob.glob(os.path.join(root, "gold", "*", "*.parquet"))
    assert files
    for f in files:
        assert pq.read_table(f, columns=["window_start"])["window_start"].unique().to_pylist().__len__() == 1, f


def test_dead_letters_carry_partition_and_sequence_number(both):
    letters = []
    for path in glob.glob(os.path.join(both["stream"][0], "dead_letters", "reviews-*.jsonl")):
        with open(path, "rb") as fh:
            letters += [json.loads(line) for line in fh if line.strip()]
    assert len(letters) == both["stream"][1]["reviews"]["dead_letters"]
    by_partition = collections.Counter(d["source"] for d in letters)
    assert set(by_partition) <= {f"eventhub:reviews/{p}" for p in "0123"}
    lines = both["lines"]
    for d in letters:  # event i went to partition i % 4 as that partition's sequence number i // 4
        partition = int(d["source"].rsplit("/", 1)[1])
        line = lines[d["source_position"] * 4 + partition]
        assert d["payload_bytes"] == len(line)
        assert d["payload"] == line[:4096].decode("utf-8", "backslashreplace")


def test_known_reviews_loader_reads_the_batch_silver(both):
    """The --known_reviews loader over the batch silver: one hash per silver row, and every review the
    stream wrote is among them (so a rerun with --known_reviews would count them all as duplicates)."""
    import numpy as np
    from beam_pipeline.streaming import LoadKnownReviewsFn, content_hashes
    batch_root, batch = both["batch"]
    known = dict(LoadKnownReviewsFn(8).process(os.path.join(batch_root, "silver", "reviews")))
    assert sum(len(v) for v in known.values()) == batch["reviews"]["silver_rows"]
    stream_silver = ds.dataset(os.path.join(both["stream"][0], "silver", "reviews"), format="parquet",
                               partitioning="hive").to_table()
    hashes = content_hashes(stream_silver)
    assert np.isin(hashes, np.concatenate(list(known.values()))).all()
