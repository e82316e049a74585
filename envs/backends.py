"""Where a step runs: the shared interface between the orchestrators and the environments.

One ABC states the contract; ``LocalBackend`` runs a module in tfbridge's own venvs, ``DockerBackend``
runs it in the environment's image (the image and Dockerfile helpers live in envs/docker.py).
``ALL_BACKENDS`` picks one by name; the orchestrators choose it with ``--backend`` (exported as
``TFBRIDGE_BACKEND`` so that every step of one run uses the same one). The one step runner that uses a
backend is ``converters.steps.StepRunner``.

Sandbox (defence in depth: a step that loads a model, trusted or not, needs neither the network nor the
user's files): the docker backend runs every container with ``--network none`` and only the step's
mounts. The local backend boxes each step with bubblewrap (``bwrap``, Debian's ``bubblewrap``) when a
self-test (``bwrap ... true``, once per process) passes: the system, the environment, the interpreter,
$TFBRIDGE_HOME, the repository and the step's inputs read-only; the run folder (``Mount(..., writable=True)``)
read-write, less the files in it the step only reads (the re-saved model, the probe, the references);
an empty private ``/tmp`` and home folder; no network (``--unshare-net``); only its own processes in
``/proc`` (``--unshare-pid``); killed with its parent (``--die-with-parent``). Without bwrap it falls back to a network namespace alone, ``unshare --net --`` as
root or ``unshare --user --map-root-user --net --`` otherwise, when a probe shows that the kernel allows
it; where neither works, steps run with the user's rights and network. ``sandbox()`` records which and why.

Standard library only; Python 3.7 compatible.
"""

import abc
import os
import shutil
import subprocess
import sys

from envs import docker, paths, venvs
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
        """How a step is boxed: {"network": "isolated"|"not_isolated", "method", "reason", "filesystem":
        "boxed"|"not_boxed", "filesystem_method", "filesystem_reason"} (the reasons say why not)."""


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
        argv = venvs.module_command(env_name, module, args)
        if filesystem_box()[0]:
            read = [venvs.REPO_ROOT, paths.home(), venvs.venv_dir(env_name), interpreter_prefix(argv[0])]
            read += [str(path) for path in user_paths]
            return box_prefix(list(mounts), read) + argv, environ
        prefix, _ = network_sandbox()
        return list(prefix) + argv, environ

    def sandbox(self):
        box, record = filesystem_box()
        if box:
            return dict(record)
        return dict(network_sandbox()[1], filesystem="not_boxed", filesystem_reason=record["filesystem_reason"])


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
        return {"network": "isolated", "method": "docker --network none", "reason": None,
                "filesystem": "boxed", "filesystem_method": "docker (only the step's mounts)",
                "filesystem_reason": None}


def mounts_for(args, writable=None, read_only_files=()):
    """The mounts a step needs, derived from its arguments: an existing file's folder read-only (a
    model, a custom-objects file), an existing folder read-write (a run folder; calibration folders
    too, harmlessly), a path that does not exist yet its parent folder read-write (an output).

    ``writable`` (the step runner's: its run folder and log folder): only these and what lies in them are
    read-write, every other path in ``args`` read-only (a file's folder, or the file alone where its folder
    holds a folder the box hides), and ``read_only_files`` (files inside a writable folder that the step
    only reads) are mounted read-only on top."""
    mounts = []
    for arg in args:
        arg = str(arg)
        if not os.path.isabs(arg):
            continue
        if os.path.isfile(arg):
            folder = os.path.dirname(arg)
            if writable is not None and any(_within(root, os.path.realpath(folder)) for root in hidden_roots()):
                folder = arg  # the file alone: its folder would bring back the hidden home folder or /tmp
            mounts.append(Mount(folder))
        elif os.path.isdir(arg):
            mounts.append(Mount(arg, writable=writable is None))
        elif os.path.isdir(os.path.dirname(arg)):
            mounts.append(Mount(os.path.dirname(arg), writable=writable is None))
    if writable is not None:
        writable = [os.path.abspath(path) for path in writable if path]
        # inside a writable folder an argument is the step's own (a stage folder, an output): writable too
        mounts = [m for m in mounts if not any(_within(m.path, folder) for folder in writable)]
        mounts += [Mount(path, writable=True) for path in writable]
        mounts += [Mount(path) for path in read_only_files]
    return mounts


def _within(path, folder):
    return path == folder or path.startswith(folder.rstrip("/") + "/")


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


# --------------------------------------------------------------------------- the file-system box (bubblewrap)

