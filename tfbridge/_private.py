"""Importing the tree's modules (``envs``, ``converters``, ``legacy_tf1``) in the user's own process
without taking those generic names from the user (``tfbridge/_layout.py`` says why they are private).

``tree_imports()`` is a context manager: inside it, ``import converters.tf2.quantize`` finds tfbridge's
copy; on leaving, tfbridge's modules are put aside (kept for the next use, so their classes stay the
same objects: ``tfbridge.errors.ConversionError`` *is* the class the tree raises) and whatever the user
had under those names (their own ``envs`` package, say) is back in ``sys.modules``. Used for the error
classes (``tfbridge.errors``) and by ``tfbridge.inprocess``; the commands run in subprocesses instead.
Not for threads that import a module of those names at the same moment (one lock serialises tfbridge's
own uses). Standard library only, Python 3.7 compatible.
"""

import contextlib
import importlib
import sys
import threading

from tfbridge import _layout

_KEPT = {}  # tfbridge's own modules of the tree, by name, between uses
_LOCK = threading.RLock()


def _of_tree(name):
    return name.split(".")[0] in _layout.TOP_LEVEL


@contextlib.contextmanager
def tree_imports():
    with _LOCK:
        theirs = dict((name, module) for name, module in sys.modules.items() if _of_tree(name))
        for name in theirs:
            del sys.modules[name]
        sys.modules.update(_KEPT)
        folder = _layout.tree()
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
        try:
            yield
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
            for name in [name for name in sys.modules if _of_tree(name)]:
                _KEPT[name] = sys.modules.pop(name)
            sys.modules.update(theirs)
