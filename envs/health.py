"""Does an installed environment still hold what its lock pins? A cheap check from files alone.

For whom: ``envs.venvs`` (before reusing an environment), ``envs.report`` (``nox -s envs``) and
``converters.steps`` (to classify a failed step). Nothing is imported from the environment and its
interpreter is not started: the check reads the lock file and the venv's ``site-packages`` from the host
process. Standard library only; Python 3.7 compatible.

What is checked, for every ``name==version`` the lock pins:

1. a ``*.dist-info`` folder of that distribution exists, with that version (names compared as PEP 503
   normalises them, so ``Keras-2.3.1.dist-info`` is ``keras==2.3.1``);
2. every file its ``RECORD`` lists exists and has the size ``RECORD`` gives: one ``stat`` per file, no
   read. This finds a package folder deleted by hand, a half-finished ``pip uninstall`` and a truncated
   file anywhere, including the shared libraries TensorFlow loads (tf2 has ~43,000 such files: tens of
   milliseconds once the file system cache is warm);
3. the sha256 ``RECORD`` gives for the top-level ``__init__.py`` of the packages the steps import
   (``KEY_PACKAGES``: tensorflow, keras, tf_keras, h5py, numpy): a few small reads, for an edit that kept
   a file's size. Hashing every file would catch any edit, but costs seconds for TensorFlow (hundreds of MB).

What it does not find: a same-size edit of any other file, or a dependency's damage outside
``site-packages`` (the base interpreter). A step that then fails to import a locked package is still
reported as a broken environment, by ``converters.steps`` (see ``pinned_distribution``).
"""

import base64
import csv
import glob
import hashlib
import os
import re

# Distributions whose top-level __init__.py is hashed (check 3): what the in-environment steps import.
KEY_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "tf-keras", "h5py", "numpy")

# Import names whose distribution is not the import name normalised (for ``pinned_distribution``).
IMPORT_ALIASES = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "yaml": ("pyyaml",),
    "PIL": ("pillow",),
    "skimage": ("scikit-image",),
    "sklearn": ("scikit-learn",),
    "google": ("protobuf",),
    "ai_edge_litert": ("ai-edge-litert",),
    "jinja2": ("jinja2",),
    "pywt": ("pywavelets",),
}

