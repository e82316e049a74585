"""Where a step runs: the shared interface between the orchestrators and the environments.

One ABC states the contract; ``LocalBackend`` runs a module in tfbridge's own venvs, ``DockerBackend``
(envs/docker.py) runs it in the environment's image. ``ALL_BACKENDS`` picks one by name; the
orchestrators choose it with ``--backend`` (exported as ``TFBRIDGE_BACKEND`` so that every step of one
run uses the same one). Standard library only; Python 3.7 compatible.
"""

import abc
import os
import subprocess

from envs import venvs


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
    def command(self, env_name, module, args=(), mounts=()):
        """(argv, environ) that run the module; environ is None to inherit the host's."""

    def run(self, env_name, module, args=(), mounts=(), extra_env=None, cwd=None):
        """Run the module with its output streamed to the user; return the exit code."""
        argv, environ = self.command(env_name, module, args, mounts)
        environ = dict(os.environ if environ is None else environ)
        environ.update(extra_env or {})
        return subprocess.call(argv, cwd=cwd or venvs.REPO_ROOT, env=environ)


class LocalBackend(Backend):
    """tfbridge's own venvs under $TFBRIDGE_HOME (the default)."""

    name = "local"

    def prepare(self, env_name, log=print):
        venvs.ensure(env_name, log=log)

    def command(self, env_name, module, args=(), mounts=()):
        return venvs.module_command(env_name, module, args), venvs.run_environ(env_name)


def get_backend(name=None):
    """The backend called ``name`` (default: $TFBRIDGE_BACKEND, else "local")."""
    from envs.docker import DockerBackend  # noqa: F401 - registers itself
    from envs.errors import EnvError

    name = name or os.environ.get("TFBRIDGE_BACKEND") or "local"
    try:
        return ALL_BACKENDS[name]()
    except KeyError:
        raise EnvError("Unknown backend %r; choose one of: %s." % (name, ", ".join(sorted(ALL_BACKENDS))))


ALL_BACKENDS = {"local": LocalBackend}
