"""In-environment helpers of the benchmarks (tf2). Each prints one JSON line.

    python -m bench.steps_tf2 images OUT.npy --count 1000 --size 224 [--seed S]   real images, augmented
    python -m bench.steps_tf2 evaluate MODEL.tflite RUN                      int8 model vs RUN's references
    python -m bench.steps_tf2 latency MODEL.tflite [--runs 50]              median invoke latency
    python -m bench.steps_tf2 fidelity MODEL.tflite RUN                      centered SQNR, correlation (issue 30)
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


def centered_fidelity(reference, output):
    """{sqnr_centered_db, correlation} of one output on a probe (N, ...), as issue 30 defines them (the lead's
    ``converters/shared/metrics.py`` computes the same; the benchmark uses this one only when a report lacks
    them): centered SQNR = 10 log10(sum((ref - mean_ref)^2) / sum((int8 - ref)^2)), ``mean_ref`` each output
    element's mean over the probe samples; correlation = Pearson's between (ref - mean_ref) and
    (int8 - mean_int8), flattened (0 for a constant int8 output)."""
    reference = np.asarray(reference, np.float64)
    output = np.asarray(output, np.float64).reshape(reference.shape)
    centered = reference - reference.mean(axis=0, keepdims=True)
    moved = output - output.mean(axis=0, keepdims=True)
    noise = float(np.sum((output - reference) ** 2))
    signal = float(np.sum(centered ** 2))
    if noise == 0.0:
        sqnr = float("inf") if signal > 0 else 0.0
    else:
        sqnr = 10.0 * np.log10(max(signal, 1e-300) / noise)
    spread = float(np.sqrt(np.sum(centered ** 2) * np.sum(moved ** 2)))
    correlation = float(np.sum(centered * moved) / spread) if spread > 0 else 0.0
    return {"sqnr_centered_db": round(float(sqnr), 2) + 0.0, "correlation": round(correlation, 4) + 0.0}  # no -0.0


def fidelity(tflite_path, run):
    """The int8 model at ``tflite_path`` on RUN's probe against RUN's origin references: raw and centered
    SQNR, correlation, cosine, top-1 agreement (worst output), per output, and the same figures for a
    constant output equal to the references' mean (what a flattened model would score)."""
    from converters import runfolder
    from converters.shared import metrics
    from converters.tf2 import tflite_run

    manifest = runfolder.read_json(os.path.join(run, "manifest.json"))
    probe = runfolder.read_arrays(os.path.join(run, "probe.npz"))
    origin = manifest["origin"]["env"]
    references = runfolder.read_arrays(os.path.join(run, runfolder.reference_name(origin)))
    inputs = [probe[item["name"]] for item in manifest["model"]["inputs"]]
    names = [item["name"] for item in manifest["model"]["outputs"]]
    wanted = [np.asarray(references[name], np.float32) for name in names]
    outputs, _, _ = tflite_run.run(tflite_path, inputs if len(inputs) > 1 else inputs[0])
    per_output, constant = [], []
    for name, reference, output in zip(names, wanted, outputs):
        flat = np.broadcast_to(reference.mean(axis=0, keepdims=True), reference.shape)
        for rows, candidate in ((per_output, output.reshape(reference.shape)), (constant, flat)):
            row = dict((key, value) for key, value in metrics.compare_quantized(reference, candidate, 1.0).items()
                       if key in ("sqnr_db", "cosine", "top1_agreement"))
            row.update(centered_fidelity(reference, candidate), name=name)
            rows.append(row)

    def worst(rows):
        agreements = [r["top1_agreement"] for r in rows if r.get("top1_agreement") is not None]
        return {"sqnr_db": min(r["sqnr_db"] for r in rows), "sqnr_centered_db": min(r["sqnr_centered_db"] for r in rows),
                "correlation": min(r["correlation"] for r in rows), "cosine": min(r["cosine"] for r in rows),
                "top1_agreement": min(agreements) if agreements else None, "outputs": rows}

    result = worst(per_output)
    result["constant"] = worst(constant)
    result["probe_samples"] = int(len(wanted[0]))
    return result


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
    measured = sub.add_parser("fidelity")
    measured.add_argument("tflite")
    measured.add_argument("run")
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
    elif args.command == "fidelity":
        result = fidelity(args.tflite, args.run)
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
