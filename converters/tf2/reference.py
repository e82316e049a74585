"""The float reference of a TF 2.x model: its outputs on the probe batch, in its own TF, float32.

For whom: preparing a run folder for a TF 2.x model (``converters.tf2.prepare``: reference_tf2.npz) and
the tests; ``tf2`` environment only. The int8 model is later measured against these outputs.

What can go wrong: whatever the model raises on the probe (a shape that does not fit its input).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def float_reference(source, samples):
    """Float outputs of ``source`` (a ``converters.tf2.sources.Source``) on ``samples`` (N, ...).

    Returns {output_name: array}, computed batch 1 at a time. Uses the Keras model when there is one,
    else the SavedModel's serving signature.
    """
    if source.keras_model is not None and source.kind != "keras3":
        model = source.keras_model
        outputs = [model(samples[i:i + 1], training=False) for i in range(len(samples))]
        if isinstance(outputs[0], (list, tuple)):
            return {o["name"]: np.concatenate([np.asarray(out[k]) for out in outputs])
                    for k, o in enumerate(source.outputs)}
        return {source.outputs[0]["name"]: np.concatenate([np.asarray(o) for o in outputs])}
    if source.keras_model is not None:  # keras 3
        model = source.keras_model
        out = np.concatenate([np.asarray(model(samples[i:i + 1], training=False)) for i in range(len(samples))])
        return {source.outputs[0]["name"]: out}
    loaded = tf.saved_model.load(source.path)
    signature = loaded.signatures["serving_default"]
    name = source.inputs[0]["name"]
    results = [signature(**{name: tf.constant(samples[i:i + 1])}) for i in range(len(samples))]
    return {o["name"]: np.concatenate([np.asarray(r[o["name"]]) for r in results]) for o in source.outputs}
