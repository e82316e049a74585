"""``--backend docker`` on a real container engine: the three images built from docker/*.Dockerfile, and
the demo converted in them, equal to the same demo converted in tfbridge's own venvs.

The engine is ``envs.docker.engine()``'s: Docker where one answers, else podman (CI installs podman:
.ci/run). The base images are local ones made from Debian's package registry (envs/docker_base.py),
passed as the Dockerfiles' ``BASE_IMAGE``: no image registry is reachable from the project's machines.
Both stay cached (the base images by their content key, the images' slow layer, the lock's install, by
the engine's layer cache), so a warm run rebuilds only the project's code layers. On a cold engine (CI)
podman's build installs each lock offline from the uv cache the environments were just made from
(``envs.docker.host_uv``), so the images hold the very wheels the venvs hold, downloaded once.

Without an engine, or as non-root (mmdebstrap or debootstrap), the test skips, unless
TFBRIDGE_TEST_CONTAINERS=require (CI), where it fails, and where images of other locks and older bases
are removed after the build.

The demo model is trained once, in the tf1.13 image, and the venvs' run converts that same model: its
training is not bit-reproducible from run to run (two trainings in the same venv differ), so equal
results are asked of convert_legacy's steps, given the same model.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from envs import docker, docker_base, registry, venvs

pytestmark = pytest.mark.crossenv

REPO = venvs.REPO_ROOT


def _unavailable(reason):
    if os.environ.get("TFBRIDGE_TEST_CONTAINERS") == "require":
        pytest.fail("TFBRIDGE_TEST_CONTAINERS=require, but %s" % reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images():
    """Build (or reuse) the local bases and the three images: ({env: tag}, the engine)."""
    with pytest.MonkeyPatch.context() as patch:
        # engine() exports its choice; keep it out of the other tests of this process
        patch.delenv(docker.ENGINE_VARIABLE, raising=False)
        try:
            engine = docker.engine()
        except docker.DockerUnavailable as error:
            _unavailable("no container engine: %s" % error)
        if os.geteuid() != 0 or not docker_base.bootstrap_tool():
            _unavailable("the local base images need root and mmdebstrap or debootstrap")
        started = time.time()
        pythons = sorted(set(registry.get(name).python for name in registry.TF_ENVIRONMENTS))
        bases = dict((python, docker_base.ensure_base_image(python)) for python in pythons)
        tags = docker.build_images(bases=bases)
        seconds = time.time() - started
        if os.environ.get("TFBRIDGE_TEST_CONTAINERS") == "require":  # CI: the disk is not endless
            remove_stale_images(engine.name, tags + list(bases.values()))
    print("images %s built with %s in %.0f s" % (", ".join(tags), engine.name, seconds))
    return dict(zip(registry.TF_ENVIRONMENTS, tags)), engine


def remove_stale_images(engine_name, keep):
    """Remove tfbridge's images of other locks and older base images (a tf2 image is ~2.7 GB), then the
    dangling layers that rebuilding the code layers left behind."""
    listed = subprocess.run([engine_name, "images", "--format", "{{.Repository}}:{{.Tag}}"], stdout=subprocess.PIPE,
                            universal_newlines=True, check=True).stdout.split()
    keep = set(tag.rsplit("/", 1)[-1] for tag in keep)
    for image in listed:
        short = image.rsplit("/", 1)[-1]
        if short.split(":")[0] in ("tfbridge", "tfbridge-base") and short not in keep:
            subprocess.call([engine_name, "rmi", image], stdout=subprocess.DEVNULL)
    subprocess.call([engine_name, "image", "prune", "--force"], stdout=subprocess.DEVNULL)


def convert_demo(cwd, *args, **extra_env):
    environ = dict(os.environ, PYTHONPATH=REPO, **extra_env)
    return subprocess.run([sys.executable, "-m", "converters.pipeline"] + list(args), cwd=str(cwd), env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=1800)


def npz_members(path):
    """{array name: the .npy bytes}: the arrays exactly, without the zip's timestamps."""
    with zipfile.ZipFile(str(path)) as archive:
        return dict((name, archive.read(name)) for name in archive.namelist())


def test_the_images_build_from_the_dockerfiles_and_run_their_environment(images):
    tags, engine = images
    for env_name, tag in tags.items():
        assert tag == docker.image_tag(env_name)  # derived from the lock
        assert engine.has_image(tag)
        env = registry.get(env_name)
        result = subprocess.run(
            list(engine.cli) + ["run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c",
             "import json, sys, tensorflow as tf; print(json.dumps([sys.version.split()[0], tf.__version__]))"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        python, tensorflow = json.loads(result.stdout.strip().splitlines()[-1])
        declared = registry.pinned_version(env, "tensorflow") or registry.pinned_version(env, "tensorflow-cpu")
        assert python.startswith(env.python + ".") and tensorflow == declared, (env_name, python, tensorflow)


def test_the_demo_in_the_images_equals_the_demo_in_the_venvs(images, tmp_path):
    tags, engine = images
    engine_name = engine.name
    in_images, in_venvs = tmp_path / "images", tmp_path / "venvs"
    in_images.mkdir()
    started = time.time()
    result = convert_demo(in_images, "--backend", "docker", TFBRIDGE_CONTAINER_ENGINE=engine_name)
    docker_seconds = time.time() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # the same demo model (made in the tf1.13 image above), converted again in the venvs
    shutil.copytree(str(in_images / "runs" / ".demo-source"), str(in_venvs / "runs" / ".demo-source"))
    started = time.time()
    local = convert_demo(in_venvs, "--backend", "local")
    local_seconds = time.time() - started
    assert local.returncode == 0, local.stderr[-4000:]
    assert "demo: reusing the demo model" in local.stdout + local.stderr
    print("demo: %.0f s in the images (%s), %.0f s in the venvs" % (docker_seconds, engine_name, local_seconds))

    run_d, run_l = in_images / "runs" / "demo_face", in_venvs / "runs" / "demo_face"
    # every step ran in an image, on the engine, without network
    for record in (json.loads((run_d / "sandbox.json").read_text()), json.loads((run_d / "verify.json").read_text())["sandbox"]):
        assert record == {"network": "isolated", "method": "docker --network none", "reason": None,
                          "filesystem": "boxed", "filesystem_method": "docker (only the step's mounts)",
                          "filesystem_reason": None}
    assert json.loads((run_l / "sandbox.json").read_text())["method"] != "docker --network none"
    logs = "\n".join(path.read_text(errors="replace") for path in sorted((run_d / "logs").glob("*.log")))
    ran = json.loads((run_d / "steps.json").read_text())["steps"]
    assert ran and len(ran) == len(json.loads((run_l / "steps.json").read_text())["steps"])
    for env_name in registry.TF_ENVIRONMENTS:
        assert "image %s (%s)" % (tags[env_name], engine_name) in result.stdout + result.stderr + logs, env_name

    # the same re-saved model's outputs, the same int8 file byte for byte, the same verdict
    references = sorted(path.name for path in run_l.glob("reference_*.npz"))
    assert references and references == sorted(path.name for path in run_d.glob("reference_*.npz"))
    for name in references:
        assert npz_members(run_d / name) == npz_members(run_l / name), name
    assert npz_members(run_d / "probe.npz") == npz_members(run_l / "probe.npz")
    assert (run_d / "model_int8.tflite").read_bytes() == (run_l / "model_int8.tflite").read_bytes()
    report_d, report_l = (json.loads((run / "report.json").read_text()) for run in (run_d, run_l))
    assert report_d["tflite"]["status"] == report_l["tflite"]["status"] == "match"
    assert report_d["npu"]["verdict"] == report_l["npu"]["verdict"]
    assert [(c["env"], c["status"], c.get("max_abs")) for c in report_d["parity"]] == \
        [(c["env"], c["status"], c.get("max_abs")) for c in report_l["parity"]]
    verdict = [line for line in result.stdout.splitlines() if line.startswith("verdict: ")]
    assert verdict and verdict == [line for line in local.stdout.splitlines() if line.startswith("verdict: ")]
