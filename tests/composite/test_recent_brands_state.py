"""The speed layer (``beam_pipeline.streaming.RecentBrandsFn``) under TestStream: events of several
reviewers arrive out of event-time order, in separate bundles with the watermark moving between them;
the last list each reviewer's state emits equals the rule over all of that reviewer's events
(``transforms.recent_brands.recent_list``), whatever the arrival order."""
import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger
from apache_beam.transforms.window import GlobalWindows

from beam_pipeline.streaming import RecentBrandsFn
from transforms.recent_brands import recent_list

N = 3


def _events(seed):
    rng = random.Random(seed)
    out = []
    for reviewer in ("r1", "r2", "r3"):
        for _ in range(12):
            out.append((reviewer, (rng.randrange(1_000, 1_040), rng.choice("ABCDEFG"))))
    out.append(("r1", (5_000, "Z")))       # the newest brand of r1 arrives first (below: shuffled)
    out.append(("r1", (10, "Z")))          # ... and an older review of the same brand later
    out.append(("r2", (1_020, "")))        # no brand: skipped
    rng.shuffle(out)
    return out


def _run(events):
    stream = TestStream()
    for i in range(0, len(events), 7):    # bundles, the watermark moving between them
        stream = stream.add_elements([(r, [e]) for r, e in events[i:i + 7]]).advance_watermark_to(i + 1)
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"])) as p:
        emitted = (p
                   | stream
                   | "Global" >> beam.WindowInto(GlobalWindows())
                   | "RecentBrands" >> beam.ParDo(RecentBrandsFn(N))
                   | "Tuples" >> beam.Map(lambda kv: (kv[0], [tuple(x) for x in kv[1]]))
                   | "AtTheEnd" >> beam.WindowInto(GlobalWindows(), trigger=trigger.AfterWatermark(),
                                     accumulation_mode=trigger.AccumulationMode.DISCARDING)
                   | "ByReviewer" >> beam.GroupByKey())
        expected = {}
        for r, e in events:
            expected.setdefault(r, []).append(e)
        # the state's final list (the rule over all of the reviewer's events) is among what it emitted, and
        # nothing it emitted is longer than N: without state, each emission would cover one event only
        got = emitted | "Check" >> beam.MapTuple(lambda r, lists: (r, recent_list(expected[r], N) in lists,
                                                        max(len(x) for x in lists) <= N))
        assert_that(got, equal_to([(r, True, True) for r in expected]))


def test_state_keeps_the_last_n_brands_by_event_time_under_out_of_order_arrival():
    events = _events(1)
    assert recent_list([e for r, e in events if r == "r1"], N)[0] == (5_000, "Z")
    _run(events)


def test_another_arrival_order_gives_the_same_lists():
    _run(list(reversed(_events(1))))
