"""A full disk under ``--out`` (issue 26): one paragraph, exit 13, no partial folder, the earlier run intact.

``convert_legacy`` (the embedded demo) runs with ``--out`` on a 20 MB tmpfs the test mounts (root only;
skipped elsewhere). A complete run is made there first; then the disk is filled with a file of zeros
leaving a few hundred kB, and each case runs:

- too little space to start: 1 MB left, the check before the first step refuses (``TFBRIDGE_MIN_FREE_MB``
  at its default of 2);
- out of space in the middle of the run: 300 kB left and the check off (``TFBRIDGE_MIN_FREE_MB=0``): a
  step or tfbridge's own write fails with errno 28 (TF 1.13's h5py even crashes with SIGSEGV on it);
- the same into the earlier run's own folder (``--force``): the earlier run must survive it.

CI runs the first and the last; ``nox -s faults`` (``TFBRIDGE_FAULTS=full``) all three.

Each must end in exit 13 (``DiskFullError``) with one paragraph and no traceback, leave no
``.partial-`` folder, and leave the earlier run folder byte for byte as it was.
"""

import os
import subprocess
import sys

import pytest

from tests.integration import _folders

from converters.errors import DiskFullError

pytestmark = pytest.mark.crossenv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISK_MB = 20


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path_factory.mktemp("disk")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % DISK_MB, "tmpfs", str(mount)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % result.stdout.strip())
    try:
        earlier = mount / "earlier"
        made = convert_legacy(earlier)
        assert made.returncode == 0, made.stderr[-3000:]
        yield mount, earlier
    finally:
        subprocess.call(["umount", "-l", str(mount)])


def convert_legacy(out, *extra, **variables):
    environ = dict(os.environ, PYTHONPATH=REPO, **variables)
    environ.pop("TFBRIDGE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "converters.pipeline", "--out", str(out)] + list(extra),
                          cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600)


contents = _folders.file_hashes  # {relative path: sha256} of a folder's files


def fill(mount, leave_bytes):
    """Fill the disk with a file of zeros so that about ``leave_bytes`` stay free; return the file."""
    filler = mount / "filler"
    if filler.exists():
        filler.unlink()
    stat = os.statvfs(str(mount))
    size = max(0, stat.f_bavail * stat.f_frsize - leave_bytes)
    with open(str(filler), "wb") as handle:
        block = b"\0" * (1 << 20)
        while size > 0:
            handle.write(block[:min(size, len(block))])
            size -= len(block)
    return filler


FULL = os.environ.get("TFBRIDGE_FAULTS") == "full"
CASES = {
    "before_a_step": (1000 * 1000, "new", (), {}),
    "during_a_step": (300 * 1000, "new", (), {"TFBRIDGE_MIN_FREE_MB": "0"}),
    "into_the_earlier_run": (300 * 1000, "earlier", ("--force",), {"TFBRIDGE_MIN_FREE_MB": "0"}),
}


# CI: the check before a step and a full disk under the earlier run's own folder; nox -s faults: every case
@pytest.mark.parametrize("case", sorted(CASES) if FULL else ["before_a_step", "into_the_earlier_run"])
def test_a_full_disk_is_one_paragraph_and_leaves_the_earlier_run_intact(disk, case):
    mount, earlier = disk
    leave, target, extra, variables = CASES[case]
    before = contents(earlier)
    filler = fill(mount, leave)
    try:
        result = convert_legacy(mount / target, *extra, **variables)
    finally:
        filler.unlink()
    sys.stderr.write("disk full, %s: exit %d: %s\n" % (case, result.returncode, result.stderr.strip().splitlines()[-1]))
    assert result.returncode == DiskFullError.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    paragraphs = [line for line in result.stderr.splitlines() if line.startswith("tfbridge: ")]
    assert len(paragraphs) == 1, paragraphs
    assert "is full: " in paragraphs[0] and "MB free of" in paragraphs[0], paragraphs[0]
    assert "give --out a folder on a disk with more room" in paragraphs[0]
    if case == "before_a_step":
        assert "needs at least 2.1 MB free to start" in paragraphs[0], paragraphs[0]
    assert sorted(os.listdir(str(mount))) == ["earlier"], "the partial folder was removed, nothing else written"
    assert contents(earlier) == before, "the earlier run folder is as it was"
    assert ("%s was left as it was" % (mount / target)) in paragraphs[0] or target == "new"
