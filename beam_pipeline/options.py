"""The job's options: one PipelineOptions subclass, validated before any work starts.

Option names. The job's own options are written ``--a_b``; ``--a-b`` is accepted for them as well
(``normalize_argv``, applied by the CLI). An option no PipelineOptions class knows (the job's, or any of
Beam's: ``--runner``, ``--temp_location``, ``--direct_num_workers``, ...) is an error, one line with the
closest known name (``--windw_size``: did you mean ``--window_size``?): Beam alone would only log a
warning and run with the defaults. ``validated`` and the CLI raise ``OptionsError`` for it, exit code 2.
"""
import difflib
import os
import re

from apache_beam.options.pipeline_options import AzureOptions, PipelineOptions, StandardOptions

SOURCES = ("adls", "files", "eventhub")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    """'90', '90s', '15m', '6h', '1d', '1w' -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 15m, 6h, 1d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def window_spec(o):
    """The run's event-time windows (``--window_size``, ``--window_period``) as a ``transforms.windows.WindowSpec``."""
    from transforms.windows import WindowSpec
    return WindowSpec(parse_duration(o.window_size), parse_duration(o.window_period) if o.window_period else None)


class OptionsError(ValueError):
    """Options that contradict each other or cannot work; raised before the pipeline is built."""


def _parser(classes):
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class Parser(_BeamArgumentParser):
        def error(self, message):  # a bad value: one line, not argparse's usage of every Beam option
            raise OptionsError(f"invalid options: {message}")

    parser = Parser(allow_abbrev=False)
    for cls in classes:
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _all_option_classes():
    """Every PipelineOptions class Beam itself would parse with (its get_all_options does the same)."""
    return {str(c): c for c in PipelineOptions.__subclasses__()}.values()


def _option_strings(parser):
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}  # noqa: SLF001


def normalize_argv(argv):
    """``--a-b[=v]`` -> ``--a_b[=v]`` for the job's own options (ReviewsOptions); everything else as given."""
    own = _option_strings(_parser([ReviewsOptions]))
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "-" in name[2:] and "--" + name[2:].replace("-", "_") in own:
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


def unknown_options_problem(argv):
    """One line naming each option no PipelineOptions class knows, with the closest known name; None if
    every option is known. Values that follow an unknown option (``--windw_size 1h``) are not options."""
    parser = _parser(_all_option_classes())
    _, unknown = parser.parse_known_args(list(argv or []))
    names = [u for u in unknown if u.startswith("-")]
    if not names:
        return None
    known = sorted(_option_strings(parser))
    parts = []
    for arg in names:
        name = arg.partition("=")[0]
        fixed = "--" + name.lstrip("-").replace("-", "_")
        guess = [fixed] if fixed in known else difflib.get_close_matches(fixed, known, n=1, cutoff=0.75)
        parts.append(f"{arg}" + (f" (did you mean {guess[0]}?)" if guess else ""))
    return ("unknown option " if len(parts) == 1 else "unknown options ") + ", ".join(parts) \
        + "; python -m beam_pipeline --help lists them"


def checked_argv(argv):
    """The CLI's arguments with the job's ``--a-b`` spellings normalised; OptionsError (one line) for an
    option nobody knows."""
    argv = normalize_argv(argv)
    problem = unknown_options_problem(argv)
    if problem:
        raise OptionsError(problem)
    return argv


class ReviewsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("reviews job")
        g.add_argument("--source", choices=SOURCES, default="files",
                       help="where reviews come from: 'adls' (azfs:// paths, Azure Blob/ADLS Gen2 through the "
                            "Blob API), 'files' (local or any Beam filesystem path), 'eventhub' (streaming from "
                            "Azure Event Hubs; turns on --streaming). Default: files")
        g.add_argument("--reviews", action="append", default=None,
                       help="review JSON-lines files: a path, glob or comma-separated list; plain or .gz. Repeat "
                            "the option for more. Example: azfs://myaccount/raw/amazon_reviews/partition_*/*.json.gz")
        g.add_argument("--products", action="append", default=None,
                       help="product metadata JSON-lines files (same forms as --reviews). Optional: without it "
                            "silver reviews carry null product columns")
        g.add_argument("--output", default=None,
                       help="output root (local path or azfs://ACCOUNT/CONTAINER/PATH): the Delta tables silver/reviews, "
                            "silver/products, gold/<family>, dead_letters and the event log _pipeline/events go "
                            "under it. A batch rerun appends what is new (see --full_refresh)")
        g.add_argument("--window_size", default="1d",
                       help="event-time window of the gold metrics: seconds or 15m / 6h / 1d / 1w. Default 1d")
        g.add_argument("--window_period", default=None,
                       help="sliding windows: a new window every PERIOD (must divide --window_size). "
                            "Default: fixed windows")
        g.add_argument("--top_reviewers", type=int, default=10,
                       help="how many reviewers the top_reviewers gold table keeps per window. Default 10")
        g.add_argument("--shuffle_buckets", type=int, default=0,
                       help="hash buckets of asin for the dedupe + product join shuffle (and silver files per run: "
                            "one or more per bucket); more buckets spread work across more workers, fewer make "
                            "bigger batches and files. Default 0: from the input size, one per ~64 MiB of "
                            "uncompressed JSON, 1 to 8")
        g.add_argument("--target_file_mb", type=int, default=128,
                       help="target size of a silver Parquet file; a bucket writes more than one file above it. "
                            "Default 128")
        g.add_argument("--expectation", action="append", default=None, metavar="NAME=ACTION",
                       help="change a data-quality expectation's action: warn (row kept, counted), drop (row to "
                            "dead letters, reason = the name) or fail (the batch run stops before its commit; "
                            "nothing becomes visible). Repeatable. Expectations and defaults: review_time_range "
                            "(1995-01-01 .. now + 1 day, warn), empty_review_text (warn), asin_shape (10 of 0-9A-Z, "
                            "warn), overall_out_of_range (1..5, drop); the missing-field checks always drop. "
                            "Streaming runs use the defaults")
        g.add_argument("--take_over_output", action="store_true", default=False,
                       help="accept an --output folder that already holds files the job did not write (no "
                            "_pipeline/ folder of its own there). Without it such a folder is refused (exit 2): "
                            "the job's cleanup deletes files in silver/, gold/ and dead_letters/ that no commit "
                            "of its own references")
        g.add_argument("--full_refresh", action="store_true", default=False,
                       help="batch: read every input file and replace every table (a new table version; earlier "
                            "versions stay readable until vacuumed). Default: incremental, only files not "
                            "ingested yet (new, or changed in size or modification time) are read, and rows "
                            "already in silver are duplicates")
        g.add_argument("--chunk_mb", type=int, default=8,
                       help="bytes of a file parsed as one Arrow batch (whole lines), in MiB. Default 8 (three pooled steps hold two batches each, so this bounds the read stage's memory)")
        g.add_argument("--max_record_bytes", type=int, default=1 << 20,
                       help="a line longer than this is a dead letter (too_large). Default 1048576")
        g.add_argument("--dead_letter_payload_bytes", type=int, default=4096,
                       help="how much of a rejected record's raw bytes its dead letter keeps. Default 4096")
        g.add_argument("--sentiment_model", default=None,
                       help="score every review with this TensorFlow SavedModel (the trainer's export: "
                            "serving_default(summary, review_text) -> probability, label), local or azfs:// / gs:// "
                            "(copied to the worker once per process). Adds predicted_sentiment and "
                            "sentiment_probability to silver (null without a model) and the gold families "
                            "predicted_sentiment, predicted_sentiment_by_brand, predicted_sentiment_by_main_cat, in "
                            "batch and streaming. Needs tensorflow on the workers. Default: no scoring")
        g.add_argument("--run_id", default=None,
                       help="this run's id: the prefix of every file it writes and its rows in the event log "
                            "(letters, digits and _ only). Default: a UTC timestamp")
        i = parser.add_argument_group("reviews job, insights (docs/insights.md)")
        i.add_argument("--insights", type=_boolean, default=True, metavar="true|false",
                       help="compute the insights: the trending tables insights/trending_{products,brands,"
                            "main_cats}, insights/recent_brands, and the gold families daily_products, "
                            "daily_brands, daily_main_cats, reviews_by_month, top_words, top_summaries, "
                            "top_reviewer_names, rating_by_product, rating_by_brand, products_by_secondary_cat "
                            "and distinct_counts. Default true; --insights=false or --no_insights leaves them out "
                            "(an incremental run leaves the insight tables earlier runs wrote as they were; with "
                            "--full_refresh they are emptied). Turning insights on after runs without them needs "
                            "--full_refresh for complete series")
        i.add_argument("--no_insights", dest="insights", action="store_false",
                       help="the same as --insights=false")
        i.add_argument("--trending_rule", choices=("zscore", "open_avenues"), default="zscore",
                       help="how the trending tables score a (day, key): 'zscore', the end day's count against "
                            "the trailing days' mean, over max(sample variance, mean, 1) (a Poisson floor); "
                            "'open_avenues', the Open Avenues project's rule (top 10 by count on the day, kept "
                            "with day-over-day growth >= 10 %%) with its flaws fixed. Default zscore")
        i.add_argument("--trending_days", type=int, default=7,
                       help="the sliding window of the trending rules, in days: the end day and DAYS - 1 "
                            "trailing days (days without reviews count 0). Default 7")
        i.add_argument("--trending_top", type=int, default=20,
                       help="keys kept per day in each trending table (ranked by score, then count, then key). "
                            "Default 20")
        i.add_argument("--trending_min_count", type=int, default=3,
                       help="a key trends on a day only with at least this many reviews that day (and the "
                            "open_avenues growth is measured against at least this many). Default 3")
        i.add_argument("--recent_brands", type=int, default=50,
                       help="how many distinct brands insights/recent_brands keeps per reviewer, newest first by "
                            "review time. Changing it applies to reviewers with new reviews; --full_refresh "
                            "recomputes every list. Default 50")
        i.add_argument("--rating_min_reviews", type=int, default=10,
                       help="products and brands need at least this many reviews to enter the top and bottom by "
                            "mean rating (gold rating_by_product, rating_by_brand). Default 10")
        s = parser.add_argument_group("reviews job, streaming (--source=eventhub)")
        s.add_argument("--event_hub_connection_env", default="EVENTHUB_CONNECTION_STRING",
                       help="NAME of the environment variable holding the Event Hubs connection string (the string "
                            "itself is never an option: options are logged). Default: EVENTHUB_CONNECTION_STRING")
        s.add_argument("--event_hub_namespace", default=None,
                       help="instead of a connection string: NAMESPACE.servicebus.windows.net, signed in with "
                            "DefaultAzureCredential (managed identity, az login, AZURE_CLIENT_* variables)")
        s.add_argument("--event_hub", default=None,
                       help="event hub name. Default: the connection string's EntityPath")
        s.add_argument("--consumer_group", default="$Default", help="consumer group to read as. Default: $Default")
        s.add_argument("--start_position", default="checkpoint",
                       help="where each partition starts: 'checkpoint' (after the last committed event; the "
                            "beginning when there is none), 'earliest', 'latest', 'sequence:N', or "
                            "'enqueued:2024-01-31T00:00:00Z'. Default: checkpoint")
        s.add_argument("--max_records", type=int, default=None,
                       help="stop each partition after this many events (bounds local runs). Default: no limit")
        s.add_argument("--stop_after_idle_s", type=float, default=None,
                       help="stop a partition after this many seconds without events (bounds local runs; the "
                            "local runners emit panes only when the run ends). Default: never, i.e. truly "
                            "unbounded: then the run commits every --commit_interval and the runner's own "
                            "checkpointing (Dataflow, Flink) gives exactly-once")
        s.add_argument("--event_time", choices=("review_time", "enqueued_time"), default="review_time",
                       help="the event-time clock of windows and watermark: the review's unixReviewTime, or "
                            "when the hub received the event. Default: review_time")
        s.add_argument("--max_out_of_orderness", default="1h",
                       help="the watermark trails the largest event time seen per partition by this much (events "
                            "further behind are late). Duration, e.g. 90s, 15m, 1d. Default 1h")
        s.add_argument("--idle_timeout", default="30s",
                       help="a partition without events this long lets its watermark follow the wall clock, so "
                            "it does not hold every window open. Default 30s")
        s.add_argument("--allowed_lateness", default="0",
                       help="how long after the watermark passes a window's end late events still update it (a "
                            "late pane each); later than that they are dead letters 'too_late'. Default 0")
        s.add_argument("--early_firing", default=None,
                       help="emit early (speculative) panes of open windows every DURATION of processing time. "
                            "Default: none, only on-time and late panes. Needs Dataflow or Flink: the local runner "
                            "fires no processing-time triggers")
        s.add_argument("--stream_shards", type=int, default=1,
                       help="hash shards of asin per window: the keys of the dedupe state and the silver files per "
                            "window and pane (and year/month). More shards spread a busy window over more workers "
                            "(Dataflow, Flink). Default 1")
        s.add_argument("--known_reviews", default=None,
                       help="silver reviews of earlier runs (e.g. a batch run's OUTPUT/silver/reviews, local or "
                            "azfs://): reviews already there count as duplicates when they arrive on the hub. "
                            "Default: none")
        s.add_argument("--commit_interval", default="60s",
                       help="a truly unbounded run (no --max_records, no --stop_after_idle_s) commits what it has "
                            "written every DURATION of processing time, each commit a run of its own in the event "
                            "log. Bounded runs commit once, at the end, with their partitions' positions. "
                            "Default 60s")


