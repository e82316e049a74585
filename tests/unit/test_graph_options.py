"""Host-side checks of TF 1.x graph sources (issue 11): ``--inputs``/``--outputs`` syntax, the model kind by
content (GraphDef, SavedModel, checkpoint, not a graph), graph-only options, run folder names and the parity
cells of a graph. Standard library only: the protobuf bytes are written by hand here."""

import os

import pytest

from converters import preflight_model, preflight_options, verify
from converters.errors import InputFileError, UsageError

pytestmark = pytest.mark.unit


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def graph_def_bytes():
    node = _field(1, b"input") + _field(2, b"Placeholder")
    return _field(1, node) + _field(1, _field(1, b"out") + _field(2, b"Softmax") + _field(3, b"input")) + \
        _field(4, _varint(1 << 3) + _varint(27))


def test_inputs_syntax_names_shapes_and_tensor_indices():
    assert preflight_options.parse_tensor_list("input:1x224x224x3,seq:?x20x8,split:1,scope/x") == [
        ("input", [1, 224, 224, 3]), ("seq", [None, 20, 8]), ("split:1", None), ("scope/x", None)]


@pytest.mark.parametrize("text, words", [
    ("image:1x2xax3", "neither a positive number nor ?"),
    ("image:?x?x3", "only the first (batch) dimension may be ?"),
    ("image,,meta", "empty name"),
    ("image:abc", "neither a shape"),
    ("image,image", "names image twice"),
    ("bad name!", "is not a tensor name"),
])
def test_inputs_syntax_errors_say_what_is_wrong(text, words):
    with pytest.raises(UsageError) as caught:
        preflight_options.parse_tensor_list(text, "--inputs")
    assert words in caught.value.message and caught.value.step == "preflight"


def test_outputs_take_names_not_shapes():
    with pytest.raises(UsageError):
        preflight_options.parse_tensor_list("scores:1x4", "--outputs", shapes=False)


def test_model_kind_by_content(tmp_path):
    graph = tmp_path / "model.pb"
    graph.write_bytes(graph_def_bytes())
    assert preflight_model.model_kind(str(graph)) == "frozen_graph"
    text = tmp_path / "model.pbtxt"
    text.write_text('node {\n  name: "input"\n  op: "Placeholder"\n}\n')
    assert preflight_model.model_kind(str(text)) == "frozen_graph"
    saved = tmp_path / "saved_model.pb"
    saved.write_bytes(_varint(1 << 3) + _varint(1) + _field(2, _field(1, b"")))
    assert preflight_model.model_kind(str(saved)) == "saved_model_file"
    folder = tmp_path / "sm"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(saved.read_bytes())
    assert preflight_model.model_kind(str(folder)) == "saved_model"
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\xff" * 64 + b"not a graph")
    assert preflight_model.model_kind(str(junk)) == "unknown"
    hdf5_named_pb = tmp_path / "weird.pb"
    hdf5_named_pb.write_bytes(preflight_model.HDF5_SIGNATURE + b"\0" * 64)
    assert preflight_model.model_kind(str(hdf5_named_pb)) == "h5"


def test_checkpoint_by_meta_prefix_or_folder(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    meta = folder / "model.ckpt-7.meta"
    meta.write_bytes(_field(1, _field(1, b"v1")) + _field(2, graph_def_bytes()))
    (folder / "model.ckpt-7.index").write_bytes(b"index")
    (folder / "model.ckpt-7.data-00000-of-00001").write_bytes(b"data")
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-7"\n')
    prefix = str(folder / "model.ckpt-7")
    for given in (str(meta), prefix, str(folder)):
        assert preflight_model.model_kind(given) == "checkpoint"
        assert preflight_model.checkpoint_meta(given) == str(meta)
    assert [os.path.basename(f) for f in preflight_model.model_files(prefix)] == [
        "model.ckpt-7.data-00000-of-00001", "model.ckpt-7.index", "model.ckpt-7.meta"]
    assert preflight_model.check_model("convert_legacy", prefix) == "checkpoint"


def test_a_pb_that_is_not_a_graph_is_refused_in_words(tmp_path):
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\xff" * 64)
    with pytest.raises(InputFileError) as caught:
        preflight_model.check_model("convert_legacy", str(junk))
    assert "is not a TensorFlow GraphDef" in caught.value.message


def test_a_saved_model_file_asks_for_its_folder(tmp_path):
    saved = tmp_path / "saved_model.pb"
    saved.write_bytes(_varint(1 << 3) + _varint(1) + _field(2, _field(1, b"")))
    with pytest.raises(InputFileError) as caught:
        preflight_model.check_model("verify_upgrade", str(saved))
    assert "folder" in caught.value.hint


def test_graph_options_are_refused_for_a_keras_file_and_tags_for_a_graphdef():
    with pytest.raises(UsageError) as caught:
        preflight_options.check_graph_options({"model": "m.h5", "inputs": "x"}, "h5")
    assert "--inputs only apply to a TF 1.x graph" in caught.value.message
    with pytest.raises(UsageError):
        preflight_options.check_graph_options({"model": "m.pb", "tags": "serve"}, "frozen_graph")
    preflight_options.check_graph_options({"model": "sm", "tags": "serve", "inputs": "x:?x4"}, "saved_model")


def test_graph_cells_and_run_folder_names():
    assert verify.cells_for("tf1.13", graph=True) == [("tf1.15", "tf1.15", "graph"), ("tf2-graph", "tf2", "graph")]
    assert verify.cells_for("tf1.15", graph=True) == [("tf2-graph", "tf2", "graph")]
    assert verify.default_out("/m/model.ckpt.meta") == os.path.join("runs", "model.ckpt")
    assert verify.default_out("/m/saved_model_dir/") == os.path.join("runs", "saved_model_dir")
    assert verify.default_out("/m/frozen.pbtxt") == os.path.join("runs", "frozen")
