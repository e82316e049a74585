"""Every module that runs in TF 1.x imports in tf1.13 (Python 3.7, TF 1.13), and none reaches converters.tf2.

Runs inside tf1.13. The modules (discovered by glob, so that new ones are covered): every module of
``legacy_tf1/``, every top-level ``converters/*.py`` (host and stdlib modules the steps share) and every
module of ``converters/shared/``. Each is imported in a fresh interpreter of this environment, so an
import that works only after another module was imported is not hidden; none may import
``converters.tf2`` (Python 3.11 code), neither at import time (``sys.modules`` afterwards) nor lazily
inside a function (its syntax tree).
"""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf1_13

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMPORT_ONE = """
import importlib, json, sys
sys.path.insert(0, %r)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m == "converters.tf2" or m.startswith("converters.tf2."))))
""" % REPO_ROOT


def module_name(path):
    relative = os.path.relpath(path, REPO_ROOT)[:-len(".py")].replace(os.sep, ".")
    return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def tf1_files():
    files = []
    for pattern in (("legacy_tf1", "*.py"), ("converters", "*.py"), ("converters", "shared", "*.py")):
        files += sorted(glob.glob(os.path.join(REPO_ROOT, *pattern)))
    return files


def imports_of(path):
    """Every absolute module name ``path`` imports anywhere (``from a import b`` also counts as a.b)."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append(node.module)
            found += ["%s.%s" % (node.module, alias.name) for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Str)):
            found.append(node.args[0].s)
    return found


def test_this_is_python_3_7_and_the_modules_are_discovered():
    assert sys.version_info[:2] == (3, 7)
    names = [module_name(path) for path in tf1_files()]
    for expected in ("legacy_tf1.loading", "legacy_tf1.resave", "converters.errors", "converters.shared.parity"):
        assert expected in names


def test_the_syntax_check_sees_a_lazy_import_of_tf2_code(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(u"import os\n"
                      u"def report():\n"
                      u"    from converters.tf2 import npu\n"
                      u"    from converters import tf2\n")
    assert {"converters.tf2.npu", "converters.tf2"} <= set(imports_of(str(sample)))


@pytest.mark.parametrize("path", tf1_files(), ids=lambda path: module_name(path))
def test_module_imports_in_tf1_13_without_tf2_code(path):
    result = subprocess.run([sys.executable, "-c", IMPORT_ONE, module_name(path)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    lazy = [name for name in imports_of(path) if name == "converters.tf2" or name.startswith("converters.tf2.")]
    assert lazy == [], "%s imports Python 3.11 code of converters.tf2" % path
