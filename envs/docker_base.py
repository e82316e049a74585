"""Local base images for the Docker images, built from Debian's package registry.

For machines that cannot pull the pinned public ``python:*`` images of docker/base-images.cfg (no image
registry, an air-gapped mirror): ``mmdebstrap`` (else ``debootstrap``) makes a minimal Debian rootfs
(once: it is kept as a tarball in $TFBRIDGE_HOME/docker-base and shared by every base), the Python of
one environment goes in, and the engine imports it as ``localhost/tfbridge-base:py<version>-<key>``, to be passed to
``nox -s docker_build -- --base <version>=<tag>`` (the Dockerfiles' ``BASE_IMAGE``)::

    python -m envs.docker_base 3.11 3.7        # prints "3.11=localhost/tfbridge-base:py3.11-..." lines

Python 3.11 is Debian bookworm's own (in every base; ``python`` on PATH is the environment's); any
other version is the interpreter tfbridge already finds (``envs.interpreters.find_python``: pyenv, PATH,
``TFBRIDGE_PYTHON_X_Y``) copied into ``/usr/local``, with the shared libraries it needs from Debian. The
image also carries this machine's TLS trust and pip index (``/etc/pip.conf``), so that ``pip install``
in the image build reaches the registry the way pip on the host does (e.g. through a proxy with its own
certificate authority).

The tag's key hashes everything that goes in (suite, packages, mirror, interpreter, CA bundle, pip
configuration): an unchanged key reuses the image. Needs root (mmdebstrap or debootstrap, chroot) and a
Debian mirror (default: the first one in /etc/apt/sources.list*). Host side; standard library only.
"""

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from envs import docker, interpreters, paths
from envs.errors import EnvError

FORMAT = "2"  # raise when what goes into a base image changes without a change in its inputs
SUITE = "bookworm"
DEBIAN_PYTHON = "3.11"  # bookworm's python3
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TAG_PREFIX = "localhost/tfbridge-base"
# What a CPython built by pyenv links against (ldd of its lib-dynload), tkinter left out, and what pip
# and the image need besides.
RUNTIME_PACKAGES = ("ca-certificates", "libssl3", "libffi8", "libbz2-1.0", "liblzma5", "libsqlite3-0",
                    "libreadline8", "libncursesw6", "zlib1g", "libuuid1", "libexpat1", "libgdbm6", "libnsl2",
                    "libgomp1")
DEBIAN_PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COPY_IGNORE = ("test", "tests", "tkinter", "idlelib", "turtledemo", "__pycache__", "*.a")


class BaseImageError(EnvError):
    """A local base image could not be built (no mmdebstrap or debootstrap, not root, mirror unreachable)."""


def apt_mirror(sources=("/etc/apt/sources.list", "/etc/apt/sources.list.d")):
    """The first Debian mirror (not -security) apt on this machine uses, else deb.debian.org."""
    files = []
    for source in sources:
        files += sorted(glob.glob(os.path.join(source, "*"))) if os.path.isdir(source) else [source]
    for path in files:
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError:
            continue
        for url in re.findall(r"^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text, re.MULTILINE):
            if re.search(r"/debian/?$", url):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def host_ca_bundle():
    """The CA bundle pip uses on this host (PIP_CERT, SSL_CERT_FILE, else Debian's), or None."""
    for path in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), CA_BUNDLE):
        if path and os.path.isfile(path):
            return path
    return None


def pip_conf():
    """/etc/pip.conf for the image: the host's CA bundle (copied to CA_BUNDLE) and http(s) index URLs."""
    lines = ["[global]"]
    if host_ca_bundle():
        lines.append("cert = %s" % CA_BUNDLE)
    for variable, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        urls = [url for url in os.environ.get(variable, "").split() if url.startswith(("http://", "https://"))]
        if urls:
            lines.append("%s = %s" % (key, " ".join(urls)))
    return "\n".join(lines) + "\n"


