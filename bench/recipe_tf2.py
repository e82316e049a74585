"""The by-hand recipes tfbridge is measured against (run in the tf2 environment).

What a user writes without tfbridge, in TF 2.21, for full int8 with int8 I/O, calibrated on the same
preprocessed samples tfbridge gets (read with tfbridge's own loader, so that both sides see identical
arrays: what is compared is the conversion, not the image decoding):

- ``--route keras`` (the article's recipe): load the re-saved ``.h5`` with tf-keras, then
  ``tf.lite.TFLiteConverter.from_keras_model``;
- ``--route frozen_graph`` (the same route as tfbridge's): tfbridge's own frozen graph ``RUN/model.pb``
  with ``tf.compat.v1.lite.TFLiteConverter.from_frozen_graph`` and the tensor names of
  ``RUN/manifest.json``, batch 1: what is left of tfbridge's speed-up against it is tfbridge's own doing,
  not the route's.

The window timed (``window_s``) is the one tfbridge's step reports as ``timings.model_to_int8``: from the
model on disk to the int8 file written (load, calibration data, conversion, write), inside this process,
after ``import tensorflow``. Prints one JSON line.

    python -m bench.recipe_tf2 RUN OUT.tflite --route keras|frozen_graph --calib FILE --preprocess NAME
"""

import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROUTES = ("keras", "frozen_graph")


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("run", help="a tfbridge run folder (model.h5, model.pb, manifest.json)")
    parser.add_argument("output")
    parser.add_argument("--route", choices=ROUTES, default="keras")
    parser.add_argument("--calib", required=True)
    parser.add_argument("--preprocess", required=True)
    parser.add_argument("--samples", type=int, default=None, help="calibration samples (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    from converters.shared import calibration

    imported = time.perf_counter()
    with open(os.path.join(args.run, "manifest.json")) as handle:
        manifest = json.load(handle)
    shape = tuple(manifest["model"]["inputs"][0]["shape"][1:])
    if args.route == "keras":
        import tf_keras

        model = tf_keras.models.load_model(os.path.join(args.run, "model.h5"), compile=False)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        graph = manifest["model"]["frozen_graph"]
        inputs = graph["input_arrays"]
        converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            os.path.join(args.run, graph.get("path") or "model.pb"), inputs, graph["output_arrays"],
            input_shapes={inputs[0]: [1] + list(shape)})
    loaded = time.perf_counter()
    # shared=False: every sample of --calib is a calibration sample (shared=True would keep half of the
    # file back as a probe, as tfbridge does for a --calib that also feeds its probe: the by-hand recipe
    # then calibrated on 50 samples where tfbridge calibrated on 100)
    images = calibration.load_probe(args.calib, shape, args.preprocess, args.samples, args.seed, shared=False)

    def representative_dataset():
        for image in images:
            yield [np.asarray(image[None], dtype=np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    converted = time.perf_counter()
    with open(args.output, "wb") as handle:
        handle.write(flatbuffer)
    written = time.perf_counter()
    print(json.dumps({"route": args.route, "samples": int(len(images)), "import_s": imported - started,
                      "load_s": loaded - imported, "convert_s": converted - loaded, "window_s": written - imported,
                      "size_bytes": len(flatbuffer), "sha256": hashlib.sha256(flatbuffer).hexdigest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
