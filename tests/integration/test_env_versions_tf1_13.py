import pytest

from tests.integration._versions import check_declared_versions

pytestmark = pytest.mark.tf1_13


def test_environment_has_declared_versions():
    versions = check_declared_versions("tf1.13")
    print("tf1.13:", versions)
