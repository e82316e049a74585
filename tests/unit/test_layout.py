"""The import boundary of the host: the folder says where the code runs.

Host modules (every module of ``envs/`` and every top-level ``converters/*.py``, discovered by glob so that
new ones are covered) are standard library only: each imports in a fresh interpreter in which numpy,
TensorFlow, Keras, tf_keras and h5py cannot be imported, and none of them imports ``converters.shared``
or ``converters.tf2``, at the top or lazily inside a function (checked on their syntax trees, so a lazy
import on a path no test takes is caught too). ``noxfile.py`` imports nox and is left out of the import
check; it is part of the syntax check.
"""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCKED = ("numpy", "tensorflow", "keras", "tf_keras", "h5py")
FORBIDDEN_PACKAGES = ("converters.shared", "converters.tf2")

# Runs in a fresh interpreter: refuse the heavy packages, then import one module.
BLOCKING_IMPORT = """
import importlib, json, sys
BLOCKED = set(%r)

class Blocker(object):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked on the host: %%s" %% name)
        return None

sys.meta_path.insert(0, Blocker())
sys.path.insert(0, %r)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
""" % (BLOCKED, REPO_ROOT)


def module_name(path):
    relative = os.path.relpath(path, REPO_ROOT)[:-len(".py")].replace(os.sep, ".")
    return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def host_files():
    files = sorted(glob.glob(os.path.join(REPO_ROOT, "envs", "**", "*.py"), recursive=True))
    files += sorted(glob.glob(os.path.join(REPO_ROOT, "converters", "*.py")))
    # the installed command and the host API (tfbridge.inprocess runs in the user's TF process: left out)
    files += sorted(path for path in glob.glob(os.path.join(REPO_ROOT, "tfbridge", "*.py"))
                    if os.path.basename(path) != "inprocess.py")
    return files


def imported_modules(path):
    """Every module ``path`` imports anywhere in its code (top level, functions, branches), absolute."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), filename=path)
    package = module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append(base)
            # ``from converters import tf2`` imports the package converters.tf2
            found += ["%s.%s" % (base, alias.name) for alias in node.names if alias.name != "*"]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append(node.args[0].value)
    return found


def forbidden_in(path):
    return sorted(set(name for name in imported_modules(path)
                      if any(name == p or name.startswith(p + ".") for p in FORBIDDEN_PACKAGES)))


def import_blocked(module):
    return subprocess.run([sys.executable, "-c", BLOCKING_IMPORT, module], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def test_the_host_modules_are_discovered():
    names = [module_name(path) for path in host_files()]
    for expected in ("envs.registry", "envs.venvs", "converters.errors", "converters.convert", "converters.verify"):
        assert expected in names
    assert not [n for n in names if n.startswith(FORBIDDEN_PACKAGES)], "only the top level of converters/"


@pytest.mark.parametrize("path", host_files(), ids=lambda path: module_name(path))
def test_host_module_imports_without_numpy_or_tensorflow(path):
    result = import_blocked(module_name(path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("path", host_files() + [os.path.join(REPO_ROOT, "noxfile.py")],
                         ids=lambda path: module_name(path))
def test_host_module_never_imports_shared_or_tf2_code(path):
    assert forbidden_in(path) == [], "%s imports code that runs only inside a TF environment" % path


def test_the_blocker_refuses_numpy():
    """The import check can fail: a module that needs numpy does not import under the blocker."""
    result = import_blocked("converters.shared.metrics")
    assert result.returncode != 0 and "blocked on the host: numpy" in result.stderr


def test_the_syntax_check_sees_lazy_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    sample = package / "sample.py"
    sample.write_text("import os\n"
                      "def convert():\n"
                      "    from converters.tf2 import quantize\n"
                      "    from converters import shared\n"
                      "    importlib.import_module('converters.tf2.npu')\n")
    found = imported_modules(str(sample))
    assert {"converters.tf2.quantize", "converters.shared", "converters.tf2.npu"} <= set(found)
