"""Measuring a child process: wall time and its own peak RSS (``os.wait4``), and medians.

Host side, standard library only. Each measured command runs in its own process, so the peak RSS is
that process's alone (ru_maxrss of the reaped child), not the benchmark driver's.
"""

import os
import statistics
import subprocess
import time


TREE_POLL_SECONDS = 0.2


def run_measured(argv, env=None, cwd=None, log_path=None, tree=False):
    """Run ``argv``; return {seconds, peak_rss_mb, exit}. Output goes to ``log_path`` (or is discarded).

    ``tree``: the command starts processes of its own that run at once (``convert_legacy``'s steps; its
    ru_maxrss counts at most the largest reaped one, and none that another process reaps, as the boxed
    steps are: the benchmark showed 61 MB for a ResNet50 run); ``peak_rss_mb`` is then the largest sum of
    the resident memory of the command and all its descendants at once, sampled every
    ``TREE_POLL_SECONDS`` from /proc (a peak shorter than that can be missed), and ``own_peak_rss_mb``
    is the command's own."""
    sink = open(log_path, "w") if log_path else open(os.devnull, "w")
    peak_tree = 0
    try:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG if tree else 0)
            if pid:
                break
            peak_tree = max(peak_tree, tree_rss_bytes(process.pid))
            time.sleep(TREE_POLL_SECONDS)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        sink.close()
    own = usage.ru_maxrss / 1024.0
    if not tree:
        return {"seconds": seconds, "peak_rss_mb": own, "exit": process.returncode}
    return {"seconds": seconds, "peak_rss_mb": max(own, peak_tree / float(1 << 20)), "own_peak_rss_mb": own,
            "exit": process.returncode}


def tree_rss_bytes(root):
    """The resident memory (bytes) of process ``root`` and all its descendants now (/proc; 0 elsewhere)."""
    parents, resident = {}, {}
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/statm" % name) as handle:
                resident[int(name)] = int(handle.read().split()[1]) * page
            parents[int(name)] = int(fields[1])
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    children = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += resident.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", digits=1):
    if value is None:
        return "-"
    return "%.*f%s" % (digits, value, unit)


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator
