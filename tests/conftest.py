"""Test configuration shared by every environment (Python 3.7 compatible).

Markers (declared here from the registry, used with --strict-markers):

- ``unit``: pure logic, no TensorFlow; runs in the ``host`` environment.
- ``crossenv``: driven from the ``host`` environment, runs real steps inside the TF environments as
  subprocesses (``envs.backends``, as the orchestrators do) and checks the files they exchange.
- one marker per TF environment (``tf1_13``, ``tf1_15``, ``tf2``): runs *inside* that environment.

``nox -s tests`` runs each group in its environment. Every test must carry exactly one of them.

File names say where a module may even be *imported*: ``tests/unit/*`` and ``*_crossenv.py`` only on
the host, ``*_tf1_13.py`` / ``*_tf1_15.py`` / ``*_tf2.py`` only inside that environment (a tf2 test
module may use Python 3.11 syntax and TF 2 APIs at import time; a TF 1.x environment must not collect it).
"""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from envs import registry  # noqa: E402

PLACES = ["unit", "crossenv"] + [registry.marker_name(name) for name in registry.TF_ENVIRONMENTS]


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: pure logic without TensorFlow (host environment)")
    config.addinivalue_line("markers", "crossenv: host-driven test running steps in several TF environments")
    for name in registry.TF_ENVIRONMENTS:
        config.addinivalue_line(
            "markers", "%s: runs inside the %s environment" % (registry.marker_name(name), name)
        )


def _place_of_file(path):
    """The place a test file belongs to by its name, or None if it may be imported anywhere."""
    parts = path.replace(os.sep, "/").split("/")
    if "unit" in parts[-2:-1]:
        return "host"
    stem = os.path.splitext(parts[-1])[0]
    if stem.endswith("_crossenv"):
        return "host"
    for name in registry.TF_ENVIRONMENTS:
        if stem.endswith("_" + registry.marker_name(name)):
            return name
    return None


def pytest_ignore_collect(collection_path, config):
    path = str(collection_path)
    if not path.endswith(".py"):
        return None
    place = _place_of_file(path)
    if place is not None and place != os.environ.get("TFBRIDGE_ENV", "host"):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        places = [name for name in PLACES if item.get_closest_marker(name) is not None]
        if len(places) != 1:
            raise pytest.UsageError(
                "%s must carry exactly one of the markers %s (has %s)" % (item.nodeid, PLACES, places)
            )


@pytest.fixture(scope="session")
def current_env():
    """The environment this pytest runs in (set by envs.venvs.run_environ), or 'host'."""
    return os.environ.get("TFBRIDGE_ENV", "host")
