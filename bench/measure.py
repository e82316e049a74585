"""Measuring a child process: wall time and its own peak RSS (``os.wait4``), and medians.

Host side, standard library only. Each measured command runs in its own process, so the peak RSS is
that process's alone (ru_maxrss of the reaped child), not the benchmark driver's.
"""

import os
import statistics
import subprocess
import time


def run_measured(argv, env=None, cwd=None, log_path=None):
    """Run ``argv``; return {seconds, peak_rss_mb, exit}. Output goes to ``log_path`` (or is discarded)."""
    sink = open(log_path, "w") if log_path else open(os.devnull, "w")
    try:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        sink.close()
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024.0, "exit": process.returncode}


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", digits=1):
    if value is None:
        return "-"
    return "%.*f%s" % (digits, value, unit)
