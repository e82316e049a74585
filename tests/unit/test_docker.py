"""The Docker images and the docker backend, checked without a Docker engine (none runs here)."""

import os
import subprocess
import sys
import types

import pytest
from dockerfile_parse import DockerfileParser

from envs import backends, docker, registry, venvs
from envs.backends import Mount

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("env_name", registry.TF_ENVIRONMENTS)
def test_committed_dockerfile_is_what_the_declaration_and_lock_generate(env_name):
    with open(docker.dockerfile_path(env_name)) as handle:
        committed = handle.read()
    assert committed == docker.render_dockerfile(env_name), (
        "docker/%s.Dockerfile is out of date: run `nox -s docker_files`" % env_name)


@pytest.mark.parametrize("env_name", registry.TF_ENVIRONMENTS)
def test_dockerfile_parses_and_pins_equal_the_lock(env_name):
    parser = DockerfileParser(path=docker.dockerfile_path(env_name))
    env = registry.get(env_name)
    instructions = [item["instruction"] for item in parser.structure if item["instruction"] != "COMMENT"]
    assert instructions[:2] == ["ARG", "FROM"] and instructions.count("FROM") == 1
    assert parser.structure[[i["instruction"] for i in parser.structure].index("FROM")]["value"] == "${BASE_IMAGE}"
    # the base is a build argument whose default is the pinned public image (a local base replaces it)
    assert DockerfileParser(path=docker.dockerfile_path(env_name),
                            build_args={"BASE_IMAGE": "localhost/base:1"}).baseimage == "localhost/base:1"
    assert parser.baseimage == docker.base_images()[env.python]
    image, digest = parser.baseimage.split("@sha256:")
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert image.startswith("python:%s." % env.python)  # the declared Python, by tag
    assert parser.args["LOCK_SHA256"] == venvs.lock_sha256(env_name)
    assert parser.labels["tfbridge.lock_sha256"] == venvs.lock_sha256(env_name)
    copies = [item["value"] for item in parser.structure if item["instruction"] == "COPY"]
    assert "envs/locks/%s.txt /tmp/lock.txt" % env_name in copies
    run = " ".join(item["value"] for item in parser.structure if item["instruction"] == "RUN")
    assert "--require-hashes" in run and "--no-deps" in run and "-r /tmp/lock.txt" in run
    assert parser.structure[-1]["instruction"] == "CMD"
    users = [item["value"] for item in parser.structure if item["instruction"] == "USER"]
    assert users == [docker.USER]  # runs as a non-root user
    assert '"python", "-m"' in [item["value"] for item in parser.structure
                                if item["instruction"] == "ENTRYPOINT"][0]
    assert parser.envs["TFBRIDGE_ENV"] == env_name


def test_dockerignore_keeps_venvs_out_of_the_build_context():
    with open(os.path.join(venvs.REPO_ROOT, ".dockerignore")) as handle:
        ignored = handle.read().split()
    assert ".tfbridge" in ignored and ".git" in ignored


def test_docker_backend_command_line_and_mounts(tmp_path, monkeypatch):
    monkeypatch.delenv(docker.ENGINE_VARIABLE, raising=False)
    model = tmp_path / "models" / "face.h5"
    model.parent.mkdir()
    model.write_bytes(b"x")
    run = tmp_path / "runs" / "face"
    argv, environ = backends.get_backend("docker").command(
        "tf1.13", "legacy_tf1", ["resave", str(model), "--out", str(run)],
        mounts=[Mount(str(model.parent)), Mount(str(run), writable=True), Mount(str(run / "sub"))],
    )
    assert environ["PATH"] == os.environ["PATH"]  # the docker client's own environment, a real mapping
    assert argv[:4] == ["docker", "run", "--rm", "--init"]  # no engine chosen yet: docker
    assert argv[argv.index("--user") + 1] == "%d:%d" % (os.getuid(), os.getgid())
    assert argv[argv.index("--network") + 1] == "none"  # a step never needs the network
    volumes = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--volume"]
    # same absolute path inside, so arguments need no rewriting; the nested mount is merged away
    assert volumes == ["%s:%s:ro" % (model.parent, model.parent), "%s:%s:rw" % (run, run)]
    tag = docker.image_tag("tf1.13")
    assert tag == "tfbridge:tf1.13-" + venvs.lock_sha256("tf1.13")[:12]
    assert argv[argv.index(tag):] == [tag, "legacy_tf1", "resave", str(model), "--out", str(run)]


