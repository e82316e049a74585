"""The environment registry: the one hand-written place where each environment's versions live.

Everything else derives from these declarations: the lock files (``nox -s lock``), the venvs
(``envs.venvs``), the pytest markers (``tests/conftest.py``), the version checks of the integration
tests, the table of ``nox -s envs`` and the Docker images.

This module is standard library only and Python 3.7 compatible: it is imported on the host (nox,
Python 3.11) and inside the TF 1.x environments (by the test configuration).
"""

import collections
import os
import re

# One declaration per environment. ``requirements`` are what we ask for; the lock pins the rest.
# Adding a built-in environment is one more entry here, then ``nox -s lock -- <name>``. Any other TF release
# (``--tf 2.15``) needs no entry: its declaration comes from the rule below (``tf_environment``).
Environment = collections.namedtuple(
    "Environment", ["name", "python", "requirements", "role", "platform"]
)

# What the host needs to drive everything (.ci/run installs exactly these from envs/locks/host-tools.txt).
HOST_TOOLS = (
    "nox==2026.10.20",  # the user interface; its virtualenv backend cannot make 3.7 venvs, ours can
    "uv==0.13.9",  # creates the environments several times faster than pip (optional: pip fallback)
    "docker==7.2.0",  # Docker SDK: `nox -s docker_build` and `--backend docker` (needs a Docker engine)
)

# Packages the project's own code and tests need in every TF environment.
_COMMON_TF1 = (
    "pytest",
    "pillow",
    "scikit-image",   # real sample images (skimage.data.lfw_subset) for the demo and the tests
    "pyyaml",         # --arch given as a YAML model config
    "tqdm",           # progress bars on long steps
    "keras-vggface==0.6",  # rcmalli's own package: the real VGGFace architectures (code only)
)

ENVIRONMENTS = collections.OrderedDict(
    (env.name, env)
    for env in (
        Environment(
            name="host",
            python="3.11",
            # HOST_TOOLS: tests drive `nox -s ...` itself and check the docker backend's error;
            # dockerfile-parse: the Dockerfiles are checked statically (no Docker engine here).
            requirements=("pytest", "numpy", "dockerfile-parse") + HOST_TOOLS,
            role="host-side unit tests and cross-environment tests (no TensorFlow)",
            platform="x86_64-manylinux_2_28",
        ),
        Environment(
            name="tf1.13",
            python="3.7",
            requirements=(
                "tensorflow==1.13.2",
                "keras==2.2.4",
                "h5py<3",  # h5py 3 reads strings as str, which keras 2.2.4 cannot load
                "numpy<1.17",  # TF 1.13 fails to import with numpy >= 1.17 (np.object deprecation, ABI)
                "protobuf<3.21",  # protobuf 4 (3.21+) breaks TF 1.x generated code
                "scikit-learn",  # load_digits(): 1,797 real handwritten digits for legacy_tf1/digits.py
            )
            + _COMMON_TF1,
            role="origin of legacy models: keras 2.2.4 era (rcmalli keras-vggface)",
            platform="x86_64-manylinux_2_17",
        ),
        Environment(
            name="tf1.15",
            python="3.7",
            requirements=(
                "tensorflow==1.15.5",
                "keras==2.3.1",
                "h5py<3",
                "numpy<1.19",  # TF 1.15.5 pins numpy < 1.19
                "protobuf<3.21",
            )
            + _COMMON_TF1,
            role="origin of later legacy models; first upgrade step",
            platform="x86_64-manylinux_2_17",
        ),
        Environment(
            name="tf2",
            python="3.11",
            requirements=(
                "tensorflow-cpu==2.21.0",
                "tf-keras==2.21.0",  # legacy Keras 2 (TF_USE_LEGACY_KERAS=1) loads TF 1.x .h5 files
                "keras>=3,<4",  # Keras 3, tried as well: it loads some legacy files, not all
                "ai-edge-litert==2.3.0",  # LiteRT runs the .tflite (tf.lite.Interpreter is deprecated)
                "h5py",
                "pytest",
                "pillow",
                "scikit-image",
                "pyyaml",
                "matplotlib",  # plots in report.html
                "jinja2",  # report.html template
                "tqdm",  # progress bars on long steps
                # Arm's NPU compiler for Ethos-U55/U65/U85 (--npu-target): it needs only numpy and
                # flatbuffers, which TF pins compatibly, so it shares tf2 (resolving it adds this one package)
                "ethos-u-vela==5.2.0",
            ),
            role="the newest converter (MLIR), the TFLite runtime and Arm's Vela NPU compiler",
            platform="x86_64-manylinux_2_28",
        ),
    )
)