_TOP_INIT = re.compile(r"^[^/]+/__init__\.py$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def normalize(name):
    """PEP 503 normal form of a distribution name: ``Keras_Applications`` -> ``keras-applications``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock_file):
    """``{normalised name: (name, version)}`` of every ``name==version`` line of a lock (hash lines,
    comments and continuation lines are skipped)."""
    pins = {}
    with open(lock_file) as handle:
        for line in handle:
            match = _PIN.match(line)
            if match:
                pins[normalize(match.group(1))] = (match.group(1), match.group(2))
    return pins


def site_packages(venv):
    """The venv's ``site-packages`` folder, or None (no or several ``lib/pythonX.Y``)."""
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    return found[0] if len(found) == 1 else None


def installed_distributions(site):
    """``{normalised name: (version, metadata folder)}`` from the folder names: ``*.dist-info`` (wheel
    installers write ``{escaped name}-{version}.dist-info``) and ``*.egg-info`` (pip without ``wheel`` builds
    an sdist such as TF 1.x's gast 0.2.2 with ``setup.py install``: ``{name}-{version}-py3.7.egg-info``);
    nothing is read. A dist-info wins over an egg-info of the same name."""
    found = {}
    for entry in sorted(os.listdir(site), key=lambda entry: entry.endswith(".dist-info")):
        if entry.endswith(".dist-info"):
            name, _, version = entry[:-len(".dist-info")].partition("-")
        elif entry.endswith(".egg-info"):
            name, _, rest = entry[:-len(".egg-info")].partition("-")
            version = rest.split("-py")[0]
        else:
            continue
        if name and version:
            found[normalize(name)] = (version, os.path.join(site, entry))
    return found


def _read_installed_files(egg_info):
    """An egg-info's ``installed-files.txt`` as RECORD-like rows ``(path from site-packages, "", "")`` (it
    lists files relative to the egg-info folder, with no size nor hash), or None if it has none."""
    try:
        with open(os.path.join(egg_info, "installed-files.txt")) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return None
    site = os.path.dirname(egg_info)
    return [(os.path.relpath(os.path.normpath(os.path.join(egg_info, line)), site), "", "") for line in lines]


def _same_version(installed, pinned):
    # PEP 440 normal forms differ only in case and in a leading "v" here; the installers write the
    # normal form the lock also has, so anything else is a real difference.
    return installed.lower().lstrip("v") == pinned.lower().lstrip("v")


def _read_record(dist_info):
    """The rows ``(path, hash, size)`` of a dist-info's RECORD, or None if it has none."""
    try:
        with open(os.path.join(dist_info, "RECORD"), newline="") as handle:
            return [row for row in csv.reader(handle) if len(row) >= 3]
    except OSError:
        return None


def _sha256_field(path):
    with open(path, "rb") as handle:
        digest = base64.urlsafe_b64encode(hashlib.sha256(handle.read()).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def problems(venv, lock_file):
    """What the environment at ``venv`` lacks of what ``lock_file`` pins: a list of one-line reasons,
    e.g. ``["keras 2.3.1 is missing (the lock pins it)"]``; empty when it holds everything.

    Extra distributions (pip and setuptools seeded into the venv, anything installed by hand) are not
    problems. A file listed by two pinned distributions (tf2 installs both ``tensorflow``, which tf-keras
    requires, and ``tensorflow-cpu``: the same files, slightly different builds, the last one written
    wins) is fine when it matches either RECORD. An unreadable lock raises OSError.
    """
    site = site_packages(venv)
    if site is None:
        return ["its site-packages folder is missing (%s)" % os.path.join(venv, "lib", "python*", "site-packages")]
    installed = installed_distributions(site)
    found = []
    # RECORD path -> (size, owner); a path two distributions list collects every size in ``alternatives``
    expected = {}
    alternatives = {}
    hashed = {}  # RECORD path -> {sha256 fields}: the top-level __init__.py of KEY_PACKAGES
    for key, (name, version) in sorted(lock_pins(lock_file).items()):
        display = "%s %s" % (name, version)
        if key not in installed:
            found.append("%s is missing (the lock pins it)" % display)
            continue
        have, dist_info = installed[key]
        if not _same_version(have, version):
            found.append("%s is %s, the lock pins %s" % (name, have, version))
            continue
        if dist_info.endswith(".egg-info"):  # a legacy install: its files exist, no size or hash to check
            rows = _read_installed_files(dist_info) or []
            lost = [path for path, _, _ in rows if not path.endswith(".pyc") and not os.path.exists(
                os.path.join(site, path))]
            if lost:
                found.append("%s is incomplete: %s is missing" % (display, lost[0]))
            continue
        rows = _read_record(dist_info)
        if rows is None:
            found.append("%s has no RECORD (%s), so its files cannot be checked" % (display, dist_info))
            continue
        key_package = key in KEY_PACKAGES
        for path, digest, size in rows:
            if not size or path.endswith(".pyc"):
                # RECORD itself, files listed without a size, and bytecode caches: a wheel may ship .pyc files
                # (numpy 1.26.4: numpy/distutils/__pycache__/) that the install's compile step rewrites, and
                # Python remakes a missing one (measured: every TF 2.15/2.16 environment was "broken" by it)
                continue
            if path in expected:
                alternatives.setdefault(path, {expected[path][0]}).add(size)
            else:
                expected[path] = (size, display)
            if key_package and _TOP_INIT.match(path) and digest.startswith("sha256="):
                hashed.setdefault(path, set()).add(digest)
    damaged = set()
    prefix = site + os.sep
    for path, (size, owner) in expected.items():
        if owner in damaged:
            continue  # one line per distribution: the first file that is wrong
        try:
            actual = os.stat(prefix + path).st_size
        except OSError:
            problem = "%s is incomplete: %s is missing" % (owner, path)
        else:
            sizes = alternatives.get(path) or (size,)
            if str(actual) not in sizes:
                problem = "%s is damaged: %s has %d bytes, its RECORD says %s" % (
                    owner, path, actual, " or ".join(sorted(sizes)))
            elif path in hashed and _sha256_field(prefix + path) not in hashed[path]:
                problem = "%s is damaged: %s differs from its RECORD (sha256)" % (owner, path)
            else:
                continue
        damaged.add(owner)
        found.append(problem)
    return found


def pinned_distribution(lock_file, module):
    """``(name, version)`` of the distribution the lock pins that provides the import ``module``
    (``keras``, ``tf_keras``, ``yaml``, ``tensorflow.python``), or None when the lock does not pin it."""
    top = module.split(".")[0]
    try:
        pins = lock_pins(lock_file)
    except OSError:
        return None
    for candidate in IMPORT_ALIASES.get(top, ()) + (top,):
        if normalize(candidate) in pins:
            return pins[normalize(candidate)]
    return None
