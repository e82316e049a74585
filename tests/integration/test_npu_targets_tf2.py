"""--npu-target on real int8 models (tf2): Arm's Vela compiles them, the VX delegate's op rules place them.

The model is a small real int8 conversion (TF 2.21, full int8 I/O) with two ops NPUs treat differently:
GATHER, which Vela 5.2 does not run on an Ethos-U55/U65 (its supported-ops report does not list it), and
MIRROR_PAD (a reflect pad), which the VX delegate does not map at all. Both must be named with the
reason, and --strict-npu must refuse the model for those targets.
"""

import json
import os

import numpy as np
import pytest

from converters.errors import NotInt8Error
from converters.tf2 import npu

pytestmark = pytest.mark.tf2


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("npu_targets")
    inputs = tf.keras.Input((8, 8, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.Lambda(lambda t: tf.gather(t, [2, 0, 1, 5], axis=3))(x)
    x = tf.keras.layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"))(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(4)(x)
    model = tf.keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, 8, 8, 3), dtype=np.float32)] for _ in range(16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = folder / "model_int8.tflite"
    path.write_bytes(converter.convert())
    return str(path)


def entry_of(result, target):
    return [e for e in result["targets"] if e["target"] == target][0]


def test_the_model_is_fully_int8_and_has_both_ops(int8_model):
    result = npu.check(int8_model)
    assert result["fully_int8"] is True
    assert "GATHER" in result["ops"] and "MIRROR_PAD" in result["ops"]


def test_vela_keeps_gather_on_the_cpu_and_says_why(int8_model, tmp_path):
    result = npu.check(int8_model, targets=["ethos-u55-128", "ethos-u65-256"], out_dir=str(tmp_path))
    for target in ("ethos-u55-128", "ethos-u65-256"):
        entry = entry_of(result, target)
        assert entry["status"] == "ok" and entry["compiler"].startswith("Arm Vela 5.2")
        gather = [o for o in entry["ops_on_cpu"] if o["op"] == "GATHER"]
        assert len(gather) == 1 and gather[0]["reason"], entry["ops_on_cpu"]
        assert "Unsupported" in gather[0]["reason"]
        assert entry["ops_on_npu"] < entry["ops_total"] and entry["npu_ops_fraction"] < 1.0
        assert entry["estimated_ms"] > 0 and entry["sram_bytes"] > 0
        assert entry["system_config"] and entry["memory_mode"]
        assert os.path.isfile(str(tmp_path / entry["compiled_model"]))
    json.dumps(result)  # npu.json must be able to hold it


def test_the_vx_delegate_does_not_map_mirror_pad(int8_model):
    result = npu.check(int8_model, targets=["imx8mp"])
    entry = entry_of(result, "imx8mp")
    assert entry["compiler"].startswith("VX delegate op table (VeriSilicon/tflite-vx-delegate")
    cpu = dict((o["op"], o["reason"]) for o in entry["ops_on_cpu"])
    assert cpu == {"MIRROR_PAD": "MIRROR_PAD is not mapped by the VX delegate"}
    assert entry["estimated_ms"] is None
    assert any("per-tensor" in note for note in entry["notes"])


def test_strict_npu_refuses_a_cpu_fallback_naming_target_and_op(int8_model):
    with pytest.raises(NotInt8Error) as caught:
        npu.check(int8_model, strict=True, targets=["imx8mp"])
    assert "imx8mp" in caught.value.message and "MIRROR_PAD" in caught.value.message
