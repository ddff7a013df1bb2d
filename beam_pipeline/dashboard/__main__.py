"""python -m beam_pipeline.dashboard --output=ROOT [--output=ROOT2 ...] [--host 127.0.0.1] [--port 8050]

Serves the dashboard over the Delta tables of one or more output roots of the job (see --help)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from beam_pipeline.dashboard import data
from beam_pipeline.dashboard.server import Server, is_loopback

EPILOG = """\
Pages: Review insights (the seeds' charts, from gold; with a filter, from silver), Trending (insights/trending_*
for a chosen day, with daily counts), Reviewer (recent brands, history from silver, recommendations per model),
Pipeline health (run history from the event log, dead letters with raw payloads, streaming freshness).
Tables that are not there yet are named on the page with the command that writes them.

The page polls the event log's version every few seconds and redraws when a run commits, so a streaming
run can be watched. Everything is served from this process: no CDN, no network.

Examples:
  python -m beam_pipeline.dashboard --output=out/batch
  python -m beam_pipeline.dashboard --output=out/batch_scored --output=out/batch --output=out/stream --port 8051
  make dashboard            # the outputs make run wrote
"""


def parse_args(argv=None):
    from beam_pipeline.cli import ArgumentParser
    ap = ArgumentParser(
        prog="python -m beam_pipeline.dashboard",
        description="A local web dashboard over the job's Delta tables: review insights, trending, a reviewer "
                    "view with recommendations, and pipeline health; refreshes as runs commit.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", action="append", required=True, metavar="ROOT",
                    help="an output root of the job (local path or azfs://ACCOUNT/CONTAINER/PATH; the --output the "
                         "job wrote to). Repeat it to serve several; the page picks one. Roots without tables are "
                         "skipped with a warning; none with tables is an error (exit 2)")
    ap.add_argument("--recommendations", metavar="DIR", default=None,
                    help="the folder python -m training.recommend exported to (it holds the Delta table "
                         "'recommendations'); default: ROOT/recommendations for each root")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only). Anything else exposes the "
                         "tables' contents, review text included, to the network: a warning is printed")
    ap.add_argument("--port", type=int, default=8050, help="TCP port (default 8050; 0 picks a free one)")
    ap.add_argument("--verbose", action="store_true", help="log every request and its time")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(message)s")
    logging.getLogger("deltalake").setLevel(logging.WARNING)
    roots, problems = [], []
    for path in a.output:
        try:
            root = data.Root(path, name=_name(path, a.output), recommendations=a.recommendations)
            data.check_root(root)
            roots.append(root)
        except data.NoTables as err:
            problems.append(str(err))
        except Exception as err:  # noqa: BLE001 - any unreadable root is reported the same way
            problems.append(f"{path}: cannot read its tables: {type(err).__name__}: {err}")
    for p in problems:
        print(f"warning: {p}" if roots else f"error: {p}", file=sys.stderr)
    if not roots:
        return 2
    if not is_loopback(a.host):
        print(f"warning: binding {a.host}: anyone who can reach this address can read the tables", file=sys.stderr)
    try:
        server = Server(roots, a.host, a.port)
    except OSError as err:
        print(f"error: cannot listen on {a.host}:{a.port}: {err.strerror or err} (try --port 0 or another port)",
              file=sys.stderr)
        return 2
    print(f"Dashboard on {server.url}  ({', '.join(r.path for r in roots)}; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def _name(path, paths):
    """A short name for a root: its last folder, or the whole path when two roots share it."""
    base = os.path.basename(path.rstrip("/")) or path
    return base if sum(os.path.basename(p.rstrip("/")) == base for p in paths) == 1 else path


if __name__ == "__main__":
    sys.exit(main())