def _boolean(text):
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


_boolean.__name__ = "boolean"   # argparse names the type in its error message


def _split_paths(values):
    out = []
    for value in values or []:
        out += [p.strip() for p in value.split(",") if p.strip()]
    return out


LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner")


def validated(options):
    """-> (ReviewsOptions view, list of review patterns, list of product patterns); OptionsError if the
    options cannot work together. Called before the pipeline is built, so mistakes cost nothing."""
    unknown = unknown_options_problem(getattr(options, "_flags", None) or [])
    if unknown:  # first and alone: a misspelt option explains the other problems it would cause
        raise OptionsError(unknown)
    o = options.view_as(ReviewsOptions)
    reviews, products = _split_paths(o.reviews), _split_paths(o.products)
    problems = []
    if o.source == "eventhub":
        problems += _streaming_problems(o, reviews)
    elif not reviews:
        problems.append("--reviews is required: where the review JSON lines are")
    if not o.output:
        problems.append("--output is required: where silver, gold and dead letters go")
    else:
        from beam_pipeline.cli import folder_problem
        problems.append(folder_problem(o.output, "--output"))
    paths = reviews + products
    if o.source == "adls":
        bad = [p for p in paths if not p.startswith("azfs://")]
        if bad:
            problems.append(f"--source=adls reads azfs://ACCOUNT/CONTAINER/PATH paths only, got: {', '.join(bad)}")
    elif o.source in ("files", "eventhub"):
        bad = [p for p in paths if p.startswith("azfs://")] if o.source == "files" else []
        if bad:
            problems.append(f"--source=files was given azfs:// paths ({', '.join(bad)}); use --source=adls")
    problems.append(azure_credentials_problem(o, options.view_as(AzureOptions)))
    if options.view_as(AzureOptions).azure_connection_string:
        problems.append("--azure_connection_string would be copied into the job's metadata and logs; put the "
                        "connection string in the AZURE_STORAGE_CONNECTION_STRING environment variable instead")
    runner = str(options.view_as(StandardOptions).runner or "FnApiRunner")
    if o.source == "eventhub" and o.early_firing and runner.split(".")[-1] in LOCAL_RUNNERS:
        problems.append(f"--early_firing needs a runner that fires processing-time triggers (DataflowRunner, "
                        f"FlinkRunner); Beam's local {runner} does not: drop it for local runs")
    if options.view_as(StandardOptions).streaming and o.source != "eventhub":
        problems.append(f"--streaming contradicts --source={o.source} (a bounded source); drop --streaming")
    try:
        size = parse_duration(o.window_size)
        period = parse_duration(o.window_period) if o.window_period else None
        if size <= 0:
            problems.append("--window_size must be positive")
        elif period is not None and (period <= 0 or period > size or size % period):
            problems.append(f"--window_period ({o.window_period}) must be positive and divide --window_size "
                            f"({o.window_size})")
    except ValueError as err:
        problems.append(str(err))
    try:
        from transforms.expectations import configure, parse_overrides
        configure(parse_overrides(o.expectation or []))
    except ValueError as err:
        problems.append(f"--expectation: {err}")
    if o.output and paths:
        inside = output_inside_inputs(o.output, paths)
        if inside:
            problems.append(f"--output {o.output} is inside the inputs: {inside} would match the job's own files "
                            "on the next run; choose an output outside the input folders")
    if o.run_id is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,64}", o.run_id):
        problems.append(f"--run_id {o.run_id!r}: use 1-64 letters, digits or _ (it names files)")
    for name, low in (("top_reviewers", 1), ("shuffle_buckets", 0), ("target_file_mb", 1), ("chunk_mb", 1),
                      ("max_record_bytes", 1024), ("trending_days", 2), ("trending_top", 1),
                      ("trending_min_count", 1), ("recent_brands", 1), ("rating_min_reviews", 1),
                      ("dead_letter_payload_bytes", 0)):
        if getattr(o, name) < low:
            problems.append(f"--{name} must be at least {low}")
    if o.chunk_mb * (1 << 20) >= (1 << 31):
        problems.append("--chunk_mb must stay below 2048")
    if o.sentiment_model is not None:
        from beam_pipeline.scoring import local_model_problem
        problem = local_model_problem(o.sentiment_model) if o.sentiment_model.strip() else \
            "--sentiment_model is empty: give a SavedModel directory, or leave the option out"
        if problem:
            problems.append(problem)
        elif "://" not in o.sentiment_model and "Dataflow" in str(options.view_as(StandardOptions).runner or ""):
            problems.append(f"--sentiment_model {o.sentiment_model} is a local path, which Dataflow workers cannot "
                            "read: upload the SavedModel directory and give its gs:// or azfs:// path")
    problems = [p for p in problems if p]
    if problems:
        raise OptionsError(one_line(problems))
    return o, reviews, products


