"""In-environment helpers of the benchmarks (tf2). Each prints one JSON line.

    python -m bench.steps_tf2 images OUT.npy --count 1000 --size 224 [--seed S]   real images, augmented
    python -m bench.steps_tf2 evaluate MODEL.tflite RUN                      int8 model vs RUN's references
    python -m bench.steps_tf2 latency MODEL.tflite [--runs 50]              median invoke latency
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def real_images(count, size, seed=0):
    """``count`` uint8 RGB images (count, size, size, 3) from the photographs shipped in scikit-image:
    the 100 LFW faces and the colour samples, each randomly cropped, flipped and resized (augmentation
    of real pictures: the benchmark needs more samples than the package ships)."""
    from PIL import Image
    from skimage import data

    faces = data.lfw_subset()[:100]
    pictures = [np.clip(face * 255.0, 0, 255).astype(np.uint8) for face in faces]
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        try:
            pictures.append(np.asarray(getattr(data, name)()))
        except Exception:  # noqa: BLE001 - a sample missing from this scikit-image version
            pass
    random = np.random.RandomState(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        picture = pictures[random.randint(len(pictures))]
        image = Image.fromarray(picture).convert("RGB")
        width, height = image.size
        crop = random.uniform(0.7, 1.0)
        w, h = max(8, int(width * crop)), max(8, int(height * crop))
        left, top = random.randint(0, width - w + 1), random.randint(0, height - h + 1)
        image = image.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        if random.rand() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        out[index] = np.asarray(image)
    return out


def main(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images")
    images.add_argument("out")
    images.add_argument("--count", type=int, default=1000)
    images.add_argument("--size", type=int, default=224)
    images.add_argument("--seed", type=int, default=0)
    evaluate = sub.add_parser("evaluate")
    evaluate.add_argument("tflite")
    evaluate.add_argument("run")
    latency = sub.add_parser("latency")
    latency.add_argument("tflite")
    latency.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)

    from converters import runfolder

    if args.command == "images":
        array = real_images(args.count, args.size, args.seed)
        np.save(args.out, array)
        result = {"path": args.out, "shape": list(array.shape)}
    elif args.command == "evaluate":
        from converters.tf2 import tflite_run

        manifest = runfolder.read_json(os.path.join(args.run, "manifest.json"))
        probe = runfolder.read_arrays(os.path.join(args.run, "probe.npz"))
        origin = manifest["origin"]["env"]
        references = runfolder.read_arrays(os.path.join(args.run, runfolder.reference_name(origin)))
        inputs = [probe[item["name"]] for item in manifest["model"]["inputs"]]
        outputs = [references[item["name"]] for item in manifest["model"]["outputs"]]
        measured = tflite_run.evaluate(args.tflite, inputs if len(inputs) > 1 else inputs[0], outputs)
        result = {key: measured.get(key) for key in ("status", "cosine", "top1_agreement", "max_abs_lsb", "sqnr_db")}
    else:  # latency
        from converters.tf2 import tflite_run

        interpreter = tflite_run.make_interpreter(args.tflite, threads=2)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        sample = np.zeros(detail["shape"], detail["dtype"])
        times = []
        for index in range(args.runs + 3):
            interpreter.set_tensor(detail["index"], sample)
            started = time.perf_counter()
            interpreter.invoke()
            if index >= 3:  # the first invocations warm caches and XNNPACK's packing
                times.append(time.perf_counter() - started)
        result = {"median_ms": 1000.0 * float(np.median(times)), "runs": args.runs,
                  "size_bytes": os.path.getsize(args.tflite)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
