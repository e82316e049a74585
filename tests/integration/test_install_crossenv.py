"""Installed tfbridge: a wheel built from this clone, installed into a fresh virtualenv outside the repository.

What a new user does: ``pip install <wheel>``, then ``tfbridge convert-legacy`` (the demo) from a folder of
their own, and the Python API from a script there. Checked: the wheel adds one top-level name
(``tfbridge``: the tree is ``tfbridge/_tree/...``) and ships the locks, the report template and the VX op
table; the demo passes from a folder that holds the user's own ``envs.py`` and ``converters/`` (generic
names that must not collide with tfbridge's); nothing is written into site-packages or the clone; the
API's ``Report`` has the CLI's verdict; the API raises typed errors; docs/api.md's host example runs as written.

Cost: the venv and the wheel (pip builds it with the build backend from the package registry, as ``pip
install .`` does) ~20 s; the demo ~60-90 s in the repository's environments (``TFBRIDGE_HOME`` points at
them: no environment is built); the API's run of the same demo is skipped as unchanged (~5 s).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from envs import paths, venvs
from tests.integration._doc_examples import example

pytestmark = pytest.mark.crossenv

REPO_ROOT = venvs.REPO_ROOT
# not part of a clone's source (pip would not see them either): VCS, environments, caches, run folders
LEFT_OUT = (".git", ".tfbridge", ".nox", "runs", "build", "dist", "__pycache__", ".pytest_cache")


def user_environ(home):
    """The environment of a user's shell: none of the test harness's PYTHONPATH (it points at the clone)."""
    environ = dict(os.environ, TFBRIDGE_HOME=home)
    for variable in ("PYTHONPATH", "VIRTUAL_ENV", "TFBRIDGE_ENV", "TFBRIDGE_ERROR_FILE", "TFBRIDGE_RESULT_FILE"):
        environ.pop(variable, None)
    return environ


def run(argv, cwd, environ, timeout=900):
    return subprocess.run(argv, cwd=str(cwd), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout)


def snapshot(root, skip=()):
    """{relative path: (size, mtime_ns)} of every file under ``root``, except folders named in LEFT_OUT
    (for the clone) and the paths in ``skip``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            status = os.stat(path)
            found[os.path.relpath(path, root)] = (status.st_size, status.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, the venv's site-packages, the wheel) for a wheel built from a copy of this clone."""
    base = tmp_path_factory.mktemp("install")
    source = base / "clone"
    shutil.copytree(REPO_ROOT, str(source), ignore=shutil.ignore_patterns(*LEFT_OUT + ("*.egg-info",)))
    interpreter = getattr(sys, "_base_executable", None) or sys.executable
    environ = user_environ(paths.home())
    result = run([interpreter, "-m", "venv", str(base / "venv")], base, environ)
    assert result.returncode == 0, result.stdout
    python = str(base / "venv" / "bin" / "python")
    result = run([python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(source)],
                 base, environ)
    assert result.returncode == 0, result.stdout[-3000:]
    (wheel,) = list((base / "dist").glob("tfbridge-*.whl"))
    # --no-deps: uv, the one dependency, is on PATH already; the test needs no download of it
    result = run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], base, environ)
    assert result.returncode == 0, result.stdout[-3000:]
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base, environ)
    return python, site.stdout.strip(), wheel


def test_the_wheel_adds_only_tfbridge_and_ships_the_data_files(installed):
    _, _, wheel = installed
    with zipfile.ZipFile(str(wheel)) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode()
    assert top_level.split() == ["tfbridge"]
    assert sorted(set(name.split("/")[0] for name in names if not name.startswith("tfbridge-"))) == ["tfbridge"]
    for data in ("envs/locks/tf1.13.txt", "envs/locks/tf1.15.txt", "envs/locks/tf2.txt",
                 "converters/tf2/templates/report.html.j2", "converters/tf2/vx_delegate_ops.json"):
        assert "tfbridge/_tree/" + data in names, data
    # every package of the tree is shipped (setup.py finds them: a new subpackage needs no edit)
    for folder, _, files in os.walk(os.path.join(REPO_ROOT, "converters")):
        if "__init__.py" in files:
            relative = os.path.relpath(os.path.join(folder, "__init__.py"), REPO_ROOT).replace(os.sep, "/")
            assert "tfbridge/_tree/" + relative in names, relative


