"""The ``tfbridge`` command: ``tfbridge SUBCOMMAND [options]``, the nox sessions' jobs from any folder.

Each subcommand runs its host entry point (``_layout.COMMANDS``) as ``python -m MODULE ARGS`` in a
subprocess with the tree on PYTHONPATH (``_layout.host_environ``) and leaves with that process's exit
status, so the options (``converters/options.py``, declared once) and the exit codes (README.md, "Exit
status") are the ones of the nox sessions, which call ``run_command`` too. Standard library only.
"""

import os
import subprocess
import sys

from tfbridge import __version__, _layout

USAGE = """usage: tfbridge SUBCOMMAND [options]    (tfbridge SUBCOMMAND --help: its options)

  tfbridge convert-legacy [MODEL] [options]   legacy Keras model -> fully int8 TFLite (no MODEL: the demo)
  tfbridge verify-upgrade MODEL [options]     parity across TF 1.13 / 1.15 / 2.x only
  tfbridge convert MODEL [options]            a TF 2.x model straight to int8
  tfbridge npu FILE.tflite [--target NAME]    an existing .tflite on NPU targets
  tfbridge envs [--rebuild NAME ...]          the environments and their state
  tfbridge fleet MANIFEST --out DIR [--shard I/N] [--jobs N]   many models from one TOML manifest
  tfbridge fleet-report DIR... --out DIR      merge fleet shards into fleet.json and fleet.html
  tfbridge --version

Environments live in $TFBRIDGE_HOME (now: %s); run folders in ./runs/<model-stem> unless --out.
Exit status: 0 pass, 1 a mismatch, 2 and above an error (README.md, "Exit status").
"""

INTERRUPTED = 130


def run_command(command, args, cwd=None, env=None, extra_env=None, stdout=None):
    """Run subcommand ``command`` with ``args``; return its exit status. ``env``: the base environment
    (default ``os.environ``); ``extra_env``: set on top (the nox sessions' prog name). On SIGINT the child
    cleans up (atomic writes) and exits 130 (``_layout.wait``)."""
    environ = _layout.host_environ(command, base=env)
    environ.update(extra_env or {})
    process = subprocess.Popen(_layout.command_argv(command, args), env=environ, cwd=cwd, stdout=stdout)
    return _layout.wait(process)[0]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE % (_layout.home() or os.path.join(_layout.tree(), ".tfbridge")))
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        sys.stdout.write("tfbridge %s (%s: %s)\n" % (
            __version__, "installed" if _layout.installed() else "clone", _layout.tree()))
        return 0
    command = argv[0]
    if command not in _layout.COMMANDS:
        # the same names as the nox sessions are accepted (convert_legacy -> convert-legacy)
        command = command.replace("_", "-")
    if command not in _layout.COMMANDS:
        sys.stderr.write("tfbridge: unknown subcommand %r; known: %s. Run `tfbridge --help`.\n"
                         % (argv[0], ", ".join(_layout.COMMANDS)))
        return 2
    try:
        return run_command(command, argv[1:])
    except KeyboardInterrupt:
        return INTERRUPTED


def console_main():
    """The ``tfbridge`` console script (pyproject.toml ``[project.scripts]``)."""
    sys.exit(main())