def one_line(problems):
    """Every problem on one line: a user error is one line (issue 21)."""
    if len(problems) == 1:
        return f"invalid options: {problems[0]}"
    return f"invalid options ({len(problems)} problems): " + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))


def azure_credentials_problem(o, az):
    """None when no azfs:// path is used or Azure credentials are there: AZURE_STORAGE_CONNECTION_STRING
    (what Beam's azfs and the Delta writer read), or --blob_service_endpoint with DefaultAzureCredential."""
    def azfs(value):
        return any(p.startswith("azfs://") for p in _split_paths([value] if isinstance(value, str) else value))
    users = [f"--{name}" for name in ("reviews", "products", "output", "sentiment_model") if azfs(getattr(o, name))]
    if o.source == "adls":
        users.insert(0, "--source=adls")
    if not users or os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or az.blob_service_endpoint \
            or az.azure_connection_string:   # the last one is refused on its own, with its reason
        return None
    return (f"{', '.join(users)} need{'s' if len(users) == 1 else ''} Azure credentials: set "
            "AZURE_STORAGE_CONNECTION_STRING, or pass --blob_service_endpoint=https://ACCOUNT.blob.core.windows.net "
            "and sign in for DefaultAzureCredential (az login, managed identity or AZURE_CLIENT_* variables)")


