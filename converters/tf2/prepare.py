"""What the int8 model is measured against: the probe batch and the float reference outputs of a run.

For whom: the conversion step (``converters.tf2.tflite_convert``); ``tf2`` environment only. Two cases:

- ``for_tf2_model``: a TF 2.x model given with ``--model``. Its run folder is prepared here: the probe
  batch drawn from ``--probe``, else from ``--calib`` (the last ``--probe-samples`` of its seeded
  permutation: ``converters.shared.calibration.draw_probe``, as the legacy re-save step draws it)
  (probe.npz), the model's float outputs on it in TF 2.x (reference_tf2.npz, ``converters.tf2.reference``)
  and manifest.json (model, environment, probe).
- ``from_run_folder``: a run folder already filled by the legacy re-save step (manifest.json,
  probe.npz, reference_<origin>.npz): read back, and ``--calib`` defaults to the probe's own images.

Either way ``Prepared`` says how calibration keeps clear of the probe: ``reserve_probe`` (calibration
draws from the probe's own source: leave the tail of the permutation to the probe) and ``probe_keys``
(the probe samples' content hashes: calibration skips any sample equal to one, and the overlap reported
in ``data`` is counted against them).

What can go wrong: ``UsageError`` (no calibration data), ``InputFileError`` (the run folder lacks its
reference outputs), ``CalibrationDataError`` (from the probe data).
"""

import dataclasses
import hashlib
import os
import platform
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras = Keras 2 (tf_keras): legacy .h5 need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from converters import runfolder  # noqa: E402
from converters.errors import InputFileError, UsageError  # noqa: E402


@dataclasses.dataclass
class Prepared:
    """The probe and references of a run, and the calibration settings the conversion uses."""

    probe: object  # (N, ...) float32 for a model of one input; a list of such batches (input order) for several
    references: object  # reference outputs in the model's output order, or a callable: ``reference_outputs``
    origin: str  # the environment the references come from ("tf2", "tf1.13", ...)
    calib: str | None  # calibration data (``--calib``, or the probe's own images for a run folder)
    preprocess: str
    timings: dict
    probe_keys: list = dataclasses.field(default_factory=list)  # [(source key, sample key)] per probe sample
    reserve_probe: int = 0  # calibration shares the probe's source: the permutation's last N are the probe's
    calib_seed: int | None = None  # the seed of that shared permutation (the probe's)
    probe_data: dict = dataclasses.field(default_factory=dict)  # {"source", "count"} for report.json data

    def reference_outputs(self):
        """The reference outputs; read when first needed (the re-save may still be writing them)."""
        if callable(self.references):
            self.references = self.references()
        return self.references


def _same_source(a, b):
    if not a or not b:
        return False
    if calibration_builtin(a) or calibration_builtin(b):
        return calibration_builtin(a) and calibration_builtin(b)
    return os.path.realpath(str(a)) == os.path.realpath(str(b))


def calibration_builtin(path):
    return str(path) == "skimage"


def for_tf2_model(out_dir, model_path, source, calib, preprocess, probe_samples, seed, probe=None):
    """Write manifest.json, probe.npz and reference_tf2.npz for a TF 2.x model into ``out_dir``.

    ``source``: the loaded ``converters.tf2.sources.Source``; ``calib``: the ``--calib`` value (required);
    ``preprocess``: the ``--preprocess`` value (default raw); ``probe``: the ``--probe`` value (a separate
    probe source; without it the probe is the tail of ``calib``'s permutation). Returns a ``Prepared``
    (origin ``tf2``).
    """
    from converters.shared import calibration
    from converters.tf2 import reference

    if not calib:
        raise UsageError("no calibration data (--calib).", step="calibrate",
                         hint="Give --calib with a folder of representative images (preprocessed with "
                              "--preprocess as in training), an .npy file, or 'skimage' for the "
                              "built-in sample photos (a demo, not your data).")
    preprocess = preprocess or "raw"
    started = time.perf_counter()
    shared = not probe or _same_source(probe, calib)
    if len(source.inputs) != 1:
        raise UsageError("a TF 2.x model of %d inputs (%s): convert does not feed several inputs yet."
                         % (len(source.inputs), ", ".join(i["name"] for i in source.inputs)), step="calibrate",
                         hint="Models of several inputs convert through `convert_legacy` (a run folder), with "
                              "--calib an .npz holding one array per input name.")
    drawn = calibration.draw_probe(probe if probe else calib, source.input_shape, preprocess, probe_samples, seed,
                                   shared=shared, input_name=source.inputs[0]["name"], batch_first=True)
    probe_array = drawn.array
    references = reference.float_reference(source, probe_array)
    timings = {"reference": round(time.perf_counter() - started, 2)}
    runfolder.write_arrays(os.path.join(out_dir, runfolder.PROBE), {source.inputs[0]["name"]: probe_array})
    runfolder.write_arrays(os.path.join(out_dir, runfolder.reference_name("tf2")), references)
    probe_info = {"source": "calibration" if shared else "probe", "preprocess": preprocess}
    probe_info.update(drawn.describe())
    manifest = {
        "schema_version": runfolder.SCHEMA_VERSION,
        "model": {"path": os.path.abspath(model_path), "sha256": sha256_any(model_path),
                  "inputs": source.inputs, "outputs": source.outputs, "route": source.kind},
        "origin": environment_fingerprint(),
        "probe": probe_info,
    }
    runfolder.write_json(os.path.join(out_dir, runfolder.MANIFEST), manifest)
    return Prepared(probe_array, [references[o["name"]] for o in source.outputs], "tf2", calib, preprocess, timings,
                    probe_keys=drawn.keys, reserve_probe=len(drawn.indices) if shared else 0, calib_seed=seed,
                    probe_data={"source": probe_info["path"], "count": int(len(probe_array))})


