"""What the benchmark scripts share: timing a child process with the kernel's accounting, waiting for a
quiet machine, and writing a script's own section of bench/results/README.md.

Every run is a child process in its own session: wall = the clock around start and reap (interpreter
start and imports included); CPU and peak RSS = the kernel's accounting of that child at exit
(``wait4``); the CPU the rest of the machine used meanwhile is reported next to it, because these 2-core
machines are shared.
"""
import hashlib
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_s(pid):
    """user + system CPU seconds of a live process (from /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s():
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK  # user nice system irq softirq steal


def add_run_options(ap, *, work, what, quiet_wait, written):
    """The options every timed-run script shares: --work (``what`` goes there), --quiet-wait, --timeout and
    --results (``written`` goes there)."""
    ap.add_argument("--work", default=str(ROOT / "bench" / "work" / work),
                    help=f"{what} (default bench/work/{work})")
    ap.add_argument("--quiet-wait", type=float, default=quiet_wait,
                    help="before each run, wait up to this many seconds for the machine to be idle (other "
                         "processes' CPU < 0.25 core for 2 s); what they still use is reported "
                         f"(default {quiet_wait:g}, 0: no wait)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed for one run (default 900)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"),
                    help=f"where {written} and README.md go (default bench/results)")


def wait_quiet(max_wait_s, threshold_cores=0.25):
    """Wait (at most max_wait_s) until the machine has been nearly idle for 2 s: other processes on this
    machine (e.g. a test suite) would steal cores from the side being timed. -> seconds waited."""
    t0, quiet = time.monotonic(), 0
    while time.monotonic() - t0 < max_wait_s:
        busy0 = machine_busy_s()
        time.sleep(1.0)
        quiet = quiet + 1 if machine_busy_s() - busy0 < threshold_cores else 0
        if quiet >= 2:
            break
    return round(time.monotonic() - t0, 1)


def group_rss_bytes(pgid):
    """RSS summed over the live processes of process group pgid (from /proc)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == pgid:  # fields after ")": state ppid pgrp ... ; rss is field 24 overall
                total += int(stat[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_child(cmd, env, timeout, stdout_path, stderr_path, watch_pid=None, sample_tree=False):
    """Run cmd in its own session -> wall, CPU, peak RSS (kernel accounting), rc, timed_out; the CPU of
    ``watch_pid`` meanwhile (``endpoint_cpu_s``: a server the child talks to), the sampled RSS sum of the
    child's process group (``tree_peak_mb_sampled``, with ``sample_tree``), this script's own polling CPU
    and what other processes used (``other_cpu_s``)."""
    watched0, busy0, self0 = proc_cpu_s(watch_pid) if watch_pid else None, machine_busy_s(), time.process_time()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
        deadline, timed_out, tree_peak, next_sample = t0 + timeout, False, 0, t0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            if sample_tree and now >= next_sample:
                tree_peak = max(tree_peak, group_rss_bytes(proc.pid))
                next_sample = now + 0.1
            time.sleep(0.005)
        wall = time.monotonic() - t0
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the command left running in its group
        except ProcessLookupError:
            pass
    watched1, busy1, poll_cpu = (proc_cpu_s(watch_pid) if watch_pid else None, machine_busy_s(),
                                 time.process_time() - self0)
    cpu = ru.ru_utime + ru.ru_stime
    watched = watched1 - watched0 if None not in (watched0, watched1) else None
    out = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_mb": round(ru.ru_maxrss / 1024, 1),
           "rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
           "endpoint_cpu_s": None if watched is None else round(watched, 3),
           "bench_poll_cpu_s": round(poll_cpu, 2),
           "other_cpu_s": round(max(0.0, busy1 - busy0 - cpu - (watched or 0.0) - poll_cpu), 2)}
    if sample_tree:
        out["tree_peak_mb_sampled"] = round(tree_peak / 2**20, 1)
    return out


def tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def med(xs):
    return round(statistics.median(xs), 3) if xs else None


def fmt(x, spec, unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def write_section(readme, begin, end, text):
    """Replace the text between the ``begin``/``end`` markers of ``readme`` (appended when absent); the
    other scripts' sections stay."""
    old = readme.read_text() if readme.exists() else ""
    section = f"{begin}\n{text}\n{end}\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + section
    readme.write_text(new)


def git_state(paths):
    """The commit measured, and whether (and how) ``paths`` differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", *paths], cwd=ROOT, capture_output=True).stdout
        return {"commit": head, "sources_modified": bool(dirty),
                "sources_diff_sha256": hashlib.sha256(diff).hexdigest()[:16] if dirty else None,
                "sources_status": dirty.splitlines()}
    except OSError:
        return None