def test_the_demo_from_a_users_folder_writes_only_there_and_the_api_agrees(installed, tmp_path):
    python, site_packages, _ = installed
    tfbridge = os.path.join(os.path.dirname(python), "tfbridge")
    work = tmp_path / "my project"
    (work / "converters").mkdir(parents=True)
    # a user's own modules with tfbridge's generic names: neither must be imported by tfbridge, nor lost
    (work / "envs.py").write_text("MINE = True\n")
    (work / "converters" / "__init__.py").write_text("raise ImportError('the user converters were imported')\n")
    home = paths.home()
    environ = user_environ(home)
    skip = {os.path.join(REPO_ROOT, name) for name in LEFT_OUT} | {os.path.abspath(home)}
    clone_before, site_before = snapshot(REPO_ROOT, skip), snapshot(site_packages)

    version = run([tfbridge, "--version"], work, environ)
    assert version.returncode == 0 and "installed" in version.stdout and site_packages in version.stdout
    demo = run([tfbridge, "convert-legacy"], work, environ)
    assert demo.returncode == 0, demo.stdout[-4000:]
    assert "verdict: pass" in demo.stdout
    assert (work / "runs" / "demo_face" / "report.json").exists()
    assert (work / "runs" / "demo_face" / "model_int8.tflite").exists()

    api = run([python, "-c", """
import json, sys
sys.path.insert(0, '.')
import envs                                  # the user's own
import tfbridge
report = tfbridge.convert_legacy(quiet=True)  # the same demo: unchanged, so its stages are skipped
try:
    tfbridge.convert('missing.h5', calib='nowhere')
except tfbridge.errors.InputFileError as error:
    caught = [type(error).__name__, error.exit_code, error.step]
import envs as again
print(json.dumps({'verdict': report.verdict, 'run_dir': report.run_dir, 'envs_is_mine': again.MINE,
                  'cells': [(c.label, c.status) for c in report.parity], 'int8': report.int8.status,
                  'int8_path': report.int8_model, 'io': [report.int8.input_dtype, report.int8.output_dtype],
                  'npu': report.npu.verdict, 'caught': caught}))
"""], work, environ)
    assert api.returncode == 0, api.stdout[-4000:]
    result = json.loads(api.stdout.strip().splitlines()[-1])
    assert result["verdict"] == "pass"  # the CLI's: "verdict: pass", exit 0
    assert result["run_dir"] == str(work / "runs" / "demo_face")
    assert result["envs_is_mine"] is True
    assert result["int8"] == "match" and result["io"] == ["int8", "int8"] and result["npu"] == "ready"
    assert result["int8_path"] == str(work / "runs" / "demo_face" / "model_int8.tflite")
    with open(str(work / "runs" / "demo_face" / "report.json")) as handle:
        written = json.load(handle)
    assert [tuple(cell) for cell in result["cells"]] == [(c["label"], c["status"]) for c in written["parity"]]
    assert result["caught"] == ["InputFileError", 5, "preflight"]

    # docs/api.md's host example, as written, in the same folder (its demo is the one above: skipped as unchanged)
    readme = run([python, "-c", example("host-api")], work, environ)
    assert readme.returncode == 0, readme.stdout[-4000:]
    lines = readme.stdout.strip().splitlines()  # the commands' progress, then the example's prints
    assert "pass %s" % (work / "runs" / "demo_face") in lines, lines
    assert "ready [('imx8mp', 8, 0), ('ethos-u65-256', 8, 0)]" in lines, lines  # the demo: 8 ops, all on the NPU
    assert lines[-1].startswith("InputFileError 5 tfbridge: preflight failed"), lines

    assert snapshot(site_packages) == site_before, "tfbridge wrote into site-packages"
    assert snapshot(REPO_ROOT, skip) == clone_before, "tfbridge wrote into the clone"
