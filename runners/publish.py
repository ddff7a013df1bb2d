"""Replay review JSON-lines files into an Azure Event Hub (or the local stand-in), one event per line.

Every non-blank line of the input files becomes one event whose body is the line's raw bytes, exactly
(no decoding: lines that are not UTF-8 arrive byte for byte; only the line end ``\\n`` / ``\\r\\n`` is
removed). Blank (whitespace-only) lines are skipped and counted, as the batch job does not count them as
records either. Inputs are plain or gzip files (recognised by their magic bytes), or glob patterns.

Python API::

    from runners.publish import publish, iter_events

    stats = publish(conn_str, ["data/reviews/part-0.json.gz"], rate=500, partitions=4, shuffle_window=100)
    print(stats.sent, stats.per_partition)          # PublishStats: the summary fields below
    for body in iter_events(["data/reviews/part-0.json.gz"]):   # the raw bytes that would be sent
        ...

CLI (``--help`` explains every option)::

    python -m runners.eventhubs_local serve --data-dir .local/eventhubs      # prints a connection string
    export EVENTHUB_CONNECTION_STRING='Endpoint=sb://127.0.0.1:5674;...;UseDevelopmentEmulator=true;EntityPath=reviews'
    python -m runners.publish --rate 200/s --partitions 4 data/reviews/*.json.gz

Routing: by default events go round robin over the partition ids "0".."P-1" (event i, counted in
publishing order, to partition ``str(i % P)``; P is ``--partitions`` or all of the hub's partitions), sent
with an explicit ``partition_id``. With ``--partition-key-field FIELD`` a line whose JSON object has that
field (a string or a number) is sent with it as the partition key, so the service picks the partition
(the same key always lands on the same partition); lines without it (not JSON, field absent, null or
another type) go round robin as above. Event Hubs requires one key per batch, so keyed publishing sends
one batch per distinct key among the events of a send round and is much slower with many distinct keys.

Order: ``--shuffle-window W`` shuffles the events within consecutive blocks of W events (seeded,
deterministic), to replay reviews out of order within a known bound. ``--limit`` takes the first N
events in file order before shuffling.

Rate: a token bucket (starting empty, burst of about a tenth of a second) keeps the long-run average at
``--rate`` events/s; the publisher sleeps between send rounds. ``--rate 0`` sends as fast as possible.

Sizes: at most ``--batch-size`` events per ``send_batch``; a batch is also closed when the next event no
longer fits the link's maximum message size (``EventDataBatch.add`` raises ValueError). A single event
larger than that maximum (1 MiB on the local endpoint and Event Hubs Standard) is reported on stderr and
counted as ``rejected``; publishing goes on.

Secrets: the connection string is read from an environment variable only (never an argument, which
``ps`` would show) and never printed or logged; only the endpoint host and the hub name are.

Summary (``PublishStats``, the stdout line, and ``--summary-json``): ``sent``, ``blank_skipped``,
``rejected``, ``per_partition`` (events sent with an explicit partition id, by id), ``keyed`` (events
sent by partition key, partition chosen by the service), ``seconds`` (from the first send round to the
last acknowledgement; connecting and partition discovery are excluded, but the SDK opens a send link per
partition on first use, about 0.5 s each against the local endpoint, which is included) and
``events_per_s``.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import itertools
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Optional, Sequence, Union

DEFAULT_CONNECTION_STRING_ENV = "EVENTHUB_CONNECTION_STRING"
DEFAULT_BATCH_SIZE = 500
PROGRESS_INTERVAL_S = 1.0
ROUNDS_PER_S = 10                    # with a rate: send rounds per second (the token bucket's burst)
GZIP_MAGIC = b"\x1f\x8b"
_GLOB_CHARS = re.compile(r"[*?\[]")
_SECRET_RE = re.compile(r"(SharedAccessKey|SharedAccessSignature)=[^;\s'\"]*", re.IGNORECASE)

FileArg = Union[str, os.PathLike]


class PublishError(Exception):
    """A usage or configuration problem (bad input files, more partitions than the hub has, ...)."""


@dataclass
class PublishStats:
    sent: int = 0
    blank_skipped: int = 0
    rejected: int = 0
    per_partition: dict = field(default_factory=dict)   # partition id -> events sent with that id
    keyed: int = 0                                       # events sent by partition key
    seconds: float = 0.0
    events_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SourceLine:
    """One non-blank input line: where it came from (for messages) and its raw bytes."""
    source: str
    line_no: int                      # 1-based
    body: bytes


# --------------------------------------------------------------------------------------------- helpers
def redact(text: str) -> str:
    """Replace the value of every ``SharedAccessKey=`` / ``SharedAccessSignature=`` in ``text`` with ``***``."""
    return _SECRET_RE.sub(r"\1=***", text)


def describe_connection(connection_string: str, hub: Optional[str] = None) -> tuple[str, Optional[str]]:
    """``(endpoint host, hub name)`` of a connection string: the only parts of it that may be shown."""
    settings = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            settings[key.strip().lower()] = value.strip()
    endpoint = settings.get("endpoint", "")
    host = re.sub(r"^[a-z]+://", "", endpoint, flags=re.IGNORECASE).rstrip("/") or "?"
    return host, hub or settings.get("entitypath")


def parse_rate(text: Union[str, float, int]) -> float:
    """``"200/s"``, ``"200"``, ``"0.5/s"`` or a number -> events per second (0 = unlimited)."""
    raw = str(text).strip()
    number = raw[:-2].strip() if raw.lower().endswith("/s") else raw
    try:
        rate = float(number)
    except ValueError:
        raise ValueError(f"invalid rate {raw!r}: expected N or N/s, e.g. 200/s") from None
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"invalid rate {raw!r}: must be a finite number >= 0")
    return rate


def expand_files(files: Union[FileArg, Iterable[FileArg]]) -> list[Path]:
    """Paths as given, glob patterns expanded (sorted); PublishError for missing files or empty globs."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out: list[Path] = []
    for item in files:
        text = os.fspath(item)
        if not os.path.exists(text) and _GLOB_CHARS.search(text):
            matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not matches:
                raise PublishError(f"no file matches {text!r}")
            out.extend(Path(p) for p in matches)
        elif os.path.isfile(text):
            out.append(Path(text))
        else:
            raise PublishError(f"not a file: {text!r}")
    if not out:
        raise PublishError("no input files")
    return out


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def read_lines(files: Union[FileArg, Iterable[FileArg]],
               on_blank: Optional[Callable[[], None]] = None) -> Iterator[SourceLine]:
    """Non-blank lines of ``files`` in order, with their source; ``on_blank()`` is called per blank line."""
    for path in expand_files(files):
        with _open(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                if not line.strip():
                    if on_blank is not None:
                        on_blank()
                    continue
                yield SourceLine(str(path), line_no, line)


def iter_events(files: Union[FileArg, Iterable[FileArg]],
                on_blank: Optional[Callable[[], None]] = None) -> Iterator[bytes]:
    """The raw bytes of every event ``publish`` would send for ``files``, in file order."""
    for line in read_lines(files, on_blank):
        yield line.body


def shuffle_blocks(items: Iterable, window: int, seed: int = 0) -> Iterator:
    """``items`` with the order shuffled inside consecutive blocks of ``window`` (deterministic per seed).

    ``window`` <= 1 keeps the order. Every item stays within its block, so it moves by < ``window``.
    """
    if window <= 1:
        yield from items
        return
    rng = random.Random(seed)
    it = iter(items)
    while True:
        block = list(itertools.islice(it, window))
        if not block:
            return
        rng.shuffle(block)
        yield from block


def partition_key_of(body: bytes, field_name: str) -> Optional[str]:
    """The partition key for a line: its JSON object's ``field_name`` (string or number), else None."""
    import orjson   # a dependency of the job; imported here so --help stays fast
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get(field_name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    key = str(value)
    return key if key.strip() else None


class TokenBucket:
    """Token bucket: ``acquire(n)`` sleeps until n tokens have accrued at ``rate``/s (burst ``capacity``).

    It starts empty, so sending N events takes at least N / rate seconds.
    """

    def __init__(self, rate: float, capacity: float, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.capacity = rate, max(capacity, 1.0)
        self.clock, self.sleep = clock, sleep
        self.tokens, self.last = 0.0, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def acquire(self, n: int) -> None:
        self._refill()
        if self.tokens < n:
            self.sleep((n - self.tokens) / self.rate)
            self._refill()
        self.tokens -= n            # may dip slightly below 0 (sleep granularity): repaid next time


class Progress:
    """Writes a progress line to ``stream`` at most once per ``interval`` seconds."""

    def __init__(self, stats: PublishStats, stream: Optional[IO[str]], interval: float = PROGRESS_INTERVAL_S,
                 clock=time.monotonic):
        self.stats, self.stream, self.interval, self.clock = stats, stream, interval, clock
        self.start = self.next_at = clock()
        self.next_at += interval

    def line(self) -> str:
        s = self.stats
        elapsed = self.clock() - self.start
        parts = " ".join(f"{pid}={n}" for pid, n in s.per_partition.items())
        if s.keyed:
            parts += f" keyed={s.keyed}"
        rejected = f", {s.rejected} rejected" if s.rejected else ""
        return (f"publish: {s.sent} sent{rejected}, {s.sent / elapsed if elapsed > 0 else 0.0:.1f} ev/s, "
                f"partitions [{parts.strip()}], {elapsed:.1f} s")

    def maybe_report(self) -> None:
        if self.stream is None or self.clock() < self.next_at:
            return
        print(self.line(), file=self.stream, flush=True)
        self.next_at = self.clock() + self.interval


# --------------------------------------------------------------------------------------------- sending
class _Sender:
    """Collects events into one ``EventDataBatch`` per route and sends a batch when it is full.

    A route is ``("id", partition id)`` or ``("key", partition key)``.
    """

    def __init__(self, producer, batch_size: int, stats: PublishStats, report: Callable[[str], None]):
        self.producer, self.batch_size, self.stats, self.report = producer, batch_size, stats, report
        self.pending: dict[tuple[str, str], object] = {}

    def _new_batch(self, route: tuple[str, str]):
        kind, value = route
        if kind == "id":
            return self.producer.create_batch(partition_id=value)
        return self.producer.create_batch(partition_key=value)

    def add(self, route: tuple[str, str], line: SourceLine) -> None:
        from azure.eventhub import EventData
        batch = self.pending.get(route)
        if batch is None:
            batch = self.pending[route] = self._new_batch(route)
        event = EventData(line.body)
        try:
            batch.add(event)
        except ValueError:
            if len(batch):                                # full: send it and start a new one
                self.send(route)
                batch = self.pending[route] = self._new_batch(route)
                try:
                    batch.add(event)
                except ValueError:
                    batch = None
            else:
                batch = None
            if batch is None:                             # does not fit even an empty batch
                self.stats.rejected += 1
                self.report(f"rejected {line.source}:{line.line_no}: event of {len(line.body)} bytes "
                            f"exceeds the maximum message size ({self._max_size(route)} bytes)")
                return
        if len(batch) >= self.batch_size:
            self.send(route)

    def _max_size(self, route) -> str:
        batch = self.pending.get(route)
        return str(getattr(batch, "max_size_in_bytes", "?"))

    def send(self, route: tuple[str, str]) -> None:
        batch = self.pending.pop(route, None)
        if batch is None or not len(batch):
            return
        self.producer.send_batch(batch)
        n = len(batch)
        self.stats.sent += n
        if route[0] == "id":
            self.stats.per_partition[route[1]] = self.stats.per_partition.get(route[1], 0) + n
        else:
            self.stats.keyed += n

    def flush(self) -> None:
        for route in list(self.pending):
            self.send(route)


def _check_partitions(producer, partitions: Optional[int], hub_label: str) -> list[str]:
    """The partition ids to round robin over: "0".."P-1", checked against the hub's own ids."""
    hub_ids = [str(p) for p in producer.get_partition_ids()]
    count = len(hub_ids) if partitions is None else partitions
    wanted = [str(i) for i in range(count)]
    missing = [p for p in wanted if p not in hub_ids]
    if missing:
        raise PublishError(f"--partitions {count}, but hub {hub_label} has {len(hub_ids)} partition(s) "
                           f"({', '.join(hub_ids)}); use at most {len(hub_ids)}")
    return wanted


def publish(connection_string: str, files, *, rate: Union[float, str] = 0, partitions: Optional[int] = None,
            partition_key_field: Optional[str] = None, shuffle_window: int = 0, seed: int = 0,
            limit: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE, hub: Optional[str] = None,
            progress: bool = True) -> PublishStats:
    """Publish every non-blank line of ``files`` as one event; returns the counts (see the module doc).

    Raises PublishError for bad arguments, missing files, or ``partitions`` above the hub's count;
    SDK errors (connection, send) propagate.
    """
    rate = parse_rate(rate)
    if partitions is not None and partitions < 1:
        raise PublishError("partitions must be >= 1")
    if batch_size < 1:
        raise PublishError("batch size must be >= 1")
    if limit is not None and limit < 0:
        raise PublishError("limit must be >= 0")
    if shuffle_window < 0:
        raise PublishError("shuffle window must be >= 0")
    paths = expand_files(files)                       # fail on missing inputs before connecting
    host, hub_name = describe_connection(connection_string, hub)
    if not hub_name:
        raise PublishError("the connection string names no event hub (no EntityPath): pass --hub NAME")
    hub_label = repr(hub_name)
    stream = sys.stderr if progress else None

    def report(message: str) -> None:
        print(f"publish: {message}", file=sys.stderr, flush=True)

    from azure.eventhub import EventHubProducerClient   # lazily: --help and errors stay fast
    try:
        producer = EventHubProducerClient.from_connection_string(connection_string, eventhub_name=hub_name)
    except ValueError as exc:
        raise PublishError(f"invalid Event Hubs connection string: {redact(str(exc))}") from None
    stats = PublishStats()
    with producer:
        round_robin = _check_partitions(producer, partitions, hub_label)
        if progress:
            report(f"{len(paths)} file(s) -> {host} hub {hub_label}, partitions {round_robin[0]}.."
                   f"{round_robin[-1]}{f' (key field {partition_key_field!r})' if partition_key_field else ''}, "
                   f"rate {f'{rate:g}/s' if rate else 'unlimited'}")
        per_round = batch_size if partition_key_field else batch_size * len(round_robin)
        if rate:
            per_round = max(1, min(per_round, math.ceil(rate / ROUNDS_PER_S)))
        bucket = TokenBucket(rate, per_round) if rate else None

        def count_blank() -> None:
            stats.blank_skipped += 1

        lines: Iterable[SourceLine] = read_lines(paths, count_blank)
        if limit is not None:
            lines = itertools.islice(lines, limit)
        lines = shuffle_blocks(lines, shuffle_window, seed)

        sender = _Sender(producer, batch_size, stats, report)
        ticker = Progress(stats, stream)
        start = time.monotonic()
        rr_index = 0
        while True:
            chunk = list(itertools.islice(lines, per_round))
            if not chunk:
                break
            if bucket is not None:
                bucket.acquire(len(chunk))
            for line in chunk:
                key = partition_key_of(line.body, partition_key_field) if partition_key_field else None
                if key is not None:
                    sender.add(("key", key), line)
                else:
                    sender.add(("id", round_robin[rr_index % len(round_robin)]), line)
                    rr_index += 1
            sender.flush()
            ticker.maybe_report()
        sender.flush()
        stats.seconds = round(time.monotonic() - start, 3)
    stats.events_per_s = round(stats.sent / stats.seconds, 1) if stats.seconds > 0 else 0.0
    stats.per_partition = {pid: stats.per_partition.get(pid, 0) for pid in round_robin}
    return stats


# --------------------------------------------------------------------------------------------- CLI
EXAMPLES = f"""\
examples:
  # a local endpoint (another terminal); it prints the connection string to export
  python -m runners.eventhubs_local serve --data-dir .local/eventhubs
  export {DEFAULT_CONNECTION_STRING_ENV}='Endpoint=sb://127.0.0.1:5674;SharedAccessKeyName=local;SharedAccessKey=local;UseDevelopmentEmulator=true;EntityPath=reviews'

  # replay at 200 events/s round robin over partitions 0..3
  python -m runners.publish --rate 200/s --partitions 4 data/reviews/*.json.gz

  # as fast as possible, by product (asin) key, reviews shuffled within blocks of 1000, first 50k only
  python -m runners.publish --partition-key-field asin --shuffle-window 1000 --seed 7 --limit 50000 \\
      --summary-json out/publish.json 'data/reviews/**/*.json.gz'

  # connection string in another variable, another hub of the same namespace
  python -m runners.publish --connection-string-env PROD_EH_CONN --hub reviews-replay reviews.jsonl

exit status: 0 done (rejected events included), 1 send/connection failure, 2 usage or configuration
error (connection string variable unset, missing file, more partitions than the hub has), 130 Ctrl-C.
"""


def _rate_arg(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from beam_pipeline.cli import ArgumentParser
    parser = ArgumentParser(
        prog="python -m runners.publish", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Replay review JSON-lines files into an Event Hub: every non-blank line becomes one\n"
                    "event whose body is the line's raw bytes (line end removed, nothing decoded). Blank\n"
                    "lines are skipped and counted. The connection string is read from an environment\n"
                    "variable. Prints progress to stderr about once a second and a summary line to stdout.",
        epilog=EXAMPLES)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="JSON-lines files, plain or gzip; glob patterns are expanded if the shell "
                             "did not (quote them for ** )")
    parser.add_argument("--rate", type=_rate_arg, default=0.0, metavar="N[/s]",
                        help="average events per second (token bucket, sleeps between sends); "
                             "0 = as fast as possible (default 0)")
    parser.add_argument("--partitions", type=_positive_int, default=None, metavar="P",
                        help="round robin over partition ids 0..P-1 (event i -> partition i %% P), sent "
                             "with an explicit partition id; P must not exceed the hub's partition count "
                             "(default: all of the hub's partitions)")
    parser.add_argument("--partition-key-field", default=None, metavar="FIELD",
                        help="send each line whose JSON object has FIELD (string or number, e.g. asin) "
                             "with that value as partition key (the service picks the partition; equal "
                             "keys share one); other lines go round robin as with --partitions. One "
                             "batch per distinct key per send round: slow with many distinct keys")
    parser.add_argument("--shuffle-window", type=_non_negative_int, default=0, metavar="W",
                        help="shuffle the event order within consecutive blocks of W events (bounded "
                             "out-of-order replay); 0 keeps file order (default 0)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed for --shuffle-window; same seed, same order (default 0)")
    parser.add_argument("--limit", type=_non_negative_int, default=None, metavar="N",
                        help="publish only the first N events (non-blank lines, file order, before "
                             "shuffling)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="B",
                        help="at most B events per send_batch; batches are also cut at the hub's maximum "
                             "message size, and a single event above it is counted as rejected "
                             f"(default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--connection-string-env", default=DEFAULT_CONNECTION_STRING_ENV, metavar="NAME",
                        help="environment variable holding the Event Hubs connection string (never "
                             "passed as an argument, never printed) "
                             f"(default {DEFAULT_CONNECTION_STRING_ENV})")
    parser.add_argument("--hub", default=None, metavar="NAME",
                        help="event hub name, overriding the connection string's EntityPath")
    parser.add_argument("--summary-json", default=None, metavar="PATH",
                        help="also write the summary as JSON: sent, blank_skipped, rejected, "
                             "per_partition, keyed, seconds, events_per_s")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _summary_line(stats: PublishStats, host: str, hub: Optional[str]) -> str:
    parts = " ".join(f"{pid}={n}" for pid, n in stats.per_partition.items())
    keyed = f", {stats.keyed} by partition key" if stats.keyed else ""
    return (f"published {stats.sent} events to {host} hub {hub or '(unnamed)'} in {stats.seconds:.2f} s "
            f"({stats.events_per_s:.1f} events/s); {stats.rejected} rejected, {stats.blank_skipped} blank "
            f"lines skipped; per partition: {parts}{keyed}")


def _err(message: str) -> None:
    print(f"publish: error: {redact(message)}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:                           # --help (0) or a usage error (2)
        return int(exc.code or 0)
    connection_string = os.environ.get(args.connection_string_env, "").strip()
    if not connection_string:
        _err(f"environment variable {args.connection_string_env} is not set (or empty): export the Event "
             f"Hubs connection string there, e.g. the one `python -m runners.eventhubs_local serve "
             f"--data-dir .local/eventhubs` prints, or name another variable with --connection-string-env")
        return 2
    host, hub = describe_connection(connection_string, args.hub)
    try:
        stats = publish(connection_string, args.files, rate=args.rate, partitions=args.partitions,
                        partition_key_field=args.partition_key_field, shuffle_window=args.shuffle_window,
                        seed=args.seed, limit=args.limit, batch_size=args.batch_size, hub=args.hub,
                        progress=not args.quiet)
    except PublishError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - SDK/IO failures as one redacted line
        _err(f"publishing to {host} hub {hub or '(unnamed)'} failed: {type(exc).__name__}: {exc}")
        return 1
    print(_summary_line(stats, host, hub), flush=True)
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
