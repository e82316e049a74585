"""Custom objects for the perturbed parity test: a layer whose arithmetic changes in TensorFlow 2.

``ScaleShift`` computes ``x * 2 + 1`` under TF 1.x and ``x * 2 + 1.5`` under TF 2.x, standing in for a
custom layer that a newer TF/Keras silently evaluates differently. The parity check must report
``mismatch`` with ``first_divergent_layer == "scale_shift"``. Importable in every environment: it picks the
Keras that loads the model there (standalone Keras in TF 1.x, tf-keras or Keras 3 in TF 2.x).
"""

import os

import tensorflow as tf

if tf.__version__.startswith("1."):
    import keras  # the model is built and saved with standalone Keras in tf1.13
    SHIFT = 1.0
else:
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras as keras
    else:
        import keras
    SHIFT = 1.5  # the deliberate drift


class ScaleShift(keras.layers.Layer):
    def __init__(self, scale=2.0, **kwargs):
        super(ScaleShift, self).__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs * self.scale + SHIFT

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super(ScaleShift, self).get_config()
        config["scale"] = self.scale
        return config


CUSTOM_OBJECTS = {"ScaleShift": ScaleShift}
