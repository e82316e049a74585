"""``tfbridge npu`` / ``nox -s npu``: NPU readiness of an existing .tflite, run in the tf2 environment.

Host side, standard library only. Makes the ``tf2`` environment ready (``envs.venvs.ensure``) and runs
``python -m converters.tf2.npu ARGS`` in it from the current folder (FILE is relative to it), leaving with
that step's exit status (README.md, "Exit status"): 0, 10 (``--strict``: not fully int8 or an op left to
the CPU), 5 (an unreadable file), 2 (a bad option), 3 (the environment cannot be made).
"""

import os
import subprocess
import sys

from converters import cli
from envs import venvs


def run(argv, cwd=None):
    log = lambda message: sys.stderr.write(message + "\n")  # noqa: E731
    python = venvs.ensure("tf2", log=log)
    environ = dict(venvs.run_environ("tf2"), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    # -P (Python 3.11, tf2's): the current folder is not put on sys.path, where a user's own
    # ``converters`` would shadow tfbridge's; FILE stays relative to it
    return subprocess.call([python, "-P", "-m", "converters.tf2.npu"] + list(argv), env=environ,
                           cwd=cwd or os.getcwd())


if __name__ == "__main__":
    sys.exit(cli.main(run, step="npu"))
