"""The table of known upgrade hazards (converters/shared/hazards.py: pure Python) and the --no-keras3 wiring
of verify_upgrade (host side). The hazards themselves are reproduced with real models in
tests/integration/test_keras3_migration_crossenv.py."""

import json

import pytest

from converters import options, parity_matrix, parity_verdict
from converters.shared import hazards

pytestmark = pytest.mark.unit

KERAS3 = {"env": "tf2-keras3", "keras": "keras3", "origin": "tf1.13"}
TF_KERAS = {"env": "tf2", "keras": "tf_keras", "origin": "tf1.13"}
TF115 = {"env": "tf1.15", "keras": "keras", "origin": "tf1.13"}


def ids(layer, class_name, config, context):
    return [hazard["id"] for hazard in hazards.lookup(layer, class_name, config, context)]


def test_keras3_hard_sigmoid_is_named_for_lstm_gru_and_activations_in_keras3_only():
    lstm = {"name": "lstm_1", "recurrent_activation": "hard_sigmoid", "activation": "tanh"}
    assert ids("lstm_1", "LSTM", lstm, KERAS3) == ["keras3-hard-sigmoid"]
    assert ids("gru_1", "GRU", dict(lstm, name="gru_1"), KERAS3) == ["keras3-hard-sigmoid"]
    assert ids("gate", "Activation", {"activation": "hard_sigmoid"}, KERAS3) == ["keras3-hard-sigmoid"]
    assert ids("bi", "Bidirectional", {"layer": {"class_name": "LSTM", "config": lstm}}, KERAS3) == \
        ["keras3-hard-sigmoid"]
    assert ids("lstm_1", "LSTM", lstm, TF_KERAS) == []  # tf-keras keeps Keras 2's hard_sigmoid
    assert ids("lstm_1", "LSTM", dict(lstm, recurrent_activation="sigmoid"), KERAS3) == []


def test_tf1_resize_and_bn_epsilon_are_named_in_tf2_not_in_tf115():
    up = {"interpolation": "bilinear", "size": [2, 2]}
    assert ids("up", "UpSampling2D", up, TF_KERAS) == ["tf1-resize-bilinear"]
    assert ids("up", "UpSampling2D", up, KERAS3) == ["tf1-resize-bilinear"]
    assert ids("up", "UpSampling2D", up, TF115) == []
    assert ids("up", "UpSampling2D", dict(up, interpolation="nearest"), TF_KERAS) == []
    assert ids("bn", "BatchNormalization", {"epsilon": 1e-7}, TF_KERAS) == ["tf1-bn-epsilon"]
    assert ids("bn", "BatchNormalization", {"epsilon": 1e-3}, TF_KERAS) == []


def test_each_hazard_says_what_changed_and_what_to_do():
    for hazard in hazards.HAZARDS:
        assert hazard["id"] and len(hazard["explanation"]) > 80 and len(hazard["fix"]) > 40, hazard["id"]
    found = hazards.lookup("lstm_1", "LSTM", {"recurrent_activation": "hard_sigmoid"}, KERAS3)[0]
    assert set(found) >= {"id", "layer", "explanation", "fix"} and found["layer"] == "lstm_1"


def test_layer_configs_reads_a_stored_model_config_at_every_depth():
    inner = {"class_name": "Model", "config": {"name": "inner", "layers": [
        {"class_name": "LSTM", "config": {"name": "deep_lstm", "recurrent_activation": "hard_sigmoid"}}]}}
    config = {"class_name": "Model", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "x"}}, dict(inner, name="inner")]}}
    configs = hazards.layer_configs(json.dumps(config).encode("utf-8"))
    assert configs["deep_lstm"][0] == "LSTM" and "x" in configs


def test_no_keras3_drops_the_migrated_cell_and_is_a_legacy_option():
    assert ("tf2-keras3-migrated", "tf2", "keras3") in parity_matrix.cells_for("tf1.13")
    assert "tf2-keras3-migrated" not in [cell[0] for cell in parity_matrix.cells_for("tf1.13", keras3=False)]
    assert options.parse(options.VERIFY_UPGRADE, ["m.h5", "--no-keras3"]).no_keras3 is True
    assert options.parse(options.CONVERT_LEGACY, ["m.h5"]).no_keras3 is False
    with pytest.raises(Exception):
        options.parse(options.CONVERT, ["m.h5", "--no-keras3"])


def test_a_keras3_mismatch_is_tolerated_only_when_the_migrated_model_matches():
    def cells(migrated):
        return [{"env": "tf2-keras3", "status": "mismatch", "tolerated": False},
                {"env": "tf2-keras3-migrated", "status": migrated, "tolerated": False}]

    good, bad = cells("match"), cells("mismatch")
    parity_verdict._tolerate_keras3_as_is(good)
    parity_verdict._tolerate_keras3_as_is(bad)
    assert good[0]["tolerated"] is True and bad[0]["tolerated"] is False
    assert bad[1]["tolerated"] is False


def test_migrated_activations_are_compared_under_the_origin_names(tmp_path):
    from converters import runfolder
    from converters.shared import parity

    runfolder.write_json(str(tmp_path / "migration.json"), {
        "renamed": {"conv1/7x7": "conv1_7x7"}, "helper_layers": ["gate__hard_sigmoid_affine", "up__rows"],
        "outputs": {"gate__hard_sigmoid": "gate"}})
    old_of, skip = parity.migrated_names(str(tmp_path))
    assert old_of == {"conv1_7x7": "conv1/7x7", "gate__hard_sigmoid": "gate"}
    # "gate" itself now gives the pre-activation; its output is gate__hard_sigmoid's
    assert skip == {"gate__hard_sigmoid_affine", "up__rows", "gate"}