TF_ENVIRONMENTS = tuple(name for name in ENVIRONMENTS if name != "host")

# --- Any other TensorFlow release: an environment declared from one rule (``tf_environment``) ----------------
#
# The TensorFlow releases on the package registry: minor -> (the Pythons its Linux x86_64 wheels are for, its
# releases in order). Checked 2026-12-06 with `pip index versions tensorflow[-cpu] --python-version X.Y
# --only-binary=:all:` for 3.6 ... 3.13 (2.15.0.post1, a re-upload of 2.15.0, is left out). A minor newer than
# the last row is taken to have the last row's Pythons; resolving its lock says if it does not.
TF_RELEASES = collections.OrderedDict((
    ("1.13", (("3.6", "3.7"), ("1.13.1", "1.13.2"))),
    ("1.14", (("3.6", "3.7"), ("1.14.0",))),
    ("1.15", (("3.6", "3.7"), ("1.15.0", "1.15.2", "1.15.3", "1.15.4", "1.15.5"))),
    ("2.0", (("3.6", "3.7"), ("2.0.0", "2.0.1", "2.0.2", "2.0.3", "2.0.4"))),
    ("2.1", (("3.6", "3.7"), ("2.1.0", "2.1.1", "2.1.2", "2.1.3", "2.1.4"))),
    ("2.2", (("3.6", "3.7", "3.8"), ("2.2.0", "2.2.1", "2.2.2", "2.2.3"))),
    ("2.3", (("3.6", "3.7", "3.8"), ("2.3.0", "2.3.1", "2.3.2", "2.3.3", "2.3.4"))),
    ("2.4", (("3.6", "3.7", "3.8"), ("2.4.0", "2.4.1", "2.4.2", "2.4.3", "2.4.4"))),
    ("2.5", (("3.6", "3.7", "3.8", "3.9"), ("2.5.0", "2.5.1", "2.5.2", "2.5.3"))),
    ("2.6", (("3.6", "3.7", "3.8", "3.9"), ("2.6.0", "2.6.1", "2.6.2", "2.6.3", "2.6.4", "2.6.5"))),
    ("2.7", (("3.7", "3.8", "3.9"), ("2.7.0", "2.7.1", "2.7.2", "2.7.3", "2.7.4"))),
    ("2.8", (("3.7", "3.8", "3.9", "3.10"), ("2.8.0", "2.8.1", "2.8.2", "2.8.3", "2.8.4"))),
    ("2.9", (("3.7", "3.8", "3.9", "3.10"), ("2.9.0", "2.9.1", "2.9.2", "2.9.3"))),
    ("2.10", (("3.7", "3.8", "3.9", "3.10"), ("2.10.0", "2.10.1"))),
    ("2.11", (("3.7", "3.8", "3.9", "3.10"), ("2.11.0", "2.11.1"))),
    ("2.12", (("3.8", "3.9", "3.10", "3.11"), ("2.12.0", "2.12.1"))),
    ("2.13", (("3.8", "3.9", "3.10", "3.11"), ("2.13.0", "2.13.1"))),
    ("2.14", (("3.9", "3.10", "3.11"), ("2.14.0", "2.14.1"))),
    ("2.15", (("3.9", "3.10", "3.11"), ("2.15.0", "2.15.1"))),
    ("2.16", (("3.9", "3.10", "3.11", "3.12"), ("2.16.1", "2.16.2"))),
    ("2.17", (("3.9", "3.10", "3.11", "3.12"), ("2.17.0", "2.17.1"))),
    ("2.18", (("3.9", "3.10", "3.11", "3.12"), ("2.18.0", "2.18.1"))),
    ("2.19", (("3.9", "3.10", "3.11", "3.12"), ("2.19.0", "2.19.1"))),
    ("2.20", (("3.9", "3.10", "3.11", "3.12", "3.13"), ("2.20.0",))),
    ("2.21", (("3.10", "3.11", "3.12", "3.13"), ("2.21.0",))),
))
# Which of a release's Pythons its environment uses: the host's own 3.11 first (tf2's), then the nearest
# older ones (the newest Python a release supports is the one its wheels were most tested on), then newer.
PYTHON_PREFERENCE = ("3.11", "3.10", "3.9", "3.8", "3.7", "3.12", "3.13", "3.6")
KERAS3_DEFAULT = (2, 16)  # from TF 2.16, tf.keras is Keras 3; Keras 2 lives on as the tf-keras package
EXTRA_PLATFORM = "x86_64-manylinux_2_28"
# standalone Keras of the TF 1.x minors (the Keras a TF 1.x model was written with)
_STANDALONE_KERAS = {(1, 13): "2.2.4", (1, 14): "2.2.5", (1, 15): "2.3.1"}
_VERSION = re.compile(r"^(?:tf)?(\d+)\.(\d+)(?:\.(\d+))?$")


