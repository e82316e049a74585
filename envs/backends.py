"""Where a step runs: the shared interface between the orchestrators and the environments.

One ABC states the contract; ``LocalBackend`` runs a module in tfbridge's own venvs, ``DockerBackend``
runs it in the environment's image (the image and Dockerfile helpers live in envs/docker.py).
``ALL_BACKENDS`` picks one by name; the orchestrators choose it with ``--backend`` (exported as
``TFBRIDGE_BACKEND`` so that every step of one run uses the same one). The one step runner that uses a
backend is ``converters.steps.StepRunner``.

Network sandbox (defence in depth: a step that loads an untrusted model never needs the network): the
docker backend runs every container with ``--network none``; the local backend wraps each step in a new
network namespace, ``unshare --net --`` as root or ``unshare --user --map-root-user --net --`` otherwise,
when a probe (``unshare ... true``, once per process) shows that the kernel allows it. Where it does not,
steps run with network access and ``sandbox()`` says so and why.

Standard library only; Python 3.7 compatible.
"""

import abc
import os
import subprocess
import sys

from envs import docker, venvs
from envs.errors import EnvError


class Mount(object):
    """A host path a step needs: ``writable`` for the run folder, read-only for model and data."""

    def __init__(self, path, writable=False):
        self.path = os.path.abspath(path)
        self.writable = writable

    def __repr__(self):
        return "Mount(%r, writable=%r)" % (self.path, self.writable)

    def __eq__(self, other):
        return isinstance(other, Mount) and (self.path, self.writable) == (other.path, other.writable)


class Backend(abc.ABC):
    """Runs ``python -m module args`` inside a declared environment."""

    name = None

    @abc.abstractmethod
    def prepare(self, env_name, log=print):
        """Make the environment usable (create the venv, check the image); raise EnvError if not."""

    @abc.abstractmethod
    def command(self, env_name, module, args=(), mounts=(), extra_env=None, user_paths=()):
        """(argv, environ) that run the module inside the environment, sandboxed as ``sandbox()`` says.

        ``extra_env``: variables set inside the environment; ``user_paths``: host folders appended to
        the step's import path (the user's own ``--preprocess``/``--arch`` ``module:function``).
        ``environ`` is always a complete mapping for ``subprocess`` (never None).
        """

    @abc.abstractmethod
    def sandbox(self):
        """How a step's network is cut off: {"network": "isolated"|"not_isolated", "method", "reason"}."""


class LocalBackend(Backend):
    """tfbridge's own venvs under $TFBRIDGE_HOME (the default)."""

    name = "local"

    def prepare(self, env_name, log=print):
        venvs.ensure(env_name, log=log)

    def command(self, env_name, module, args=(), mounts=(), extra_env=None, user_paths=()):
        environ = venvs.run_environ(env_name)
        environ.update(extra_env or {})
        if user_paths:
            environ["PYTHONPATH"] = os.pathsep.join([environ["PYTHONPATH"]] + [str(p) for p in user_paths])
        prefix, _ = network_sandbox()
        return list(prefix) + venvs.module_command(env_name, module, args), environ

    def sandbox(self):
        return dict(network_sandbox()[1])


