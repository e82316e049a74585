"""Local base images (envs/docker_base.py): the parts that need neither root nor an engine."""

import pytest

from envs import docker_base

pytestmark = pytest.mark.unit


def test_the_debian_mirror_is_apts_own_in_either_sources_format(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert docker_base.apt_mirror([str(deb822)]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# deb http://old.example/debian bookworm main\n"
                        "deb https://packages.example/apt stable main\n"
                        "deb [signed-by=/k.gpg] http://ftp.example/debian bookworm main\n")
    assert docker_base.apt_mirror([str(one_line)]) == "http://ftp.example/debian"
    assert docker_base.apt_mirror([str(tmp_path / "absent")]) == docker_base.DEFAULT_MIRROR


def test_the_image_trusts_what_pip_on_the_host_trusts(tmp_path, monkeypatch):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple https://more.example/simple")
    assert docker_base.host_ca_bundle() == str(bundle)
    assert docker_base.pip_conf().splitlines() == [
        "[global]", "cert = %s" % docker_base.CA_BUNDLE, "index-url = https://pypi.example/simple",
        "extra-index-url = https://more.example/simple"]  # a host's file:// index means nothing in the image


def test_the_tag_changes_with_what_goes_into_the_image(tmp_path, monkeypatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    first = docker_base.base_tag("3.11", "http://a.example/debian")
    assert first.startswith("localhost/tfbridge-base:py3.11-")
    assert docker_base.base_tag("3.11", "http://a.example/debian") == first
    assert docker_base.base_tag("3.11", "http://b.example/debian") != first
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    assert docker_base.base_tag("3.11", "http://a.example/debian") != first
