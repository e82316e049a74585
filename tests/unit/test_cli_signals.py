"""A second SIGTERM cannot break off the cleanup the first one started (``converters.cli``).

A killed fleet process sends its model processes ``PR_SET_PDEATHSIG``'s SIGTERM once for each of its threads
that dies while the child is reparented among them: the second one used to arrive during the run's
``finally`` and leave its partial folder behind (seen in CI: test_fleet_crossenv's killed shard). A real
child process runs ``cli.main`` with a cleanup that takes a second; the test sends SIGTERM, then two more
during the cleanup, and checks the cleanup finished and the exit status is the interrupt's.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from converters.errors import Interrupted

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = """
import os, sys, time
sys.path.insert(0, %r)
from converters import cli

def run(argv):
    folder = argv[0]
    os.makedirs(os.path.join(folder, "partial"))
    open(os.path.join(folder, "ready"), "w").close()
    try:
        while True:
            time.sleep(0.05)
    finally:
        open(os.path.join(folder, "cleaning"), "w").close()
        time.sleep(1.0)  # the later SIGTERMs arrive here
        os.rmdir(os.path.join(folder, "partial"))
        open(os.path.join(folder, "cleaned"), "w").close()

sys.exit(cli.main(run, [sys.argv[1]], step="test"))
""" % REPO


def _wait_for(path, seconds=30):
    deadline = time.time() + seconds
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path), path


def test_a_second_sigterm_does_not_break_off_the_cleanup(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True)
    try:
        _wait_for(str(tmp_path / "ready"))
        child.send_signal(signal.SIGTERM)
        _wait_for(str(tmp_path / "cleaning"))
        child.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == Interrupted.exit_code, err
    assert os.path.exists(str(tmp_path / "cleaned")) and not os.path.exists(str(tmp_path / "partial")), err
    assert "interrupted" in err and "Traceback" not in err
