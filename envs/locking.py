"""Writing the hash-pinned lock file of an environment from its declaration (``nox -s lock``).

Locks are resolved with ``uv pip compile`` for the environment's Python version and platform, so they
can be generated on any host, whatever Python it has. Every distribution of every pinned version is
hashed, and the install uses ``--require-hashes --no-deps``: what is installed is exactly the lock.
"""

import os
import subprocess
import tempfile

from envs import registry
from envs.errors import EnvError
from envs.venvs import REPO_ROOT, lock_path

HEADER = (
    "# Lock of the tfbridge environment {name} (Python {python}, {platform}).\n"
    "# Generated from its declaration in envs/registry.py; do not edit by hand.\n"
    "# Regenerate with:  nox -s lock -- {name}\n"
)


HOST_TOOLS_LOCK = "host-tools"


def write_lock(name, log=print):
    """Resolve environment ``name`` and write ``envs/locks/<name>.txt`` atomically.

    ``host-tools`` is the pseudo-environment of what the host itself needs (nox, uv), installed by
    .ci/run into the Python that runs nox.
    """
    if name == HOST_TOOLS_LOCK:
        env = registry.Environment(HOST_TOOLS_LOCK, "3.11", registry.HOST_TOOLS, "host tools",
                                   "x86_64-manylinux_2_28")
    else:
        env = registry.get(name)
    target = lock_path(name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        requirements = os.path.join(scratch, "requirements.in")
        with open(requirements, "w") as handle:
            handle.write("\n".join(env.requirements) + "\n")
        resolved = os.path.join(scratch, "lock.txt")
        command = [
            "uv", "pip", "compile", "--quiet", "--generate-hashes", "--no-header",
            "--python-version", env.python, "--python-platform", env.platform,
            requirements, "-o", resolved,
        ]
        log("locking %s: %s" % (name, " ".join(command)))
        try:
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    universal_newlines=True)
        except OSError:
            raise EnvError("Locking needs uv on PATH (`pip install uv`); it was not found.")
        if result.returncode != 0:
            raise EnvError("Resolving environment %s failed:\n%s" % (name, result.stdout.strip()))
        with open(resolved) as handle:
            body = handle.read().replace(requirements, "envs/registry.py")
    temporary = target + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(HEADER.format(name=name, python=env.python, platform=env.platform))
        handle.write(body)
    os.replace(temporary, target)
    log("locking %s: wrote %s" % (name, os.path.relpath(target, REPO_ROOT)))
    return target
