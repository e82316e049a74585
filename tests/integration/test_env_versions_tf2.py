import pytest

from tests.integration._versions import check_declared_versions

pytestmark = pytest.mark.tf2


def test_environment_has_declared_versions():
    versions = check_declared_versions("tf2")
    print("tf2:", versions)
