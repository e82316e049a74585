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
    def command(self, env_name, module, args=(), mounts=(), extra_env=None):
        """(argv, environ) that run the module with ``extra_env`` set inside the environment."""

    def run(self, env_name, module, args=(), mounts=None, extra_env=None, cwd=None):
        """Run the module with its output streamed to the user; return the exit code."""
        argv, environ = self.command(env_name, module, args, mounts_for(args) if mounts is None else mounts,
                                     extra_env)
        return subprocess.call(argv, cwd=cwd or venvs.REPO_ROOT, env=environ)


class LocalBackend(Backend):
    """tfbridge's own venvs under $TFBRIDGE_HOME (the default)."""

    name = "local"

    def prepare(self, env_name, log=print):
        venvs.ensure(env_name, log=log)

    def command(self, env_name, module, args=(), mounts=(), extra_env=None):
        environ = venvs.run_environ(env_name)
        environ.update(extra_env or {})
        return venvs.module_command(env_name, module, args), environ


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