def from_run_folder(run_dir, calib, preprocess):
    """Read the probe and reference outputs of a run folder filled by the legacy re-save step.

    ``calib``/``preprocess``: the ``--calib``/``--preprocess`` values; each defaults to the probe's own
    (its images, when the re-save step drew the probe from calibration images). Returns a ``Prepared``.
    """
    manifest = runfolder.read_json(os.path.join(run_dir, runfolder.MANIFEST))
    probe_cfg = manifest.get("probe") or {}
    preprocess = preprocess or probe_cfg.get("preprocess") or "raw"
    if not calib and probe_cfg.get("source") == "calibration":
        calib = probe_cfg.get("path")  # the probe's own images (legacy_tf1 resave --calib)
    origin = (manifest.get("origin") or {}).get("env")
    probe_arrays = runfolder.read_arrays(os.path.join(run_dir, runfolder.PROBE))
    probes = pick(probe_arrays, [i["name"] for i in (manifest["model"].get("inputs") or [])])
    probe = probes[0] if len(probes) == 1 else probes  # several inputs: one batch each, in input order
    reference_path = os.path.join(run_dir, runfolder.reference_name(origin))

    def references():
        # a conversion started beside the re-save waits here for the references it writes last
        runfolder.await_file(run_dir, runfolder.reference_name(origin))
        if not os.path.exists(reference_path):
            raise InputFileError("no reference outputs %s in the run folder." % reference_path,
                                 step="convert", hint="Run the reference step in %s first." % origin)
        return pick(runfolder.read_arrays(reference_path), [o["name"] for o in (manifest["model"].get("outputs") or [])])

    if not os.environ.get(runfolder.AWAIT_ENV):
        references = references()  # a missing file is an error now, not after the conversion
    if not calib:
        raise UsageError("no calibration data (--calib), and the run folder's probe was not made from "
                         "images (%s)." % probe_cfg.get("source"), step="calibrate",
                         hint="Give --calib with representative images and --preprocess as in training.")
    from converters.shared import calibration

    keys = calibration.probe_keys(probe, probe_cfg.get("source_sha256"))
    # calibration from the probe's own source: leave the probe's tail of the same permutation to it
    shared = probe_cfg.get("source") == "calibration" and _same_source(calib, probe_cfg.get("path"))
    data_source = probe_cfg.get("path") or probe_cfg.get("source") or "random_uniform"
    return Prepared(probe, references, origin, calib, preprocess, {}, probe_keys=keys,
                    reserve_probe=len(probe_cfg.get("indices") or []) if shared else 0,
                    calib_seed=probe_cfg.get("seed") if shared else None,
                    probe_data={"source": data_source, "count": int(len(probes[0]))})


def pick(arrays, names):
    """Arrays in the order of ``names`` (falling back to file order when the names differ, e.g. the
    frozen graph's tensor names vs Keras output names)."""
    if names and all(n in arrays for n in names):
        return [arrays[n] for n in names]
    return [arrays[k] for k in arrays]


def environment_fingerprint():
    """The versions of this environment, as manifest.json's ``origin`` records them."""
    import h5py
    import tensorflow as tf

    versions = {"env": os.environ.get("TFBRIDGE_ENV", "tf2"), "python": platform.python_version(),
                "tensorflow": tf.__version__, "numpy": np.__version__, "h5py": h5py.__version__}
    try:
        import tf_keras
        versions["keras"] = tf_keras.__version__
        versions["keras_flavour"] = "tf_keras"
    except ImportError:
        versions["keras"] = None
    return versions


def sha256_any(path):
    """SHA-256 of a file, or of a folder's relative paths and file digests (a SavedModel)."""
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode())
                digest.update(runfolder.sha256_file(full).encode())
        return digest.hexdigest()
    return runfolder.sha256_file(path)