def test_local_backend_runs_in_the_venv_inside_the_box_or_the_network_sandbox():
    backend = backends.get_backend("local")
    argv, environ = backend.command("tf2", "converters.shared.parity", ["RUN"])
    python = [venvs.python_of("tf2"), "-m", "converters.shared.parity", "RUN"]
    assert argv[-len(python):] == python
    assert environ["TFBRIDGE_ENV"] == "tf2"
    boxed, box_record = backends.filesystem_box()
    prefix, record = backends.network_sandbox()
    if boxed:
        assert argv[0] == "bwrap" and "--unshare-net" in argv and backend.sandbox() == box_record
        assert backend.sandbox()["filesystem"] == "boxed" and backend.sandbox()["method"] == "bwrap --unshare-net"
    else:
        assert argv == prefix + python and backend.sandbox()["filesystem"] == "not_boxed"
        assert backend.sandbox()["filesystem_reason"]
        if record["network"] == "isolated":
            assert prefix[0] == "unshare" and prefix[-2:] == ["--net", "--"] and record["method"] == "unshare --net"
        else:
            assert prefix == [] and record["method"] is None and record["reason"]


def test_the_box_hides_tmp_and_home_and_binds_back_only_what_the_step_needs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    run = tmp_path / "work" / "run"
    run.mkdir(parents=True)
    (run / "model.h5").write_bytes(b"x")
    monkeypatch.setenv("HOME", str(home))
    (home / "models" / "m.h5").write_bytes(b"x")
    (home / ".ssh").mkdir()
    mounts = backends.mounts_for([str(home / "models" / "m.h5"), str(run), str(tmp_path / "calib"),
                                  str(home / "missing")],
                                 writable=[str(run)], read_only_files=[str(run / "model.h5")])
    argv = backends.box_prefix(mounts, read=["/usr", str(home / "models")])
    assert argv[:4] == ["bwrap", "--die-with-parent", "--unshare-net", "--unshare-pid"]
    assert argv[argv.index("--ro-bind"):argv.index("--ro-bind") + 3] == ["--ro-bind", "/", "/"]
    tmpfs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--tmpfs"]
    assert tmpfs == ["/tmp", str(home)]
    binds = [(argv[i], argv[i + 1]) for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")][1:]
    # /usr is read-only already (not hidden): not bound again; the model's folder in the hidden home is bound
    # back read-only, the run folder read-write, the re-saved model in it read-only on top (after it); the
    # parents of the hidden home (of a path that does not exist: tmp_path, home) are never bound back
    assert binds == [("--bind", str(run)), ("--ro-bind", str(home / "models")),
                     ("--ro-bind", str(run / "model.h5"))], binds
    # a file directly in the home folder: the file alone, never the home folder (nor its parent)
    (home / "top.h5").write_bytes(b"x")
    argv = backends.box_prefix(backends.mounts_for([str(home / "top.h5")], writable=[str(run)]))
    binds = [(argv[i], argv[i + 1]) for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")][1:]
    assert binds == [("--bind", str(run)), ("--ro-bind", str(home / "top.h5"))], binds


def test_without_bwrap_the_box_probe_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    usable, record = backends.probe_filesystem_box()
    assert usable is False and record["filesystem"] == "not_boxed"
    assert "bubblewrap is not installed" in record["filesystem_reason"]


def test_user_paths_are_importable_in_both_backends(tmp_path):
    _, environ = backends.get_backend("local").command("tf2", "m", [], user_paths=[str(tmp_path)])
    assert environ["PYTHONPATH"].split(os.pathsep) == [venvs.REPO_ROOT, str(tmp_path)]
    argv, _ = backends.get_backend("docker").command("tf2", "m", [], user_paths=[str(tmp_path)])
    assert "PYTHONPATH=%s:%s" % (docker.PROJECT_DIR, tmp_path) in argv
    assert "%s:%s:ro" % (tmp_path, tmp_path) in argv


def test_docker_backend_records_its_network_sandbox():
    assert backends.get_backend("docker").sandbox() == {
        "network": "isolated", "method": "docker --network none", "reason": None, "filesystem": "boxed",
        "filesystem_method": "docker (only the step's mounts)", "filesystem_reason": None}


def test_backends_and_docker_do_not_import_each_other_in_a_cycle():
    code = ("import sys; import envs.docker; assert 'envs.backends' not in sys.modules; "
            "import envs.backends as b; assert sorted(b.ALL_BACKENDS) == ['docker', 'local']")
    subprocess.check_call([sys.executable, "-c", code], cwd=venvs.REPO_ROOT)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(Exception, match="docker, local"):
        backends.get_backend("podman")


def test_missing_engine_is_one_paragraph_naming_the_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman either
    monkeypatch.delenv(docker.ENGINE_VARIABLE, raising=False)
    with pytest.raises(docker.DockerUnavailable) as caught:
        backends.get_backend("docker").prepare("tf1.13")
    message = str(caught.value)
    assert "\n" not in message
    assert "engine (dockerd) is the missing piece" in message
    assert "unix:///nonexistent/docker.sock" in message and "--backend docker" in message
    assert "podman is not on PATH" in message and "apt-get install podman" in message


def test_a_chosen_engine_is_used_alone_and_an_unknown_one_is_named(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv(docker.ENGINE_VARIABLE, "docker")
    with pytest.raises(docker.DockerUnavailable, match="engine \\(dockerd\\) is the missing piece") as caught:
        docker.engine()
    assert "podman" not in str(caught.value)  # docker was asked for: no fallback
    monkeypatch.setenv(docker.ENGINE_VARIABLE, "containerd")
    with pytest.raises(docker.DockerUnavailable, match="choose one of: docker, podman"):
        docker.engine()


@pytest.mark.parametrize("engine_name", ["docker", "podman"])
def test_steps_run_with_the_chosen_engine_and_the_same_arguments(monkeypatch, engine_name):
    monkeypatch.setenv(docker.ENGINE_VARIABLE, engine_name)
    argv, _ = backends.get_backend("docker").command("tf2", "converters.shared.parity", ["/r"])
    assert argv[:4] == [engine_name, "run", "--rm", "--init"]
    assert argv[argv.index("--network") + 1] == "none"


def test_a_base_image_override_applies_to_the_environments_of_its_python():
    bases = {"3.7": "localhost/base:py3.7"}
    assert docker.build_args("tf1.13", bases) == docker.build_args("tf1.15", bases) == {"BASE_IMAGE": bases["3.7"]}
    assert docker.build_args("tf2", bases) == {}  # the pinned public image stays
    assert docker.build_args("tf2", None) == {}


class _Built:
    """What PodmanEngine.build starts: its argv, no output, exit 0."""

    def __init__(self, argv, **_):
        self.argv, self.stdout, self.returncode = argv, iter(()), 0
        _Built.last = argv

    def wait(self):
        return 0


def test_podman_builds_install_the_lock_from_the_hosts_uv_cache_offline(monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", _Built)
    podman = object.__new__(docker.PodmanEngine)  # no podman needed to see its command line
    monkeypatch.setattr(docker, "host_uv", lambda: ("/tools/uv", "/home/me/.cache/uv"))
    podman.build(docker.dockerfile_path("tf2"), "tfbridge:tf2-x", {}, log=lambda *_: None)
    volumes = [_Built.last[i + 1] for i, arg in enumerate(_Built.last) if arg == "--volume"]
    # the host's cache as an overlay: the build reads it and writes nothing back
    assert volumes == ["/tools/uv:%s:ro" % docker.UV_IN_BUILD, "/home/me/.cache/uv:%s:O" % docker.UV_CACHE_IN_BUILD]
    monkeypatch.setattr(docker, "host_uv", lambda: None)
    podman.build(docker.dockerfile_path("tf2"), "tfbridge:tf2-x", {}, log=lambda *_: None)
    assert "--volume" not in _Built.last
    # the Dockerfile's install: uv, offline and hash-checked, only where the build mounts it; else pip
    install = [line for line in docker.render_dockerfile("tf2").split("\nRUN ") if "/tmp/lock.txt;" in line][0]
    uv, pip = install.split("else ")
    assert "[ -x %s ]" % docker.UV_IN_BUILD in uv and "--offline" in uv and "--require-hashes --no-deps" in uv
    assert "pip install --no-cache-dir --require-hashes --no-deps" in pip


def test_the_uv_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TFBRIDGE_DOCKER_UV_CACHE", "0")
    assert docker.host_uv() is None


def test_the_repositorys_docker_folder_is_not_taken_for_the_docker_sdk(monkeypatch):
    # Without the SDK, `import docker` from the repository root finds docker/ (a namespace package);
    # that is "no SDK", said as such, not "module 'docker' has no attribute 'from_env'".
    folder = types.ModuleType("docker")
    folder.__path__ = [docker.DOCKER_DIR]
    monkeypatch.setitem(sys.modules, "docker", folder)
    with pytest.raises(docker.DockerUnavailable, match="Docker SDK for Python .* is not installed"):
        docker.sdk_client()
