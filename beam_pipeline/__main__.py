"""python -m beam_pipeline --source={adls,files,eventhub} --reviews=... --output=... [options]

Run with --help for every option (the job's own, then Beam's runner options).
"""
import os

# Arrow's C++ allocator is chosen once, from this variable, when pyarrow first allocates: so before anything
# imports it. The system allocator (malloc) instead of pyarrow's default (mimalloc): the job allocates Arrow
# buffers on pool threads and frees them on others, and at 1M reviews mimalloc cost ~1 s more system time
# (returning and re-faulting pages) and ~350 MB more peak RSS (README, "Speed and memory"). Set the variable
# yourself to choose another pool; on remote workers set it in their environment.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import logging  # noqa: E402
import sys  # noqa: E402

from beam_pipeline.options import OptionsError, help_text  # noqa: E402


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(help_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from beam_pipeline.commit import InputError
    from beam_pipeline.eventhub import HubUnavailable
    from beam_pipeline.options import checked_argv
    from beam_pipeline.pipeline import run
    from beam_pipeline.tables import TableError
    for handler in logging.getLogger().handlers:   # the error line below says it; Beam would log a traceback
        handler.addFilter(lambda record: not (record.exc_info and isinstance(record.exc_info[1], HubUnavailable)))
        handler.addFilter(lambda record: not (record.levelno >= logging.ERROR
                                              and "Failed to establish a new connection" in record.getMessage()))
    try:
        summary = run(checked_argv(args))  # --a-b spellings of the job's options; unknown options: exit 2
    except (OptionsError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TableError, HubUnavailable) as err:  # a concurrent commit, a table that cannot be written, the hub
        print(f"error: {err}", file=sys.stderr)  # unreachable or gone during the read: nothing became visible
        return 3
    except Exception as err:  # storage gone while the pipeline ran: say so in one line (others re-raised)
        from beam_pipeline.commit import storage_failure
        reason = storage_failure(err)
        if reason is None:
            raise
        print(f"error: {reason} while the run was reading its inputs or writing its files; nothing of this run "
              "was committed (every table is at its previous version): run it again once storage is back",
              file=sys.stderr)
        return 3
    if "dry_run" in summary:  # --runner=DataflowRunner --dry_run=True: the graph only
        return 0
    ok = all(summary[k]["reconciled"] for k in ("reviews", "products"))
    if not ok:
        print("error: the counts do not reconcile (see the run summary)", file=sys.stderr)
        return 1
    incomplete = sum(summary[k].get("files_incomplete", 0) for k in ("reviews", "products"))
    if incomplete:
        print(f"error: {incomplete} input file(s) could not be read to the end; what was read is committed "
              "(see the dead letters with record_type 'file')", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    from beam_pipeline import hard_exit
    hard_exit(main())