def tf_version_key(version):
    """``"2.12"`` -> ``(2, 12)``, ``"2.12.1"`` -> ``(2, 12, 1)``; ValueError for anything else."""
    match = _VERSION.match(str(version).strip())
    if not match:
        raise ValueError("%r is not a TensorFlow version (MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 2.12 or 2.12.1)"
                         % version)
    return tuple(int(part) for part in match.groups() if part is not None)


def tf_minor(version):
    return "%d.%d" % tf_version_key(version)[:2]


def pythons_for(version):
    """The Pythons the release's wheels are for (``TF_RELEASES``); () for a minor older than the table."""
    minor = tf_minor(version)
    if minor in TF_RELEASES:
        return TF_RELEASES[minor][0]
    if tf_version_key(minor) > tf_version_key(next(reversed(TF_RELEASES))):
        return TF_RELEASES[next(reversed(TF_RELEASES))][0]
    return ()


def releases_of(minor):
    """The releases of a TF minor (``TF_RELEASES``), oldest first; () when unknown."""
    return TF_RELEASES.get(tf_minor(minor), ((), ()))[1]


def check_tf_version(version):
    """A ``--tf`` value normalised (``"tf2.12"`` -> ``"2.12"``), or ValueError saying why it is refused."""
    key = tf_version_key(version)
    text = ".".join(str(part) for part in key)
    first = tf_version_key(next(iter(TF_RELEASES)))
    if key[:2] < first:
        raise ValueError("TensorFlow %s is older than tfbridge's oldest (%s: legacy models come from TF 1.13 on)"
                         % (text, next(iter(TF_RELEASES))))
    if len(key) == 3 and tf_minor(text) in TF_RELEASES and text not in releases_of(text):
        raise ValueError("TensorFlow %s was never released; the releases of %s are %s"
                         % (text, tf_minor(text), ", ".join(releases_of(text))))
    return text


def builtin_for(version):
    """The built-in environment that *is* this TF version (``"2.21"`` -> ``"tf2"``), else None."""
    key = tf_version_key(version)
    for name in TF_ENVIRONMENTS:
        pinned = pinned_version(ENVIRONMENTS[name], "tensorflow") or pinned_version(ENVIRONMENTS[name],
                                                                                    "tensorflow-cpu")
        if pinned and tf_version_key(pinned)[:len(key)] == key:
            return name
    return None


def env_name(version):
    """The environment of a TF version: a built-in one, else ``tf<version>`` (``tf2.12``, ``tf2.16.1``)."""
    return builtin_for(version) or "tf" + check_tf_version(version)


def keras_default(version):
    """What ``tf.keras`` is in this TF: "standalone" (TF 1.x: the model's own Keras 2, standalone or
    tf.keras), "tf.keras" (Keras 2, TF 2.0 ... 2.15) or "keras3" (TF 2.16 on)."""
    key = tf_version_key(version)[:2]
    if key < (2, 0):
        return "standalone"
    return "keras3" if key >= KERAS3_DEFAULT else "tf.keras"


