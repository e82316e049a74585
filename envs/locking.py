"""Writing the hash-pinned lock file of an environment from its declaration (``nox -s lock``).

Locks are resolved with ``uv pip compile`` for the environment's Python version and platform, so they
can be generated on any host, whatever Python it has. Every distribution of every pinned version is
hashed, and the install uses ``--require-hashes --no-deps``: what is installed is exactly the lock.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from envs import paths, registry
from envs.errors import EnvError

HEADER = (
    "# Lock of the tfbridge environment {name} (Python {python}, {platform}).\n"
    "# Generated from its declaration in envs/registry.py; do not edit by hand.\n"
    "# Regenerate with:  nox -s lock -- {name}\n"
)


DERIVED_HEADER = (
    "# Lock of the tfbridge environment {name} (Python {python}, {platform}).\n"
    "# Generated from the rule in envs/registry.py (tf_environment); do not edit by hand.\n"
    "# Regenerate with:  nox -s lock -- {name}   (or delete it: it is made again on first use)\n"
    + "# Declaration fingerprint: {fingerprint}\n"
)

HOST_TOOLS_LOCK = "host-tools"
# The line of a rule-made environment's lock (``--tf``) that names the declaration it was resolved from:
# a lock whose fingerprint differs (another Python found, the rule changed) is resolved again.
FINGERPRINT = "# Declaration fingerprint: "


def shipped_names():
    """The rule-made environments whose locks tfbridge ships (``envs/locks/extra/``: the test releases')."""
    import glob

    return sorted((os.path.basename(path)[:-4] for path in glob.glob(paths.shipped_lock_path("*"))),
                  key=lambda name: registry.tf_version_key(name[2:]))


def fingerprint(env):
    """sha256 of what a lock is resolved from: Python, platform, requirements (for ``ensure_lock``)."""
    text = json.dumps([env.python, env.platform, list(env.requirements)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lock_fingerprint(path):
    """The fingerprint a lock file records, or None (no such file, or a built-in environment's lock)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(FINGERPRINT):
                    return line[len(FINGERPRINT):].strip()
                if not line.startswith("#"):
                    return None
    except OSError:
        return None
    return None


def ensure_lock(env, log=print):
    """The lock of a rule-made environment (``--tf``), ready at ``paths.lock_path(env.name)`` under
    ``$TFBRIDGE_HOME/locks``: kept while its fingerprint matches the declaration; else the lock tfbridge
    ships for it (``envs/locks/extra/``, committed for the versions its tests use) when that one matches;
    else resolved now with ``uv pip compile`` (``write_lock``: seconds, needs the package registry).
    Returns the path. Raises EnvError when resolving fails (the paragraph names the version and why)."""
    target = paths.lock_path(env.name)
    wanted = fingerprint(env)
    if lock_fingerprint(target) == wanted:
        return target
    shipped = paths.shipped_lock_path(env.name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if lock_fingerprint(shipped) == wanted:
        temporary = "%s.tmp-%d" % (target, os.getpid())
        shutil.copyfile(shipped, temporary)
        os.replace(temporary, target)
        log("locking %s: using the lock shipped with tfbridge (%s)"
            % (env.name, os.path.relpath(shipped, paths.REPO_ROOT)))
        return target
    started = time.time()
    write_lock(env.name, log=log, env=env, target=target)
    log("locking %s: resolved in %.1f s (Python %s)" % (env.name, time.time() - started, env.python))
    return target


def write_lock(name, log=print, env=None, target=None):
    """Resolve environment ``name`` and write ``envs/locks/<name>.txt`` atomically.

    ``host-tools`` is the pseudo-environment of what the host itself needs (nox, uv), installed by
    .ci/run into the Python that runs nox. A rule-made environment (``tf2.12``) is written to
    ``envs/locks/extra/<name>.txt`` (the lock tfbridge ships; ``target``: elsewhere), with its declaration's
    fingerprint in the header.
    """
    if name == HOST_TOOLS_LOCK:
        env = registry.Environment(HOST_TOOLS_LOCK, "3.11", registry.HOST_TOOLS, "host tools",
                                   "x86_64-manylinux_2_28")
    elif env is None:
        env = registry.get(name)
    derived = registry.is_derived(name)
    if target is None:
        target = paths.shipped_lock_path(name) if derived else paths.lock_path(name)
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
            lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
            if derived:
                raise EnvError(
                    "Locking environment %s (the rule's requirements %s on Python %s) failed: uv could not "
                    "resolve them: %s. The package registry may have no wheel of that TensorFlow for this Python, "
                    "or be unreachable." % (name, ", ".join(env.requirements), env.python,
                                             " ".join(lines[-6:])[:1200]),
                    step="lock", hint="Check `pip index versions tensorflow --python-version %s`; give a release "
                                      "that exists (registry.TF_RELEASES lists them) or leave it out of --tf."
                                      % env.python)
            raise EnvError("Resolving environment %s failed:\n%s" % (name, result.stdout.strip()))
        with open(resolved) as handle:
            body = handle.read().replace(requirements, "envs/registry.py")
    temporary = target + ".tmp"
    with open(temporary, "w") as handle:
        if derived:
            handle.write(DERIVED_HEADER.format(name=name, python=env.python, platform=env.platform,
                                               fingerprint=fingerprint(env)))
        else:
            handle.write(HEADER.format(name=name, python=env.python, platform=env.platform))
        handle.write(body)
    os.replace(temporary, target)
    log("locking %s: wrote %s" % (name, target if derived else os.path.relpath(target, paths.REPO_ROOT)))
    return target
