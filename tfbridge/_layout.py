"""Where tfbridge's code and state live, installed or in a clone; how its host code is started.

The repository keeps the design's layout (``envs/``, ``converters/``, ``legacy_tf1/`` at the top level).
Installed, those folders would be generic top-level modules in a user's site-packages, where they would
collide with anyone else's ``envs`` or ``converters``. So the wheel ships them *inside* this package, as
the private folder ``tfbridge/_tree/`` (setuptools ``package-dir``, pyproject.toml), and nothing imports
them from the user's process: every command runs as ``python -m MODULE`` in a subprocess whose
PYTHONPATH is that folder (the in-environment steps get the same folder from ``envs.venvs``).

=================  ==============================  ===========================================
layout             the tree (``tree()``)           ``$TFBRIDGE_HOME`` default (``home()``)
=================  ==============================  ===========================================
installed (wheel)  ``<site-packages>/tfbridge/     ``$XDG_CACHE_HOME/tfbridge`` (else
                   _tree``                         ``~/.cache/tfbridge``): never site-packages
clone (nox, or     the repository root             unset: ``envs.venvs`` keeps ``<repo>/.tfbridge``
``pip install -e``)                                (CI and the tests are unaffected)
=================  ==============================  ===========================================

Run folders default to ``runs/<stem>`` of the current folder in both layouts (the commands' own default).

Standard library only, Python 3.7 compatible; never imports TensorFlow or the tree's modules.
"""

import os
import signal
import sys
import sysconfig

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
INSTALLED_TREE = os.path.join(PACKAGE_DIR, "_tree")
TOP_LEVEL = ("envs", "converters", "legacy_tf1")  # the tree's packages (never importable by name here)

# tfbridge's subcommands and the host entry point each one runs (``python -m MODULE ARGS``); the nox
# sessions of the same names call ``run_command`` too (noxfile.py).
COMMANDS = {
    "convert-legacy": "converters.pipeline",
    "verify-upgrade": "converters.verify",
    "convert": "converters.convert",
    "npu": "converters.npu_check",
    "envs": "envs",
    "fleet": "converters.fleet",  # many convert_legacy runs from one manifest (docs/fleet.md)
    "fleet-report": "converters.fleet_report",
}


def installed():
    """True when running from an installed wheel (the tree is ``tfbridge/_tree``), False in a clone."""
    return os.path.isdir(os.path.join(INSTALLED_TREE, "converters"))


def tree():
    """The folder holding ``envs/``, ``converters/`` and ``legacy_tf1/``."""
    if installed():
        return INSTALLED_TREE
    return os.path.dirname(PACKAGE_DIR)


def default_home():
    """The per-user cache folder of an installed tfbridge (environments, install logs, test results)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tfbridge")


def home():
    """``$TFBRIDGE_HOME`` when set; installed: the per-user cache folder; clone: None (``envs.venvs``
    uses ``<repo>/.tfbridge``)."""
    if os.environ.get("TFBRIDGE_HOME"):
        return os.environ["TFBRIDGE_HOME"]
    return default_home() if installed() else None


def host_environ(command=None, base=None):
    """The process environment of a host entry point: the tree first on PYTHONPATH; installed, also
    ``TFBRIDGE_HOME`` (default ``home()``) and no bytecode written into site-packages (the TF 1.x
    environments' Python 3.7 would otherwise write ``__pycache__`` folders there); this installation's
    scripts folder on PATH (the ``uv`` that pyproject.toml installs beside ``tfbridge``)."""
    environ = dict(os.environ if base is None else base)
    environ["PYTHONPATH"] = tree()
    environ["PYTHONUNBUFFERED"] = "1"
    if installed():
        environ["TFBRIDGE_HOME"] = home()
        environ["PYTHONDONTWRITEBYTECODE"] = "1"
    scripts = sysconfig.get_path("scripts")
    if scripts and os.path.isdir(scripts):
        path = environ.get("PATH", os.defpath)
        if scripts not in path.split(os.pathsep):
            environ["PATH"] = path + os.pathsep + scripts  # after the user's own PATH: theirs wins
    if command:
        environ["TFBRIDGE_PROG"] = "tfbridge %s" % command  # the usage line of argparse's messages
    return environ


# ``python -m MODULE`` would put the current folder first on sys.path, where a user's own ``envs.py`` or
# ``converters/`` would shadow the tree's: the entry point runs through runpy without it.
LAUNCHER = ("import runpy, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "runpy.run_module(%r, run_name='__main__', alter_sys=True)")


def command_argv(command, args):
    """The argv that runs subcommand ``command``'s entry point with ``args`` (KeyError when unknown):
    ``python -m MODULE ARGS``, except that the current folder is not put on sys.path (``LAUNCHER``)."""
    return [sys.executable, "-c", LAUNCHER % COMMANDS[command]] + [str(arg) for arg in args]


def _terminal_signalled_us():
    """True when this process is in the terminal's foreground process group: a Ctrl-C reached its
    children too."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, OSError, ValueError):
        return False


def wait(process):
    """``(exit status, stdout)`` of ``process`` (``communicate``), seeing a signal through: a terminal's
    Ctrl-C reached the child too, which cleans up (atomic writes) and exits 130; a SIGINT sent to this
    process alone, or a second Ctrl-C, is passed on to it, and so is SIGTERM (the child turns it into the
    same clean stop)."""

    def forward(signum, frame):
        try:
            process.send_signal(signum)
        except OSError:
            pass

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: signals are the main thread's to handle
        previous = None
    interrupts = 0
    try:
        while True:
            try:
                output, _ = process.communicate()
                return process.returncode, output
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > 1 or not _terminal_signalled_us():
                    forward(signal.SIGINT, None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