class DockerBackend(Backend):
    """Runs each step in its environment's image (``tfbridge:<env>-<lock sha>``), see envs/docker.py,
    on Docker or podman (``docker.engine()``: the same command line for both)."""

    name = "docker"

    def prepare(self, env_name, log=print):
        docker.check_image(env_name, log=log)

    def command(self, env_name, module, args=(), mounts=(), extra_env=None, user_paths=()):
        argv = docker.engine_cli() + ["run", "--rm", "--init", "--user", "%d:%d" % (os.getuid(), os.getgid()),
                "--network", "none", "--env", "HOME=/tmp"]
        mounts = list(mounts)
        passed = dict((key, os.environ[key]) for key in ("TFBRIDGE_DEBUG",) if os.environ.get(key))
        passed.update(extra_env or {})
        if user_paths:
            passed["PYTHONPATH"] = os.pathsep.join([docker.PROJECT_DIR] + [str(p) for p in user_paths])
            mounts += [Mount(path) for path in user_paths]
        for variable in sorted(passed):
            argv += ["--env", "%s=%s" % (variable, passed[variable])]
            if variable == "TFBRIDGE_ERROR_FILE":  # written by the step: its folder must be writable
                mounts.append(Mount(os.path.dirname(os.path.abspath(passed[variable])), writable=True))
        for mount in merge_mounts(mounts):
            argv += ["--volume", "%s:%s:%s" % (mount.path, mount.path, "rw" if mount.writable else "ro")]
        argv += [docker.image_tag(env_name), module] + [str(arg) for arg in args]
        return argv, dict(os.environ)  # the engine client's own environment (DOCKER_HOST, PATH, ...)

    def sandbox(self):
        return {"network": "isolated", "method": "docker --network none", "reason": None}


def mounts_for(args):
    """The mounts a step needs, derived from its arguments: an existing file's folder read-only (a
    model, a custom-objects file), an existing folder read-write (a run folder; calibration folders
    too, harmlessly), a path that does not exist yet its parent folder read-write (an output)."""
    mounts = []
    for arg in args:
        arg = str(arg)
        if not os.path.isabs(arg):
            continue
        if os.path.isfile(arg):
            mounts.append(Mount(os.path.dirname(arg)))
        elif os.path.isdir(arg):
            mounts.append(Mount(arg, writable=True))
        elif os.path.isdir(os.path.dirname(arg)):
            mounts.append(Mount(os.path.dirname(arg), writable=True))
    return mounts


def merge_mounts(mounts):
    """Drop mounts inside another mount of the same or wider access; keep order stable."""
    result = []
    for mount in sorted(mounts, key=lambda m: (len(m.path), not m.writable)):
        covered = any(
            (mount.path == other.path or mount.path.startswith(other.path.rstrip("/") + "/"))
            and (other.writable or not mount.writable)
            for other in result
        )
        if not covered:
            result.append(mount)
    return result


def unshare_prefix():
    """The command prefix that gives a step a new, empty network namespace on Linux."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ["unshare", "--net", "--"]
    return ["unshare", "--user", "--map-root-user", "--net", "--"]


def probe_network_sandbox():
    """(prefix, record): try ``unshare ... true`` now; the prefix is [] when it cannot be used."""
    if not sys.platform.startswith("linux"):
        return [], _not_isolated("no network namespaces on %s" % sys.platform)
    prefix = unshare_prefix()
    try:
        result = subprocess.run(prefix + ["true"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as error:
        return [], _not_isolated("`%s true` could not run (%s)" % (" ".join(prefix), error))
    if result.returncode != 0:
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return [], _not_isolated("`%s true` failed: %s" % (" ".join(prefix), lines[-1] if lines else
                                                            "exit %d" % result.returncode))
    return prefix, {"network": "isolated", "method": "unshare --net", "reason": None}


_SANDBOX = []


def network_sandbox():
    """``probe_network_sandbox()``, probed once per process."""
    if not _SANDBOX:
        _SANDBOX.append(probe_network_sandbox())
    return _SANDBOX[0]


def _not_isolated(reason):
    return {"network": "not_isolated", "method": None, "reason": reason}


def get_backend(name=None):
    """The backend called ``name`` (default: $TFBRIDGE_BACKEND, else "local")."""
    name = name or os.environ.get("TFBRIDGE_BACKEND") or "local"
    try:
        return ALL_BACKENDS[name]()
    except KeyError:
        raise EnvError("Unknown backend %r; choose one of: %s." % (name, ", ".join(sorted(ALL_BACKENDS))))


ALL_BACKENDS = {"local": LocalBackend, "docker": DockerBackend}