def _glob_regex(pattern):
    """A Beam/glob pattern -> regex: ``**`` crosses folders, ``*`` and ``?`` do not."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


# files every output holds (event log entries, table files, gzip-less JSON the job writes)
_OUTPUT_SAMPLES = ("_pipeline/events/_delta_log/00000000000000000000.json", "_pipeline/_running/r.json",
                   "silver/reviews/r-0.parquet", "dead_letters/r-0.parquet", "gold/reviews/r-0.parquet")


def output_inside_inputs(output, patterns):
    """The first input pattern that matches files the job writes under ``output`` (None: none does)."""
    def norm(path):
        return path if "://" in path else os.path.abspath(path).replace(os.sep, "/")
    root = norm(output).rstrip("/")
    for pattern in patterns:
        rx = _glob_regex(norm(pattern))
        if any(rx.match(f"{root}/{sample}") for sample in _OUTPUT_SAMPLES):
            return pattern
    return None


def hub_settings(o):
    from beam_pipeline.eventhub import HubSettings
    return HubSettings(hub=o.event_hub, consumer_group=o.consumer_group, connection_env=o.event_hub_connection_env,
                       namespace=o.event_hub_namespace)


def _streaming_problems(o, reviews):
    from beam_pipeline.eventhub import parse_start_position
    problems = []
    if reviews:
        problems.append("--reviews is for files; with --source=eventhub reviews come from the hub")
    problem = hub_settings(o).check()
    if problem:
        problems.append(problem)
    try:
        parse_start_position(o.start_position)
    except ValueError as err:
        problems.append(str(err))
    for name in ("max_out_of_orderness", "idle_timeout", "allowed_lateness") + (("early_firing",) if o.early_firing else ()):
        try:
            parse_duration(getattr(o, name))
        except ValueError as err:
            problems.append(f"--{name}: {err}")
    if o.early_firing and not parse_duration(o.early_firing):
        problems.append("--early_firing must be positive")
    if o.stream_shards < 1:
        problems.append("--stream_shards must be at least 1")
    if o.max_records is not None and o.max_records < 1:
        problems.append("--max_records must be at least 1")
    if o.stop_after_idle_s is not None and o.stop_after_idle_s <= 0:
        problems.append("--stop_after_idle_s must be positive")
    return problems


def with_local_defaults(options):
    """No runner named: the in-process FnApiRunner with its embedded worker. (The plain DirectRunner
    first tries to download the Prism runner, which stalls or fails without network. Its multi-worker
    modes move every element through a gRPC data plane, which for Arrow batches costs far more than the
    second core gains: measured 10 s single-worker vs >2 min and 24 GB with 2 threads at 200k reviews.)"""
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "FnApiRunner"
    if std.runner == "FnApiRunner":
        embedded_state_cache_off()
    return options


def embedded_state_cache_off():
    """Turn off the state cache of the FnApiRunner's embedded (in-process) worker; it has no option for
    it, only this module constant. The cache weighs every state write with ``objsize``, which walks the
    globals of every loaded module on each call: 17 % of a streaming run's busy samples (py-spy), and
    the 20k-event review-time replay took 32-36 s with the cache against 25 s without. In process the
    state already lives in the runner's in-memory state servicer, so the cache saves little. Workers
    on Dataflow or Flink keep their own cache (``--state_cache_size``)."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    worker_handlers.STATE_CACHE_SIZE_MB = 0


