"""The by-hand recipe tfbridge is measured against (runs in the tf2 environment).

What a user writes without tfbridge: load the re-saved ``.h5`` with tf-keras in TF 2.21, build a
representative dataset from the same images with the same preprocessing, and call
``TFLiteConverter.from_keras_model`` for full int8 with int8 I/O. Prints one JSON line with its
timings. The calibration images are read by tfbridge's own loader so that both sides see identical
arrays (what is compared is the conversion, not the image decoding).

    python -m bench.recipe_tf2 MODEL.h5 OUT.tflite --calib DIR --preprocess vggface2 --samples 100
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--calib", required=True)
    parser.add_argument("--preprocess", required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from converters.shared import calibration

    imported = time.perf_counter()
    model = tf_keras.models.load_model(args.model, compile=False)
    loaded = time.perf_counter()
    shape = tuple(model.inputs[0].shape.as_list()[1:])
    images = calibration.load_probe(args.calib, shape, args.preprocess, args.samples, args.seed)

    def representative_dataset():
        for image in images:
            yield [np.asarray(image[None], dtype=np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    converted = time.perf_counter()
    with open(args.output, "wb") as handle:
        handle.write(flatbuffer)
    print(json.dumps({"import_s": imported - started, "load_s": loaded - imported,
                      "convert_s": converted - loaded, "total_s": converted - started,
                      "size_bytes": len(flatbuffer)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
