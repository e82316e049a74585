"""Where tfbridge keeps its environments on disk: the repository, ``$TFBRIDGE_HOME``, each venv, its lock
and its install log.

Paths only, computed from the environment's name (nothing is created or read here), for ``envs.venvs``
(making the venvs) and ``envs.locking`` (writing their locks), which both sit above this module.
Standard library only; Python 3.7 compatible.
"""

import os

from envs import registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_DIR = os.path.join(REPO_ROOT, "envs", "locks")


def home():
    """``$TFBRIDGE_HOME``, default ``<repo>/.tfbridge``: venvs, rule-made locks, logs and caches."""
    return os.environ.get("TFBRIDGE_HOME") or os.path.join(REPO_ROOT, ".tfbridge")


def venv_dir(name):
    return os.path.join(home(), "envs", name)


def python_of(name):
    return os.path.join(venv_dir(name), "bin", "python")


def lock_path(name):
    """The lock an environment installs from: ``envs/locks/<name>.txt`` for the built-in ones (committed),
    ``$TFBRIDGE_HOME/locks/<name>.txt`` for one made from the rule (``--tf``: locked on first use,
    ``envs.locking.ensure_lock``)."""
    if registry.is_derived(name):
        return os.path.join(home(), "locks", name + ".txt")
    return os.path.join(LOCK_DIR, name + ".txt")


def shipped_lock_path(name):
    """Where tfbridge ships the lock of a rule-made environment (``nox -s lock -- tf2.12``; used when its
    declaration fingerprint matches, see ``envs.locking.ensure_lock``)."""
    return os.path.join(LOCK_DIR, "extra", name + ".txt")


def log_path(name):
    return os.path.join(home(), "logs", "install-%s.log" % name)
