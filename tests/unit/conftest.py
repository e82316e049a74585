"""Fixtures shared by the host unit tests."""

import shutil

import pytest

from envs import locking, registry, venvs


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    """A real one-package environment declared and locked in a temporary home (not created)."""
    monkeypatch.setenv("TFBRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(venvs, "LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(locking, "lock_path", venvs.lock_path)
    tiny = registry.Environment("tiny", "3.11", ("iniconfig==2.0.0",), "test", "x86_64-manylinux_2_28")
    monkeypatch.setitem(registry.ENVIRONMENTS, "tiny", tiny)
    if shutil.which("uv") is None:
        pytest.skip("locking needs uv")
    locking.write_lock("tiny", log=lambda *_: None)
    return "tiny"