# What a boxed step does not see: its own empty /tmp (TensorFlow and h5py write temporary files) and home.
HIDDEN = ("/tmp",)


def hidden_roots():
    """The folders a boxed step gets empty and private: /tmp and the user's home folder."""
    roots = list(HIDDEN)
    home = os.path.expanduser("~")
    if home and os.path.isabs(home) and os.path.realpath(home) != "/" and os.path.isdir(home):
        roots.append(os.path.realpath(home))
    return roots


def interpreter_prefix(python):
    """The installation folder of the interpreter behind a venv's ``python`` (e.g. a pyenv version under
    the home folder), which a boxed step must still see."""
    real = os.path.realpath(python)
    return os.path.dirname(os.path.dirname(real))


def box_prefix(mounts, read=()):
    """The bwrap command prefix for one step: the whole system read-only, /tmp and the home folder empty,
    then ``read`` (folders the step runs from) and every read-only ``Mount`` that lies in a hidden folder
    bound back read-only, every writable ``Mount`` read-write, and read-only ``Mount``s inside a writable one
    (files the step only reads) read-only again on top; no network."""
    roots = hidden_roots()
    # --unshare-pid: with the host's processes in its /proc, a step could reach the whole file system through
    # /proc/<a process of the user's>/root (found by the escape test: it wrote outside the box that way)
    argv = ["bwrap", "--die-with-parent", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc"]
    for root in roots:
        argv += ["--tmpfs", root]

    def hidden(path):
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)

    def reveals(path):  # a hidden folder itself, or a folder holding one (e.g. the parent of the home folder)
        return any(root == path or root.startswith(path.rstrip("/") + "/") for root in roots)

    def inside_writable(path):
        return any(m.writable and path != m.path and path.startswith(m.path.rstrip("/") + "/") for m in mounts)

    wanted = [Mount(path) for path in read if path and os.path.exists(path)] + list(mounts)
    seen = set((os.path.realpath(m.path), False) for m in mounts if m.writable)  # read-write wins
    # shortest first: a folder is bound before what lies inside it, so the inner binding wins
    for mount in sorted(wanted, key=lambda m: (len(m.path), m.writable)):
        path = os.path.realpath(mount.path)
        if not os.path.exists(path) or (path, mount.writable) in seen:
            continue
        seen.add((path, mount.writable))
        if reveals(path) and not (mount.writable and os.path.isfile(path)):
            continue  # never the whole home folder or /tmp back: a step names what it needs inside them
        if mount.writable:
            argv += ["--bind", path, path]
        elif hidden(path) or inside_writable(path):
            argv += ["--ro-bind", path, path]
    return argv


def probe_filesystem_box():
    """(usable, record): whether ``bwrap`` is installed and boxes a process here (a self-test: a private
    /tmp, the system read-only, no network), checked now."""
    if not sys.platform.startswith("linux"):
        return False, _not_boxed("bubblewrap needs Linux (this is %s)" % sys.platform)
    if shutil.which("bwrap") is None:
        return False, _not_boxed("bubblewrap is not installed (`apt-get install bubblewrap` gives `bwrap`)")
    test = box_prefix([]) + ["sh", "-c", "! touch /usr/.tfbridge-box-test 2>/dev/null && touch /tmp/t"]
    try:
        result = subprocess.run(test, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                timeout=20)
    except (OSError, subprocess.SubprocessError) as error:
        return False, _not_boxed("`bwrap` could not run (%s)" % error)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        return False, _not_boxed("`bwrap` failed its self-test: %s" % (lines[-1] if lines else
                                                                      "exit %d" % result.returncode))
    return True, {"network": "isolated", "method": "bwrap --unshare-net", "reason": None,
                  "filesystem": "boxed", "filesystem_method": "bwrap", "filesystem_reason": None}


def _not_boxed(reason):
    return {"filesystem": "not_boxed", "filesystem_method": None, "filesystem_reason": reason}


_BOX = []


def filesystem_box():
    """``probe_filesystem_box()``, probed once per process."""
    if not _BOX:
        _BOX.append(probe_filesystem_box())
    return _BOX[0]


def get_backend(name=None):
    """The backend called ``name`` (default: $TFBRIDGE_BACKEND, else "local")."""
    name = name or os.environ.get("TFBRIDGE_BACKEND") or "local"
    try:
        return ALL_BACKENDS[name]()
    except KeyError:
        raise EnvError("Unknown backend %r; choose one of: %s." % (name, ", ".join(sorted(ALL_BACKENDS))))


ALL_BACKENDS = {"local": LocalBackend, "docker": DockerBackend}
