"""A model saved as .h5 in tf1.13 loads in tf1.15 and in tf2 (tf-keras) with the same outputs.

Both flavours of the TF 1.13 era are covered: standalone keras 2.2.4 and tf.keras. Each step runs in
its real environment as a subprocess; the arrays travel as .npz files, as in the run folder.

Tolerance: |a - b| <= 1e-5 + 1e-4 * |a| per element. The model and the inputs are identical, so the only
differences are float32 reassociation in different kernel builds (Eigen/MKL versions, XNNPACK in TF 2);
measured TF 1.13 -> 1.15 on a small model: 3e-8. 1e-5 absolute on outputs of order 1
is ~100 float32 ULPs: loose enough for kernel changes, tight enough that any real change of a weight,
activation or layer order (>= 1e-3) fails.
"""

import os
import subprocess

import numpy as np
import pytest

from envs import venvs

pytestmark = pytest.mark.crossenv

ATOL = 1e-5
RTOL = 1e-4

MAKE = r'''
import sys, numpy as np
flavour, out = sys.argv[1], sys.argv[2]
if flavour == "keras":
    import keras
    from keras import layers
else:
    from tensorflow import keras
    from tensorflow.keras import layers
import tensorflow as tf
np.random.seed(7); tf.set_random_seed(7)
inputs = layers.Input(shape=(16, 16, 3), name="image")
x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
x = layers.BatchNormalization(name="bn")(x)
x = layers.MaxPooling2D(name="pool")(x)
x = layers.Flatten(name="flat")(x)
outputs = layers.Dense(5, activation="softmax", name="probs")(x)
model = keras.models.Model(inputs, outputs)
# Non-trivial batch-norm statistics, so that loading them wrongly would show.
bn = model.get_layer("bn")
gamma, beta, mean, var = bn.get_weights()
bn.set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, var * 2.0])
probe = np.random.RandomState(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
model.save(out + "/model.h5")
np.savez(out + "/probe.npz", x=probe)
np.savez(out + "/out_tf1.13.npz", y=model.predict(probe))
'''

LOAD = r'''
import os, sys, numpy as np
flavour, out, label = sys.argv[1], sys.argv[2], sys.argv[3]
if label == "tf2":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras
elif flavour == "keras":
    import keras
else:
    from tensorflow import keras
model = keras.models.load_model(out + "/model.h5", compile=False)
probe = np.load(out + "/probe.npz")["x"]
np.savez(out + "/out_%s.npz" % label, y=model.predict(probe))
'''


def _run(env_name, script, *args):
    result = subprocess.run(
        [venvs.python_of(env_name), "-c", script] + [str(arg) for arg in args],
        env=venvs.run_environ(env_name), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=600,
    )
    assert result.returncode == 0, "%s failed:\n%s" % (env_name, result.stdout[-3000:])


@pytest.mark.parametrize("flavour", ["keras", "tf.keras"])
def test_h5_from_tf113_loads_with_same_outputs(tmp_path, flavour):
    _run("tf1.13", MAKE, flavour, tmp_path)
    reference = np.load(os.path.join(str(tmp_path), "out_tf1.13.npz"))["y"]
    assert reference.shape == (4, 5)
    assert np.allclose(reference.sum(axis=1), 1.0, atol=1e-5)  # a real softmax, not zeros
    for env_name in ("tf1.15", "tf2"):
        _run(env_name, LOAD, flavour, tmp_path, env_name)
        outputs = np.load(os.path.join(str(tmp_path), "out_%s.npz" % env_name))["y"]
        assert outputs.shape == reference.shape
        difference = np.abs(outputs - reference)
        worst = np.unravel_index(np.argmax(difference), difference.shape)
        print("%s %s: max |diff| %.3g" % (flavour, env_name, difference.max()))
        assert np.all(difference <= ATOL + RTOL * np.abs(reference)), (
            "%s file from tf1.13 differs in %s at %s: %r vs %r (max |diff| %.3g)"
            % (flavour, env_name, worst, outputs[worst], reference[worst], difference.max())
        )
