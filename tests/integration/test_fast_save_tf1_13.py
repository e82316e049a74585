"""The re-save's ``.h5`` save reads every weight in one session run (issue 13) and writes the same file.

Inside tf1.13 with real TensorFlow, both Keras flavours (standalone keras 2.2.4 and tf.keras 1.13): Keras's
own ``model.save`` reads the weights layer by layer, one ``Session.run`` each (on ResNet50 the executor each
new fetch set builds is 6.5 of the save's 6.9 s); ``compat.save_h5`` reads them once. The files must hold
the same groups, datasets, values and attributes (HDF5 object timestamps aside, which differ between
any two saves).
"""

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.tf1_13

import tensorflow as tf  # noqa: E402

from legacy_tf1 import compat, loading, zoo  # noqa: E402


def _contents(path):
    found = {}
    with h5py.File(path, "r") as handle:
        def visit(name, item):
            attrs = dict((k, np.asarray(v).tobytes()) for k, v in item.attrs.items())
            data = (item.dtype.str, item.shape, item[()].tobytes()) if isinstance(item, h5py.Dataset) else None
            found[name] = (attrs, data)
        handle.visititems(visit)
        found["/"] = dict((k, np.asarray(v).tobytes()) for k, v in handle.attrs.items())
    return found


class _CountingRun(object):
    def __init__(self, monkeypatch):
        self.count = 0
        original = tf.Session.run

        def run(session, *args, **kwargs):
            self.count += 1
            return original(session, *args, **kwargs)

        monkeypatch.setattr(tf.Session, "run", run)


@pytest.mark.parametrize("name", ["keras-cnn", "tfkeras-cnn"])
def test_save_h5_reads_weights_once_and_writes_what_keras_writes(tmp_path, name, monkeypatch):
    source = str(tmp_path / "source.h5")
    zoo.save(name, source)
    outputs = {}
    runs = {}
    for how in ("keras", "once"):
        for flavour in compat.FLAVOURS:
            compat.reset(flavour)
        model, flavour, _ = loading.load(source)
        counter = _CountingRun(monkeypatch)
        path = str(tmp_path / ("%s.h5" % how))
        if how == "keras":
            model.save(path, include_optimizer=False)
        else:
            compat.save_h5(model, flavour, path)
        runs[how] = counter.count
        monkeypatch.undo()
        outputs[how] = _contents(path)
    assert runs["keras"] >= 3, runs  # Keras: one run per layer with weights (conv, BN, ..., dense)
    assert runs["once"] == 1, runs
    assert set(outputs["once"]) == set(outputs["keras"])
    different = [key for key in outputs["keras"] if outputs["keras"][key] != outputs["once"][key]]
    assert not different, different
    # and the module attribute the saver uses is Keras's own again afterwards
    backend = compat.backend(flavour)
    assert backend.batch_get_value.__name__ == "batch_get_value" and \
        backend.batch_get_value.__module__ != compat.__name__