def _interpreter(python):
    """(None, None) for Debian's own Python, else (the interpreter found, its installation prefix)."""
    if python == DEBIAN_PYTHON:
        return None, None
    executable = interpreters.find_python(python)
    prefix = subprocess.check_output([executable, "-c", "import sys; print(sys.base_prefix)"],
                                     universal_newlines=True).strip()
    return executable, prefix


def image_key(python, mirror):
    """The content key of a base image (module docstring)."""
    digest = hashlib.sha256()
    executable, prefix = _interpreter(python)
    packages = RUNTIME_PACKAGES + DEBIAN_PYTHON_PACKAGES
    for part in (FORMAT, SUITE, mirror, " ".join(packages), python, executable or "debian", pip_conf()):
        digest.update(part.encode() + b"\0")
    if executable:
        for name in ("bin/python%s" % python, "lib/libpython%sm.so.1.0" % python):
            path = os.path.join(prefix, name)
            if os.path.exists(path):
                digest.update(_file_sha256(path).encode())
    if host_ca_bundle():
        digest.update(_file_sha256(host_ca_bundle()).encode())
    return digest.hexdigest()


def base_tag(python, mirror=None):
    return "%s:py%s-%s" % (TAG_PREFIX, python, image_key(python, mirror or apt_mirror())[:12])


def ensure_base_image(python, mirror=None, log=print):
    """The tag of the local base image for ``python``, built now unless an image of the same key exists."""
    mirror = mirror or apt_mirror()
    tag = base_tag(python, mirror)
    engine = docker.engine()
    if engine.has_image(tag):
        log("base image %s: present" % tag)
        return tag
    if os.geteuid() != 0:
        raise BaseImageError("A local base image is made with %s and chroot, which need root; run as root."
                             % (bootstrap_tool() or "debootstrap"))
    executable, prefix = _interpreter(python)
    rootfs_tar = debian_rootfs(mirror, log)
    workdir = tempfile.mkdtemp(prefix="base-", dir=os.path.dirname(rootfs_tar))
    rootfs = os.path.join(workdir, "rootfs")
    try:
        os.mkdir(rootfs)
        _run(["tar", "-C", rootfs, "-xf", rootfs_tar], "unpacking %s" % rootfs_tar)
        if executable:
            log("base image %s: Python %s from %s" % (tag, python, prefix))
            _copy_python(prefix, python, rootfs)
        if host_ca_bundle():
            shutil.copyfile(host_ca_bundle(), rootfs + CA_BUNDLE)
        with open(os.path.join(rootfs, "etc", "pip.conf"), "w") as handle:
            handle.write(pip_conf())
        check = "import sys, ssl, sqlite3, venv, ensurepip, ctypes; assert sys.version.startswith('%s.')" % python
        _run(["chroot", rootfs, "python", "-c", check], "checking the new base image's Python %s" % python,
             environ={"PATH": IMAGE_PATH, "LANG": "C.UTF-8"})
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        _run(list(engine.cli) + ["import", "--change", "ENV PATH=" + IMAGE_PATH, "--change", "ENV LANG=C.UTF-8",
                                 "-", tag], "importing the rootfs", stdin=tar.stdout)
        tar.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log("base image %s: built" % tag)
    return tag


def bootstrap_tool():
    """``mmdebstrap`` when installed, else ``debootstrap`` (None if neither is): what makes the rootfs.
    mmdebstrap (apt's parallel downloads, one dpkg run) took 53 s where debootstrap took 77 s here."""
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            return tool
    return None


