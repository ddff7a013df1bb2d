"""A DoFn that overlaps its elements on a small thread pool, for Arrow-heavy work.

The in-process FnApiRunner runs a fused stage on one thread, and its multi-worker modes move every
element through gRPC (far too costly for Arrow batches). Arrow and numpy release the GIL, so running
``work(element)`` for two elements at once on a pool uses the second core. Results are emitted in
input order; at most ``in_flight`` elements are pending, which bounds the memory held; whatever is
pending when the bundle ends is emitted by ``finish_bundle`` with the timestamp and window of the
element it came from, so the same DoFns serve the windowed streaming graph.

``in_flight = 1`` makes a DoFn synchronous (no pool): streaming uses it, where holding elements
across a bundle buys little and latency matters.
"""
import collections
import os
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

THREADS = max(1, min(4, os.cpu_count() or 1))


class ThreadedDoFn(beam.DoFn):
    """Subclasses implement ``work(element) -> result`` (pure and thread-safe: it runs on the pool) and
    ``emit(result)``, a generator run on the bundle's thread (Beam metrics are thread-local, so counters
    are incremented there)."""

    in_flight = THREADS

    def setup(self):
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending = collections.deque()

    def work(self, element):
        raise NotImplementedError

    def emit(self, result):
        raise NotImplementedError

    def process(self, element, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if self.in_flight <= 1:
            yield from self.emit(self.work(element))
            return
        self._pending.append((self._pool.submit(self.work, element), timestamp, window))
        if len(self._pending) >= self.in_flight:
            yield from self.emit(self._pending.popleft()[0].result())

    def finish_bundle(self):
        while self._pending:
            future, timestamp, window = self._pending.popleft()
            for out in self.emit(future.result()):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, (window,)))
                else:
                    yield WindowedValue(out, timestamp, (window,))

    def teardown(self):
        self._pool.shutdown(wait=True)
