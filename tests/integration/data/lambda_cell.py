"""An RNN cell that applies a Lambda layer it holds (keras 2.2.4), for the Lambda-gate trap inside
``Bidirectional``: keras 2.2.4 cannot wrap a Lambda in ``Bidirectional`` directly (it needs a recurrent
layer with ``go_backwards``), so the trap is ``Bidirectional(RNN(LambdaCell(inner=Lambda(...))))``.
Loading it needs ``--custom-objects`` with this file."""

import keras
from keras import backend as K


class LambdaCell(keras.layers.Layer):
    def __init__(self, units, inner=None, **kwargs):
        super(LambdaCell, self).__init__(**kwargs)
        self.units = units
        self.state_size = units
        if isinstance(inner, dict):
            inner = keras.layers.deserialize(inner)
        self.inner = inner

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.built = True

    def call(self, inputs, states):
        output = K.dot(self.inner.call(inputs), self.kernel) + states[0]
        return output, [output]

    def get_config(self):
        config = super(LambdaCell, self).get_config()
        config.update(units=self.units, inner={"class_name": type(self.inner).__name__,
                                               "config": self.inner.get_config()})
        return config


CUSTOM_OBJECTS = {"LambdaCell": LambdaCell}