def debian_rootfs(mirror, log=print):
    """A tarball of the minimal Debian rootfs that every base image starts from (mmdebstrap or debootstrap,
    about a minute), made once per suite, mirror and package list and kept in $TFBRIDGE_HOME/docker-base."""
    packages = RUNTIME_PACKAGES + DEBIAN_PYTHON_PACKAGES
    key = hashlib.sha256("\0".join((FORMAT, SUITE, mirror) + packages).encode()).hexdigest()[:12]
    folder = os.path.join(paths.home(), "docker-base")
    os.makedirs(folder, exist_ok=True)
    tarball = os.path.join(folder, "%s-%s.tar" % (SUITE, key))
    if os.path.exists(tarball):
        return tarball
    tool = bootstrap_tool()
    if not tool:
        raise BaseImageError("A local base image needs mmdebstrap or debootstrap, and neither is installed "
                             "(Debian: `apt-get install mmdebstrap`, or `apt-get install debootstrap`).")
    if os.geteuid() != 0:
        raise BaseImageError("A local base image is made with %s, which needs root; run as root." % tool)
    if tool == "mmdebstrap":  # writes the tarball itself, without apt's package cache and lists
        log("mmdebstrap %s from %s" % (SUITE, mirror))
        _run(["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", "--include=" + ",".join(packages),
              SUITE, tarball + ".tmp", mirror], "mmdebstrap (is %s reachable?)" % mirror)
        os.replace(tarball + ".tmp", tarball)
        _remove_other_rootfs(folder, tarball)
        return tarball
    workdir = tempfile.mkdtemp(prefix="debootstrap-", dir=folder)
    rootfs = os.path.join(workdir, "rootfs")
    try:
        log("debootstrap %s from %s" % (SUITE, mirror))
        _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages), SUITE, rootfs, mirror],
             "debootstrap (is %s reachable?)" % mirror)
        for path in glob.glob(os.path.join(rootfs, "var/cache/apt/archives/*.deb")) + \
                glob.glob(os.path.join(rootfs, "var/lib/apt/lists/*_Packages")):
            os.remove(path)
        _run(["tar", "-C", rootfs, "-cf", tarball + ".tmp", "."], "packing the rootfs")
        os.replace(tarball + ".tmp", tarball)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _remove_other_rootfs(folder, tarball)
    return tarball


def _remove_other_rootfs(folder, tarball):
    for old in glob.glob(os.path.join(folder, "*.tar")):  # rootfs of another mirror or package list
        if old != tarball:
            os.remove(old)


def _copy_python(prefix, python, rootfs):
    """Copy a CPython installation into the rootfs's /usr/local, where it finds itself and its libpython."""
    target = os.path.join(rootfs, "usr", "local")
    folders = [folder for folder in ("bin", "lib", "include") if os.path.isdir(os.path.join(prefix, folder))]
    pack = subprocess.Popen(["tar", "-C", prefix, "-c"] + ["--exclude=%s" % p for p in COPY_IGNORE] + folders,
                            stdout=subprocess.PIPE)
    _run(["tar", "-C", target, "-x"], "copying Python %s into the rootfs" % python, stdin=pack.stdout)
    pack.wait()
    for name in ("python", "python3"):
        link = os.path.join(target, "bin", name)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink("python%s" % python, link)
    _run(["chroot", rootfs, "ldconfig"], "ldconfig in the new rootfs")


def _run(argv, what, stdin=None, environ=None):
    result = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, env=environ)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        raise BaseImageError("Building a local base image failed in %s: `%s` exited with %d (%s)."
                             % (what, " ".join(argv[:3]), result.returncode, " / ".join(lines[-3:]) or "no output"))


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m envs.docker_base", description=__doc__.split("\n\n")[0])
    parser.add_argument("python", nargs="+", help="Python versions, e.g. 3.11 3.7")
    parser.add_argument("--mirror", help="Debian mirror (default: apt's, else %s)" % DEFAULT_MIRROR)
    args = parser.parse_args(argv)
    try:
        for python in args.python:
            print("%s=%s" % (python, ensure_base_image(python, args.mirror, log=lambda line: print(line, file=sys.stderr))))
    except EnvError as error:
        print("tfbridge: %s" % error, file=sys.stderr)
        return getattr(error, "exit_code", 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
