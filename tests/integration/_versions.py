"""Shared body of the per-environment version checks (Python 3.7 compatible)."""

import os

from envs import registry


def check_declared_versions(env_name):
    """The running environment is ``env_name`` and imports exactly the versions its declaration pins."""
    assert os.environ.get("TFBRIDGE_ENV") == env_name
    env = registry.get(env_name)
    import tensorflow as tf

    expected_tf = registry.pinned_version(env, "tensorflow") or registry.pinned_version(env, "tensorflow-cpu")
    assert tf.__version__ == expected_tf, (tf.__version__, expected_tf)
    expected_keras = registry.pinned_version(env, "keras")
    if expected_keras is not None:  # standalone Keras of the TF 1.x environments
        import keras

        assert keras.__version__ == expected_keras, (keras.__version__, expected_keras)
    expected_tf_keras = registry.pinned_version(env, "tf-keras")
    if expected_tf_keras is not None:
        import tf_keras

        assert tf_keras.__version__ == expected_tf_keras, (tf_keras.__version__, expected_tf_keras)
    import h5py
    import numpy

    python = "%d.%d" % __import__("sys").version_info[:2]
    assert python == env.python, (python, env.python)
    return {"tensorflow": tf.__version__, "h5py": h5py.__version__, "numpy": numpy.__version__}
