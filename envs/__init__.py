"""tfbridge's environments: declarations (registry), locks, interpreter discovery, venvs.

Host side: standard library only, never imports TensorFlow. Python 3.7 compatible so that the test
configuration inside the TF 1.x environments can read the registry too.
"""

from envs.errors import EnvError, InstallFailed, InterpreterNotFound, LockMissing  # noqa: F401
from envs.registry import ENVIRONMENTS, TF_ENVIRONMENTS, get, marker_name, pinned_version  # noqa: F401
