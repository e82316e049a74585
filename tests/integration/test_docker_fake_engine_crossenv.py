"""``--backend docker`` end to end without a Docker engine: ``convert_legacy`` through a fake engine.

Two honest seams, no test-only code in tfbridge:

- the Docker SDK talks to ``DOCKER_HOST``: here a tiny HTTP server on a unix socket that answers what
  ``DockerBackend.prepare`` asks (``/version``, ``/_ping``, ``/images/<tag>/json``) and knows the images
  ``tfbridge:<env>-<lock hash>`` of the environments whose venv is built;
- the steps run as ``docker run ...`` through ``PATH``: here a fake ``docker`` executable that logs its
  command line, checks it (``--network none``, every absolute path of the step mounted, the image tag
  naming the environment and its current lock), and runs ``python -m MODULE ARGS`` in that
  environment's venv with the ``--env`` variables, from a folder other than the repository.
"""

import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

import pytest

from envs import docker, registry, venvs

pytestmark = pytest.mark.crossenv

REPO = venvs.REPO_ROOT

FAKE_DOCKER = r'''#!%(python)s
"""A fake `docker run` for tests/integration/test_docker_fake_engine_crossenv.py."""
import json, os, sys
sys.path.insert(0, %(repo)r)
from envs import docker, venvs

argv = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")
if not argv or argv[0] != "run":
    sys.exit("fake docker: only `docker run` is known, not %%r" %% argv[:1])
i, variables, volumes, flags = 1, {}, [], {}
while argv[i].startswith("--"):
    option = argv[i]
    if option in ("--rm", "--init"):
        i += 1
        continue
    value, i = argv[i + 1], i + 2
    if option == "--env":
        key, _, variable = value.partition("=")
        variables[key] = variable
    elif option == "--volume":
        host, inside, mode = value.split(":")
        if host != inside or mode not in ("ro", "rw"):
            sys.exit("fake docker: bad volume %%s" %% value)
        volumes.append(host)
    elif option in ("--user", "--network"):
        flags[option] = value
    else:
        sys.exit("fake docker: unknown option %%s" %% option)
image, module, args = argv[i], argv[i + 1], argv[i + 2:]
name, _, tag = image.partition(":")
env_name, _, lock = tag.rpartition("-")
if name != "tfbridge" or image != docker.image_tag(env_name):
    sys.exit("fake docker: %%s is not the image of the current lock of %%s" %% (image, env_name))
if flags.get("--network") != "none":
    sys.exit("fake docker: a step must run with --network none")
for path in args + [variables.get("TFBRIDGE_ERROR_FILE", "")]:
    if path.startswith("/") and not any(path == v or path.startswith(v.rstrip("/") + "/") for v in volumes):
        sys.exit("fake docker: %%s is not mounted (volumes: %%s)" %% (path, volumes))
environ = venvs.run_environ(env_name)
for key, value in variables.items():
    environ[key] = value.replace(docker.PROJECT_DIR, venvs.REPO_ROOT) if key == "PYTHONPATH" else value
os.chdir(variables.get("HOME", "/tmp"))
python = venvs.python_of(env_name)
os.execve(python, [python, "-m", module] + args, environ)
'''


