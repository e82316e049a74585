"""Everything about a command's options that can be checked before the first environment step.

For whom: the three host commands (``converters.verify``, ``converters.pipeline``, ``converters.convert``)
call ``check(command, values)`` right after parsing; a bad input fails here, in well under a second,
with the paragraph of the error it would otherwise have met minutes later inside a step. The checks live
by what they read: the model file (``converters.preflight_model``), the data (``converters.preflight_data``),
the other options (``converters.preflight_options``), the ``--tf`` releases (``envs.registry``), ``--out``
(``converters.runfolder.check_out``). What the host cannot read without an HDF5 library (whether an ``.h5``
holds a model config, Lambda layers, its ``keras_version``) is read next, by ``converters.verify``'s
preflight read in the ``tf1.15`` environment (h5py alone, no TensorFlow or Keras import).

Host side: standard library only, Python 3.7 compatible.
"""

import os

from converters import options as declared
from converters.errors import UsageError
from converters.preflight_data import BUILTIN_SKIMAGE, data_samples, eval_samples, split_fits
from converters.preflight_model import accepts, check_model
from converters.preflight_options import (check_arch, check_custom_objects, check_graph_options, check_npu_targets,
                                          check_origin, check_preprocess, parse_range)
from envs import registry


def check(command, values, demo=False):
    """Check every option of ``command`` (a dict of declared option values, changed in place: paths made
    absolute); return a dict of what was learnt (``model_kind``, ``origin_env``, ``calib``).

    ``demo``: convert_legacy's embedded demo, whose model and data tfbridge makes itself.
    """
    found = {}
    model = values.get("model")
    if model is None and not demo:
        raise UsageError("no MODEL given.", step="preflight", hint=accepts(command))
    found["origin_env"] = check_origin(values.get("origin"))
    if values.get("preprocess"):
        check_preprocess(values["preprocess"])
    if values.get("input_range"):
        parse_range(values["input_range"])
    if command in declared.CONVERTING:
        values["npu_target"] = check_npu_targets(values.get("npu_target"))
    for name in ("calib_samples", "probe_samples"):
        if values.get(name) is not None and int(values[name]) < 1:
            raise UsageError("--%s must be at least 1 (got %s)." % (name.replace("_", "-"), values[name]),
                             step="preflight")
    if values.get("parity_samples") is not None and int(values["parity_samples"]) < 0:
        raise UsageError("--parity-samples must be 0 (the whole probe) or more (got %s)." % values["parity_samples"],
                         step="preflight")
    if command in declared.CONVERTING and values.get("quantize") is not None:
        try:
            declared.quantize_candidates(values["quantize"])
        except ValueError as exc:
            raise UsageError("%s." % exc, step="preflight",
                             hint="See docs/recovery.md (e.g. --quantize cle+bias).")
    if values.get("tf") or values.get("bisect"):
        found["tf_environments"] = registry.tf_environments(values.get("tf"), values.get("backend"))
    if values.get("custom_objects"):
        check_custom_objects(values["custom_objects"])
        values["custom_objects"] = os.path.abspath(values["custom_objects"])
    if values.get("arch"):
        if check_arch(values["arch"], bool(values.get("trust_model"))) == "file":
            values["arch"] = os.path.abspath(values["arch"])
    if not demo:
        found["model_kind"] = check_model(command, model)
        values["model"] = os.path.abspath(model)
        if command in declared.LEGACY:
            check_graph_options(values, found["model_kind"])
    calib = values.get("calib")
    probe = values.get("probe")
    if probe:
        found["probe"] = data_samples(probe, what="--probe")
        if probe != BUILTIN_SKIMAGE:
            values["probe"] = os.path.abspath(probe)
    if calib:
        found["calib"] = data_samples(calib)
        if calib != BUILTIN_SKIMAGE:
            values["calib"] = os.path.abspath(calib)
        if command in declared.CONVERTING and not probe:
            split_fits(found["calib"], calib, values.get("calib_samples"), values.get("probe_samples"))
    elif command in declared.CONVERTING and not demo:
        raise UsageError("no calibration data (--calib).", step="preflight",
                         hint="%s converts to int8, which needs representative data: give --calib with a folder "
                              "of representative images (and --preprocess as in training), an .npy file, or "
                              "'skimage' for the built-in sample photos (a demo, not your data)." % command)
    if values.get("eval_classes") and not values.get("eval"):
        raise UsageError("--eval-classes needs --eval.", step="preflight",
                         hint="Give --eval with the labelled folder whose class order the file lists.")
    if values.get("eval"):
        found["eval"] = eval_samples(values["eval"], values.get("eval_classes"))
        values["eval"] = os.path.abspath(values["eval"])
        if values.get("eval_classes"):
            values["eval_classes"] = os.path.abspath(values["eval_classes"])
    return found
