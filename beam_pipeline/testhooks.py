"""A test hook: stop at a named point of a run until a file appears, so a test can act there (kill the
process, stop a service). ``REVIEWS_TEST_PAUSE_AT`` = the point, ``REVIEWS_TEST_PAUSE_FILE`` = the file;
on arrival ``FILE.reached`` is written. Inert unless a test sets both. Points: ``reading`` (a batch run has
read its first chunk of input), ``read`` (the Event Hubs
reader has emitted its first events), ``written`` (every table file written, before the commit),
``intent``, ``claim`` and a table name (``beam_pipeline.tables.commit_run``'s phases)."""
import os
import time


def pause_point():
    """The point a test asked the run to stop at (None: no test hook set)."""
    return os.environ.get("REVIEWS_TEST_PAUSE_AT")


def pause_at(point):
    if pause_point() != point:
        return
    release = os.environ["REVIEWS_TEST_PAUSE_FILE"]
    with open(release + ".reached", "w") as fh:
        fh.write(point)
    while not os.path.exists(release):
        time.sleep(0.05)