class _Engine(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    known = set()
    requests = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = unquote(self.path.split("?", 1)[0])
        self.requests.append(path)
        image = re.match(r"^(?:/v[\d.]+)?/images/(.+)/json$", path)
        if re.match(r"^(?:/v[\d.]+)?/_ping$", path):
            self._answer(200, b"OK", "text/plain")
        elif path.endswith("/version"):
            self._json(200, {"ApiVersion": "1.43", "MinAPIVersion": "1.12", "Version": "fake"})
        elif image and image.group(1) in self.known:
            self._json(200, {"Id": "sha256:" + "0" * 64, "RepoTags": [image.group(1)]})
        elif image:
            self._json(404, {"message": "No such image: %s" % image.group(1)})
        else:
            self._json(404, {"message": "fake engine: %s is not known" % path})

    def _json(self, status, data):
        self._answer(status, json.dumps(data).encode(), "application/json")

    def _answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "fake-engine"

    def log_message(self, *args):
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_docker():
    """(environ for tfbridge, docker command log path, engine requests, known image tags)."""
    root = tempfile.mkdtemp(prefix="fd-", dir="/tmp")  # a unix socket path must stay short
    bindir = os.path.join(root, "bin")
    os.mkdir(bindir)
    with open(os.path.join(bindir, "docker"), "w") as handle:
        handle.write(FAKE_DOCKER % {"python": sys.executable, "repo": REPO})
    os.chmod(os.path.join(bindir, "docker"), 0o755)
    socket_path = os.path.join(root, "engine.sock")
    engine = type("Engine", (_Engine,), {"known": set(), "requests": []})
    engine.known.update(docker.image_tag(name) for name in registry.TF_ENVIRONMENTS
                        if venvs.status(name) == "ready")
    server = _UnixServer(socket_path, engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = os.path.join(root, "docker-commands.jsonl")
    environ = dict(os.environ, PYTHONPATH=REPO, PATH=bindir + os.pathsep + os.environ["PATH"],
                   DOCKER_HOST="unix://" + socket_path, FAKE_DOCKER_LOG=log,
                   TFBRIDGE_CONTAINER_ENGINE="docker")  # this fake, never a real podman beside it
    try:
        yield environ, log, engine.requests, engine.known
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)


def docker_commands(log):
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def legacy_model(tmp_path_factory):
    model = str(tmp_path_factory.mktemp("model") / "cnn.h5")
    subprocess.run([venvs.python_of("tf1.13"), "-m", "legacy_tf1", "zoo", "keras-cnn", "--out", model, "--seed", "0"],
                   env=venvs.run_environ("tf1.13"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   check=True)
    return model


def test_convert_legacy_through_the_docker_backend_ends_with_an_int8_model(legacy_model, tmp_path, fake_docker):
    environ, log, requests, _ = fake_docker
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "converters.pipeline", legacy_model, "--origin", "1.13", "--backend", "docker",
         "--calib", "skimage", "--preprocess", "unit", "--calib-samples", "8", "--probe-samples", "4",
         "--no-layer-debug", "--out", str(out)],
        cwd=str(tmp_path), env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["tflite"]["input_dtype"] == report["tflite"]["output_dtype"] == "int8"
    assert report["tflite"]["status"] == "match" and report["npu"]["fully_int8"] is True
    assert os.path.getsize(str(out / "model_int8.tflite")) > 0

    # every step ran through `docker run`, in the image of its environment, without network
    commands = docker_commands(log)
    images, steps = [], []
    for command in commands:
        at = [i for i, item in enumerate(command) if item.startswith("tfbridge:")][0]
        images.append(command[at])
        steps.append((command[at].split(":")[1].rsplit("-", 1)[0], command[at + 1],
                      command[at + 2] if len(command) > at + 2 else None))
    assert ("tf1.13", "legacy_tf1", "resave") in steps
    # tf-keras, the frozen graph, Keras 3 on the file as it is, the migration and the migrated Keras 3 model
    # (model.keras): one tf2 process (converters.tf2.cells), each cell still its own parity_<label>.json
    cells = [command[[i for i, item in enumerate(command) if item.startswith("tfbridge:tf2")][0] + 1:]
             for command in commands if "converters.tf2.cells" in command]
    assert len(cells) == 1, commands
    assert [item for item in cells[0] if ":" in item or item == "migrate"] == [
        "tf2:tf_keras", "tf2-graph:graph", "tf2-keras3:keras3", "migrate", "tf2-keras3-migrated:keras3"]
    for label in ("tf2", "tf2-graph", "tf2-keras3", "tf2-keras3-migrated"):
        assert (out / ("parity_%s.json" % label)).exists()
    assert ("tf1.15", "converters.shared.parity") in [s[:2] for s in steps]
    assert ("tf2", "converters.tf2.tflite_convert") in [s[:2] for s in steps]
    assert ("tf2", "converters.tf2.report") in [s[:2] for s in steps]
    assert all(command[command.index("--network") + 1] == "none" for command in commands)
    assert set(images) == set(docker.image_tag(name) for name in ("tf1.13", "tf1.15", "tf2"))
    verify_report = json.loads((out / "verify.json").read_text())
    assert len(verify_report["timings"]) + 2 == len(commands), "no step ran outside docker"
    for record in (verify_report["sandbox"], json.loads((out / "sandbox.json").read_text())):
        assert record == {"network": "isolated", "method": "docker --network none", "reason": None,
                          "filesystem": "boxed", "filesystem_method": "docker (only the step's mounts)",
                          "filesystem_reason": None}
    # the engine was asked for each image before its first step
    for name in ("tf1.13", "tf1.15", "tf2"):
        assert any(path.endswith("/images/%s/json" % docker.image_tag(name)) for path in requests), requests


def test_an_image_the_engine_does_not_have_is_one_paragraph_before_any_step(legacy_model, tmp_path, fake_docker):
    environ, log, _, known = fake_docker
    known.clear()
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "converters.pipeline", legacy_model, "--origin", "1.13", "--backend", "docker",
         "--calib", "skimage", "--out", str(out)], cwd=str(tmp_path), env=environ, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == docker.DockerUnavailable.exit_code, result.stderr[-3000:]
    # the first step is the preflight read of the .h5, in tf1.15 (verify.INSPECT_ENV)
    assert "is not built" in result.stderr and "nox -s docker_build -- tf1.15" in result.stderr
    assert "Traceback" not in result.stderr
    assert docker_commands(log) == [] and not out.exists()