HELP_EPILOG = """\
Examples
  local files:   python -m beam_pipeline --source=files --reviews='data/reviews/*.jsonl.gz' \\
                     --products='data/metadata/*.jsonl.gz' --output=out/batch
  Azure (ADLS):  export AZURE_STORAGE_CONNECTION_STRING=...   # or --blob_service_endpoint + DefaultAzureCredential
                 python -m beam_pipeline --source=adls \\
                     --reviews='azfs://ACCOUNT/source-files/amazon_reviews/partition_*/*.json.gz' \\
                     --products='azfs://ACCOUNT/source-files/amazon_metadata/partition_*/*.json.gz' \\
                     --output=azfs://ACCOUNT/lake/reviews
  streaming:     export EVENTHUB_CONNECTION_STRING=...      # or --event_hub_namespace + DefaultAzureCredential
                 python -m beam_pipeline --source=eventhub --output=out/stream --stop_after_idle_s=10 \\
                     --products='data/metadata/*.jsonl.gz' --window_size=1d --allowed_lateness=1d
  no insights:   add --no_insights (or --insights=false): no trending, recent brands or insight gold families
  trending:      add --trending_rule=open_avenues --trending_days=7 --trending_top=20 --trending_min_count=3
  Dataflow:      add --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py
Without --runner the job runs in-process on Beam's FnApiRunner. Exit status: 0 when the run reconciles,
1 when its counts do not, 2 for invalid options or inputs, 3 when nothing of the run is visible (another
run committed first, storage unavailable, the event hub unreachable or lost); 4 when an input file
could not be read to its end (truncated or corrupt .gz): its readable lines are committed and the file
has a dead letter (record_type file).
Insights (on by default): Delta tables insights/trending_products, insights/trending_brands,
insights/trending_main_cats, insights/recent_brands and the insight gold families; docs/insights.md
documents every rule with worked examples.
Tables: python -m beam_pipeline.tables --help (show, history, optimize, vacuum, recover)."""


def help_text():
    """--help: the job's options and the Beam runner options most runs need (Beam's own parser hides --help)."""
    import argparse

    from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, SetupOptions,
                                                      WorkerOptions)
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP_EPILOG,
        description="Amazon reviews -> silver Parquet, windowed gold metrics and dead letters (one Beam graph). "
                    "Any other Beam pipeline option is accepted as well.")
    ReviewsOptions._add_argparse_args(parser)
    for cls in (StandardOptions, AzureOptions, DirectOptions, SetupOptions, GoogleCloudOptions, WorkerOptions):
        group = parser.add_argument_group(f"Beam {cls.__name__}")
        try:
            cls._add_argparse_args(group)
        except (TypeError, AttributeError, argparse.ArgumentError):
            pass
    return parser.format_help()