def tf_requirements(version):
    """The rule: what an environment of TF ``version`` asks for (its lock pins the rest). ``2.12`` means the
    newest 2.12 release, ``2.12.0`` that one. Pins are those TF itself forgot: numpy releases that removed
    what old TF uses, h5py 3 (strings) for Keras before TF 2.5, protobuf 4 for TF before 2.12."""
    key = tf_version_key(version)
    minor = key[:2]
    text = ".".join(str(part) for part in key)
    spec = "==%s" % text if len(key) == 3 else "==%s.*" % text
    if minor >= KERAS3_DEFAULT:
        package = "tensorflow"  # tf-keras requires `tensorflow`; tensorflow-cpu beside it would be a second copy
    elif minor >= (2, 1):
        package = "tensorflow-cpu"  # the CPU-only wheel (no CUDA libraries): 2.1 on
    else:
        package = "tensorflow"  # TF 1.x wheels are CPU-only; tensorflow-cpu starts at 2.1
    requirements = [package + spec]
    if minor < (2, 0):
        requirements.append("keras==%s" % _STANDALONE_KERAS.get(minor, "2.3.1"))
    elif (2, 6) <= minor < KERAS3_DEFAULT:
        requirements.append("keras>=2.%d,<2.%d" % (minor[1], minor[1] + 1))  # TF 2.6.0 let keras 2.7 in
    elif minor >= KERAS3_DEFAULT:
        requirements.append("tf-keras==%d.%d.*" % minor)
        # Keras 3 as `pip install tensorflow==2.16.*` gives it today: TF requires keras >= 3.0 with no upper
        # bound. (Measured: Keras 3.3.3, of TF 2.16's time, cannot load a keras 2.2.4 LSTM's .h5 at all
        # ("Could not interpret initializer identifier: Orthogonal ... gain"); 3.15.1 loads it on TF 2.16.2.)
        requirements.append("keras>=3,<4")
    requirements.append("h5py<3" if minor < (2, 5) else "h5py")  # h5py 3 reads strings as str: Keras < 2.5 fails
    if minor < (1, 15):
        requirements.append("numpy<1.17")  # TF 1.13/1.14 fail to import with numpy >= 1.17
    elif minor < (2, 4):
        requirements.append("numpy<1.19")  # TF 1.15 ... 2.3 pin < 1.19 or not at all (LSTMs fail on 1.20)
    elif minor < (2, 12):
        requirements.append("numpy<1.24")  # numpy 1.24 removed np.object / np.bool, used by TF < 2.12
    elif minor < (2, 18):
        requirements.append("numpy<2")
    else:
        requirements.append("numpy")
    if minor < (2, 12):
        requirements.append("protobuf<3.21")  # protobuf 4 (3.21+) breaks TF's generated code before 2.12
    return tuple(requirements)


def tf_environment(version, python):
    """The declaration of the environment of TF ``version`` on ``python`` (one of ``pythons_for``)."""
    text = check_tf_version(version)
    return Environment(name="tf" + text, python=python, requirements=tf_requirements(text),
                       role="TF %s from the rule (--tf)" % text, platform=EXTRA_PLATFORM)


def is_derived(name):
    """Is ``name`` an environment made from the rule (``tf2.12``, ``tf1.14``, ``tf2.16.1``)?"""
    return name not in ENVIRONMENTS and bool(_VERSION.match(name)) and name.startswith("tf")


_CHOSEN = {}


