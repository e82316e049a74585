"""bench/measure.py: a command's peak RSS with the processes it starts (host side, real processes)."""

import sys

import pytest

from bench import measure

pytestmark = pytest.mark.unit

# a parent that starts two children at once, each holding ~80 MB for two seconds
CHILD = "import time; block = bytearray(80 << 20); block[::4096] = b'x' * len(block[::4096]); time.sleep(2.0)"
PARENT = ("import subprocess, sys; children = [subprocess.Popen([sys.executable, '-c', %r]) for _ in range(2)]; "
          "[child.wait() for child in children]" % CHILD)


def test_the_tree_peak_is_the_memory_of_all_processes_at_once():
    """ru_maxrss (the command's own figure, its reaped children's largest included) sees one child's
    block; the tree's peak sees both at once."""
    result = measure.run_measured([sys.executable, "-c", PARENT], tree=True)
    assert result["exit"] == 0
    assert result["peak_rss_mb"] >= 160, result
    assert result["own_peak_rss_mb"] < 130, result
    alone = measure.run_measured([sys.executable, "-c", "pass"])
    assert alone["exit"] == 0 and "own_peak_rss_mb" not in alone and alone["peak_rss_mb"] < 100


def test_tree_rss_of_a_gone_process_is_zero():
    assert measure.tree_rss_bytes(2 ** 22 + 12345) == 0