def choose_python(version, environ=None):
    """The first Python of ``PYTHON_PREFERENCE`` that TF ``version`` has wheels for and that is found
    (``envs.interpreters``); raises InterpreterNotFound naming the Pythons it needs and how to get one."""
    from envs.errors import InterpreterNotFound
    from envs.interpreters import find_python, override_variable

    wanted = pythons_for(version)
    key = (tf_minor(version), environ is None)
    if environ is None and key in _CHOSEN:
        return _CHOSEN[key]
    ordered = [p for p in PYTHON_PREFERENCE if p in wanted] + [p for p in wanted if p not in PYTHON_PREFERENCE]
    for python in ordered:
        try:
            find_python(python, environ)
        except InterpreterNotFound:
            continue
        if environ is None:
            _CHOSEN[key] = python
        return python
    raise InterpreterNotFound(
        "TensorFlow %s has wheels only for Python %s, and none of them was found (tfbridge looks at "
        "$TFBRIDGE_PYTHON_X_Y, pythonX.Y on PATH, then pyenv's versions folder), so its environment cannot "
        "be made. To fix: install one, e.g. `pyenv install %s` (or conda: `conda create -n py%s python=%s`, "
        "then set %s to its python), and run again; or leave %s out of --tf."
        % (version, ", ".join(wanted) or "(none known)", ordered[0] if ordered else "3.x",
           (ordered[0] if ordered else "3").replace(".", ""), ordered[0] if ordered else "3.x",
           override_variable(ordered[0] if ordered else "3.x"), version))

def tf_environments(text, backend=None):
    """The environments of ``--tf VERSION[,VERSION...]`` beyond the built-in ones, oldest first (a version that
    *is* a built-in environment, e.g. 2.21 = tf2, adds nothing). Each is checked here, before any step: the
    version exists (``check_tf_version``), and an interpreter of a Python its wheels are for is
    found (``choose_python``: its ``InterpreterNotFound`` paragraph names those Pythons and how
    to get one)."""
    from converters.errors import TfbridgeError, UsageError

    if not text:
        return []
    if (backend or os.environ.get("TFBRIDGE_BACKEND") or "local") != "local":
        raise UsageError("--tf makes environments as local venvs only; the docker backend has images of the "
                         "built-in environments (tf1.13, tf1.15, tf2) alone.", step="preflight",
                         hint="Leave out --backend docker, or --tf.")
    names = []
    for item in str(text).replace(" ", ",").split(","):
        if not item.strip():
            continue
        try:
            version = check_tf_version(item)
        except ValueError as error:
            raise UsageError("--tf %s: %s." % (item.strip(), error), step="preflight",
                             hint="Give TensorFlow releases as MAJOR.MINOR or MAJOR.MINOR.PATCH, separated by "
                                  "commas, e.g. --tf 2.4,2.12,2.15.")
        name = env_name(version)
        if name in ENVIRONMENTS or name in names:
            continue  # a built-in environment, in the matrix already
        try:
            choose_python(version)  # refused here, before any step, when no Python for it is found
        except TfbridgeError as error:
            error.step = "preflight"
            raise
        names.append(name)
    return sorted(names, key=lambda name: tf_version_key(name[2:]))


_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;,]+)\s*$")


def get(name):
    """Return the declaration of environment ``name`` (``tf2.12``: from the rule, ``tf_environment``); raise
    ``KeyError`` with the known names, InterpreterNotFound when a rule-made one has no Python here."""
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        pass
    if is_derived(name):  # tf2.12: from the rule, on the Python it prefers that is found here
        version = name[2:]
        return tf_environment(version, choose_python(version))
    raise KeyError(
        "unknown environment %r; known: %s, or tfX.Y[.Z] for any TensorFlow release (--tf)"
        % (name, ", ".join(ENVIRONMENTS))
    )


def pinned_version(env, package):
    """The exact version ``env`` declares for ``package`` (``==`` pin), or None if not pinned."""
    wanted = _normalize(package)
    for requirement in env.requirements:
        match = _PIN.match(requirement)
        if match and _normalize(match.group(1)) == wanted:
            return match.group(2)
    return None


def marker_name(env_name):
    """The pytest marker of the tests that run inside ``env_name`` ("tf1.13" -> "tf1_13")."""
    return re.sub(r"[^0-9A-Za-z_]", "_", env_name)


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":  # `docker run IMAGE` with no arguments: say which environment this is
    import json

    current = os.environ.get("TFBRIDGE_ENV")
    print(json.dumps({"environment": current, "declaration": get(current)._asdict() if current else None,
                      "known": list(ENVIRONMENTS)}, indent=2))
