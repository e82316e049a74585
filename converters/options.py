"""Every option of tfbridge, declared once: name, type, default, help, and which commands and steps take it.

For whom: the three user commands (``convert_legacy``, ``verify_upgrade``, ``convert``: their argparse
parsers are built here), the in-environment steps that receive options from the host (``python -m
legacy_tf1 resave``, ``python -m converters.tf2.tflite_convert``: their parsers are built here too, and
``step_argv`` writes their command lines), the option tables of docs/options.md (``markdown_table``; a unit
test checks that the page shows what this declaration says) and the preflight checks (``converters.preflight``).

Standard library only, Python 3.7 compatible: it is imported on the host and in every environment.

Why one table: the first version declared ``--calib`` in four parsers with different defaults (16 and 8
probe samples), and the host could only check an option after a step had failed on it. Here a default
exists once, and a value the host has checked is handed to a step as the same text.

Values are parsed by argparse with the declared ``type`` (``int``, ``str``, a flag) and ``choices``;
everything that needs a look at the disk (paths, model kinds, data) is ``converters.preflight``'s job
(``preflight_model``, ``preflight_data``, ``preflight_options``).
"""

import argparse

# The user commands (nox sessions) and the in-environment steps that take options.
CONVERT_LEGACY = "convert_legacy"
VERIFY_UPGRADE = "verify_upgrade"
CONVERT = "convert"
COMMANDS = (CONVERT_LEGACY, VERIFY_UPGRADE, CONVERT)
RESAVE = "resave"              # python -m legacy_tf1 resave        (tf1.13 / tf1.15)
TFLITE = "tflite_convert"      # python -m converters.tf2.tflite_convert (tf2)
STEPS = (RESAVE, TFLITE)

ORIGINS = {"1.13": "tf1.13", "tf1.13": "tf1.13", "1.15": "tf1.15", "tf1.15": "tf1.15"}
IO_TYPES = ("int8", "uint8", "float32")
BACKENDS = ("local", "docker")
# issue 22: --quantize. The rewrites of converters.tf2.recovery (combined with '+' into a candidate; several
# candidates separated by ',' are a search of their own; auto searches plain, bias, cle, cle+bias). Issue 30:
# gptq (learned rounding of the int8 weights) and ebias (empirical bias correction, layer by layer)
QUANTIZE_REWRITES = ("cle", "gptq", "bias", "ebias", "mse", "percentile")
QUANTIZE_RANGE_METHODS = ("mse", "percentile")


def quantize_candidates(spec):
    """``--quantize`` -> the candidate names it asks for ("auto" -> None: the default search), or raise
    ValueError saying what is wrong. "plain" is always among them: the baseline every figure is compared
    with. Standard library only: the host checks the option before any step."""
    if spec in (None, "", "auto"):
        return None
    names = ["plain"]
    for item in [part.strip() for part in str(spec).split(",") if part.strip()]:
        if item == "plain":
            continue
        parts = item.split("+")
        unknown = [p for p in parts if p not in QUANTIZE_REWRITES]
        if unknown:
            raise ValueError("unknown rewrite %s in --quantize %r: give auto, plain, or rewrites joined by '+' "
                             "(%s), several candidates separated by ','" % (
                                 ", ".join(repr(u) for u in unknown), spec, ", ".join(QUANTIZE_REWRITES)))
        if len(set(parts) & set(QUANTIZE_RANGE_METHODS)) > 1:
            raise ValueError("--quantize %r: one range method per candidate (mse or percentile)" % spec)
        name = "+".join(sorted(set(parts), key=QUANTIZE_REWRITES.index))
        if name not in names:
            names.append(name)
    return names
# converters.shared.preprocess.PRESETS has the arithmetic; its names are repeated here because the host
# cannot import numpy (tests/unit/test_options.py checks that both lists agree).
PREPROCESS_PRESETS = ("raw", "unit", "tf", "caffe", "vggface1", "vggface2", "torch")
# --npu-target: the NXP i.MX 8M Plus (VX delegate op table) and every accelerator configuration of Arm's Vela
# compiler. converters.tf2.npu_targets says what each one is; its names are repeated here for the host
# (tests/unit/test_npu_targets.py checks that both lists agree). "imx93" names the i.MX 93's Ethos-U65-256.
NPU_TARGETS = ("imx8mp", "ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
               "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
               "ethos-u85-2048")
NPU_TARGET_ALIASES = {"imx93": "ethos-u65-256"}
DEFAULT_NPU_TARGET = "imx8mp"


def canonical_npu_target(name):
    """The canonical ``--npu-target`` name, or None when unknown (``ethos_U65_256`` -> ``ethos-u65-256``,
    ``i.MX93`` -> ``ethos-u65-256``)."""
    key = str(name).strip().lower().replace("_", "-").replace("i.mx", "imx")
    key = NPU_TARGET_ALIASES.get(key, key)
    return key if key in NPU_TARGETS else None

DEFAULT_CALIB_SAMPLES = 200
# One probe size for every command and every probe source. 100 samples, because the int8 verdict judges
# top-1 agreement (>= 90 % of the decisive samples, converters/tf2/tflite_run.py): with 100 samples one
# flip moves it by 1 point, and a probe without a flip bounds the true flip rate below 3 % (95 %, the
# "rule of three": 3/n), well inside the 10 % the verdict allows. With the former 16, one flip moved it
# by 6 points and a flawless probe still left up to 19 % possible: the verdict could not be trusted.
# Cost: each environment runs 100 forward passes (ResNet50: ~10-15 s) and probe.npz of a 224x224x3 model
# is 60 MB.
DEFAULT_PROBE_SAMPLES = 100
# The parity cells (the same float model in each newer TF) compare the probe's first 32 samples, not all
# 100 (issue 13): a change of TF that alters a layer alters its outputs on the inputs it sees, and the cells
# compare every output element of every sample against absolute and relative tolerances, not a rate of
# top-1 flips that needs many samples. Cost: each cell is a forward pass per sample in its own TF (ResNet50:
# ~60 ms); 32 instead of 100 saves ~20 s of CPU on ResNet50's five cells. ``--parity-samples 0``: all.
DEFAULT_PARITY_SAMPLES = 16
DEFAULT_SEED = 0

ALL = (CONVERT_LEGACY, VERIFY_UPGRADE, CONVERT)
LEGACY = (CONVERT_LEGACY, VERIFY_UPGRADE)
CONVERTING = (CONVERT_LEGACY, CONVERT)


class Option(object):
    """One option. ``dest`` is the attribute name (``--calib-samples`` -> ``calib_samples``).

    ``commands``: the user commands that accept it; ``steps``: the in-environment steps the host forwards
    it to; ``flag``: a switch without a value; ``metavar``/``doc``: docs/options.md's wording (``doc`` may be longer
    than the one-line ``help`` of ``--help``).
    """

    def __init__(self, name, help, commands=ALL, steps=(), type=str, default=None, choices=None, flag=False,
                 metavar=None, doc=None, positional=False, required=False, repeat=False):
        self.name = name
        self.help = help
        self.commands = tuple(commands)
        self.steps = tuple(steps)
        self.type = type
        self.default = default
        self.choices = tuple(choices) if choices else None
        self.flag = flag
        self.metavar = metavar
        self.doc = doc or help
        self.positional = positional
        self.required = required
        self.repeat = repeat  # may be given several times: the value is a list (default: [default])

    @property
    def dest(self):
        return self.name.lstrip("-").replace("-", "_")

    def add_to(self, parser, default=None):
        """Add this option to an argparse parser (``default`` overrides the declared one, for steps)."""
        kwargs = {"help": self.help}
        if self.flag:
            parser.add_argument(self.name, action="store_true", **kwargs)
            return
        if self.repeat:  # argparse appends to a default list: the default is filled in by fill_defaults
            parser.add_argument(self.name, action="append", metavar=self.metavar, **kwargs)
            return
        kwargs["default"] = self.default if default is None else default
        if self.type is not str:
            kwargs["type"] = self.type
        if self.choices:
            kwargs["choices"] = self.choices
        if self.metavar and not self.positional:
            kwargs["metavar"] = self.metavar
        if self.positional:
            if not self.required:
                kwargs["nargs"] = "?"
            parser.add_argument(self.dest, **kwargs)
        else:
            parser.add_argument(self.name, **kwargs)

    def __repr__(self):
        return "Option(%r)" % self.name


OPTIONS = (
    Option("model", "the model (see the command's description); convert_legacy without it runs the demo",
           positional=True, metavar="MODEL",
           doc="convert_legacy, verify_upgrade: a legacy Keras `.h5` (a full model saved by standalone keras "
               "or tf.keras, or weights only with `--arch`), or a TF 1.x graph: a frozen GraphDef (`.pb`, "
               "`.pbtxt`), a TF 1.x SavedModel folder, or a checkpoint (its `.meta`, its prefix or its folder; "
               "frozen in its origin TF); see [TF 1.x graphs](graphs.md). convert: a TF 2.x `.h5`, `.keras` file or "
               "SavedModel folder. convert_legacy without MODEL runs the embedded demo."),
    Option("--origin", "TF version that saved MODEL: 1.13 or 1.15 (default: inferred from the file)",
           commands=LEGACY, metavar="1.13|1.15",
           doc="the TensorFlow the file was made in. Default: inferred from the file: a Keras `.h5`'s "
               "`keras_version` (2.2.x → 1.13, 2.3.x → 1.15; tf.keras's `2.2.4-tf` is written by both and is "
               "taken as 1.13), a SavedModel's or checkpoint's `meta_info_def.tensorflow_version`, a GraphDef's "
               "`versions.producer` (≤ 27 → 1.13, ≤ 134 → 1.15, above: TF 2.x, refused). The run says what it "
               "inferred; a file that records nothing needs `--origin`."),
    Option("--arch", "architecture of a weights-only file: CONFIG.json|CONFIG.yaml or module:function(k=literal)",
           commands=LEGACY, steps=(RESAVE,), metavar="CONFIG.json|CONFIG.yaml|module:function(...)",
           doc="the architecture of a weights-only file, e.g. "
               "`'keras_vggface.vggface:VGGFace(model=\"senet50\", include_top=False, weights=None)'` "
               "(keyword arguments must be literals: nothing else is evaluated)"),
    Option("--custom-objects", "FILE.py defining CUSTOM_OBJECTS = {...} or the custom layer classes",
           commands=LEGACY, steps=(RESAVE,), metavar="FILE.py",
           doc="custom layers: a file defining `CUSTOM_OBJECTS = {...}` or the layer classes"),
    Option("--trust-model", "allow Lambda layers and other stored code (loading them runs code from the file)",
           steps=(RESAVE, TFLITE), flag=True,
           doc="allow Lambda layers (and any other Python code stored in the file). Loading them runs that "
               "code, so they are refused without it (see [What `--trust-model` allows](safety.md#what---trust-model-allows)); a legacy Lambda "
               "model is converted through the frozen graph (its Python 3.7 bytecode cannot load on 3.11)."),
    Option("--inputs", "a graph's inputs: NAME[:SHAPE],... (SHAPE like 1x224x224x3 or ?x20x8)", commands=LEGACY,
           steps=(RESAVE,), metavar="NAME[:SHAPE],...",
           doc="the inputs of a TF 1.x graph: op/tensor names (or a SavedModel's signature keys), each with an "
               "optional shape, e.g. `input:1x224x224x3` or `seq:?x20x8` (`?` for the batch). Default: the "
               "SavedModel signature's inputs, else the placeholders the outputs depend on (training switches "
               "such as `keras_learning_phase` / `is_training` and placeholders with defaults left out: they are "
               "fixed to inference). Needed when the graph has several candidate placeholders, or an input has "
               "a dynamic dimension other than the batch."),
    Option("--outputs", "a graph's outputs: NAME,...", commands=LEGACY, steps=(RESAVE,), metavar="NAME,...",
           doc="the outputs of a TF 1.x graph: op/tensor names or signature keys. Default: the SavedModel "
               "signature's outputs, else the graph's sink nodes that are not training, summary, save, init or "
               "variable-update ops (with `--inputs`: those computable from the inputs given)."),
    Option("--tags", "the SavedModel MetaGraph's tags (default serve)", commands=LEGACY, steps=(RESAVE,),
           metavar="TAG[,TAG...]",
           doc="the tag set of the TF 1.x SavedModel's MetaGraph to load (default `serve`)"),
    Option("--signature", "the SavedModel signature (default serving_default, else the only one)",
           commands=LEGACY, steps=(RESAVE,), metavar="NAME",
           doc="the signature of the TF 1.x SavedModel whose inputs and outputs are the model's (default "
               "`serving_default`, else its only signature)"),
    Option("--calib", "representative data: image folder, image, .npy/.npz, or 'skimage' (demo photos)",
           steps=(RESAVE, TFLITE), metavar="PATH",
           doc="representative data: an image folder (recursive; jpg, png, bmp; resized to the model's input, "
               "grayscale ↔ RGB as needed), one image, an `.npy`/`.npz` array (any rank; a model of several "
               "inputs: an `.npz` with one array per input name), or `skimage` (photographs shipped with "
               "scikit-image: a demo, not your data). Required by the commands that convert (except the demo); "
               "also the source of the probe batch unless `--probe` is given (calibration and probe never share "
               "a sample)."),
    Option("--probe", "a separate source of the probe batch (same kinds as --calib)", steps=(RESAVE, TFLITE),
           metavar="PATH",
           doc="a separate source of the probe batch, of the same kinds as `--calib`. Without it the probe comes "
               "from `--calib`: one seeded permutation splits that source, calibration takes its first samples "
               "and the probe its last `--probe-samples`, so the two never share a sample (a source too small "
               "for both is refused, saying what to give). `report.json`'s `data` records both sets and their "
               "overlap, counted by content hash."),
    Option("--eval", "labelled held-out data: a folder with one subfolder per class, or an .npz with x and y",
           commands=CONVERTING, steps=(TFLITE,), metavar="PATH",
           doc="labelled held-out data for accuracy: a folder with one subfolder per class (Keras's "
               "`image_dataset_from_directory` layout; classes in sorted order unless `--eval-classes`), or an "
               "`.npz` with `x` (or one array per model input, named like the inputs) and `y` (integer labels). "
               "Preprocessed with `--preprocess`. The float model (in its origin TF and in TF 2.x) and the int8 "
               "model are evaluated: top-1 (top-5 with more than 5 classes), the int8 drop in points with a 95 % "
               "interval, flipped predictions, the classes that lose most (`report.json` `eval`)."),
    Option("--eval-classes", "the --eval folder's class names in the model's output order, one per line",
           commands=CONVERTING, steps=(TFLITE,), metavar="FILE",
           doc="a text file naming the `--eval` folder's class subfolders in the model's output order, one per "
               "line (default: the subfolders in sorted order, as Keras does)"),
    Option("--preprocess", "as in training: raw|unit|tf|caffe|vggface1|vggface2|torch|module:function",
           steps=(RESAVE, TFLITE), metavar="NAME|module:function",
           doc="as in training: `raw`, `unit` (x/255), `tf` (x/127.5 − 1), `caffe` (BGR, ImageNet mean), "
               "`vggface1`, `vggface2` (BGR, keras-vggface's means), `torch` (ImageNet mean/std), or your own "
               "function (`module:function`, importable from the current folder). Default `raw`."),
    Option("--calib-samples", "calibration samples (default %d)" % DEFAULT_CALIB_SAMPLES, commands=CONVERTING,
           steps=(TFLITE,), type=int, default=DEFAULT_CALIB_SAMPLES, metavar="N",
           doc="calibration samples (default %d; 100–500 is the useful range), chosen with `--seed`, streamed"
               % DEFAULT_CALIB_SAMPLES),
    Option("--probe-samples", "probe batch size (default %d, or half of a smaller --calib source)"
           % DEFAULT_PROBE_SAMPLES, steps=(RESAVE, TFLITE), type=int, metavar="N",
           doc="the probe batch every environment is compared on (default %d: with 100 samples one top-1 flip "
               "is 1 point, and a probe without flips bounds the flip rate below 3 %%, inside the int8 verdict's "
               "10 %%; from a `--calib` source of fewer than %d samples, half of it, so that calibration keeps "
               "the other half; the run says so). From `--probe` when given, else from `--calib` (disjoint from "
               "the calibration samples), else seeded random data in `--input-range`"
               % (DEFAULT_PROBE_SAMPLES, 2 * DEFAULT_PROBE_SAMPLES)),
    Option("--parity-samples", "probe samples the parity cells compare (default %d; 0 = all)"
           % DEFAULT_PARITY_SAMPLES, commands=LEGACY, steps=(RESAVE, TFLITE), type=int, default=DEFAULT_PARITY_SAMPLES,
           metavar="N",
           doc="how many of the probe's samples (its first N) the parity cells run in each newer TF and compare "
               "with the origin (default %d; `0`: every probe sample). Each cell compares every output value "
               "against float tolerances, so a TF change that alters a layer shows on any sample the layer "
               "sees; the int8 model is still judged on the whole probe (top-1 agreement needs the 100). "
               "Raise it when a difference may hide in rare inputs." % DEFAULT_PARITY_SAMPLES),
    Option("--seed", "seed of every random choice (default %d)" % DEFAULT_SEED, steps=(RESAVE, TFLITE), type=int,
           default=DEFAULT_SEED, metavar="S",
           doc="the seed of every random choice (probe and calibration samples, random probe)"),
    Option("--input-range", "LO,HI of a random probe (default 0,255 for images, -1,1 otherwise)", commands=LEGACY,
           steps=(RESAVE,), metavar="LO,HI",
           doc="range of a random probe when there is no `--calib` (default 0,255 for images, −1,1 otherwise)"),
    Option("--io", "input type (default int8)", commands=CONVERTING, steps=(TFLITE,), default="int8",
           choices=IO_TYPES, metavar="int8|uint8|float32",
           doc="input type of the int8 model (default int8)"),
    Option("--output-io", "output type (default: the same as --io)", commands=CONVERTING, steps=(TFLITE,),
           choices=IO_TYPES, metavar="int8|uint8|float32",
           doc="output type (default: the same as `--io`). `--io int8 --output-io float32` suits embedding models."),
    Option("--per-tensor", "one weight scale per tensor", commands=CONVERTING, steps=(TFLITE,), flag=True,
           doc="one weight scale per tensor (VeriSilicon NPUs run them much faster than per-channel); checked "
               "in the written file"),
    Option("--quantize", "how the int8 model is made: auto (search), plain (TFLite's min/max) or rewrites",
           commands=CONVERTING, steps=(TFLITE,), default="auto", metavar="auto|plain|REWRITE[+REWRITE...][,...]",
           doc="how the int8 model is made (see docs/recovery.md). `auto` (default): candidates "
               "(`plain`, `bias`, `cle`, `cle+bias`, then the layer-wise `ebias` and `gptq+ebias`, with `cle` when it "
               "won, when the model's MACs times the samples are within auto's limit) are judged on every "
               "calibration sample by "
               "cross-fitting (each fitted on the other folds); the best, fitted on all of them, is written as "
               "`model_int8.tflite` and the plain one as `model_int8_plain.tflite`. `plain`: TFLite's own min/max "
               "calibration only, on every calibration sample (the by-hand recipe's file). Rewrites joined by `+` "
               "(`cle`, `gptq`, `bias`, `ebias`, `mse`, `percentile`, e.g. `cle+bias+mse`): that candidate against "
               "`plain`; several separated by `,` (`bias,gptq+ebias`): a search among them and `plain`. "
               "Every candidate has the same ops, full int8 and the same I/O types."),
    Option("--allow-float-ops", "keep ops without an int8 kernel in float instead of failing", commands=CONVERTING,
           steps=(TFLITE,), flag=True,
           doc="keep ops that have no int8 kernel in float. Never taken silently: without it such an op is an "
               "error that names it; with it the NPU verdict says `not_ready` and names it."),
    Option("--strict-npu", "fail unless the model is fully int8 and no op of any --npu-target falls back to the CPU",
           commands=CONVERTING, steps=(TFLITE,), flag=True,
           doc="a model that is not fully int8, or with an op that any `--npu-target` leaves to the CPU, is an "
               "error (after the report is written)"),
    Option("--npu-target", "an NPU to check the int8 model for (repeatable; default %s)" % DEFAULT_NPU_TARGET,
           commands=CONVERTING, steps=(TFLITE,), default=DEFAULT_NPU_TARGET, repeat=True, metavar="NAME",
           doc="an NPU to check the int8 model for; give it several times for several. `imx8mp` (default): "
               "the NXP i.MX 8M Plus, each op against the VX delegate's own op rules (delegated / CPU fallback "
               "with the failed rule); `ethos-u55-128`, `ethos-u55-256`, `ethos-u65-256` (`imx93`), "
               "`ethos-u65-512`, `ethos-u85-256` and Vela's other configurations: compiled by Arm's Vela "
               "(`model_int8_vela_<target>.tflite`), each CPU op with Vela's reason, SRAM/DRAM and Vela's "
               "estimated time. `report.json` `npu.targets` has one entry per target."),
    Option("--no-layer-debug", "skip the per-layer quantization error analysis", commands=CONVERTING,
           steps=(TFLITE,), flag=True,
           doc="skip the per-layer quantization error analysis (faster)"),
    Option("--no-keras3", "do not write model.keras (the model migrated to Keras 3) nor check it",
           commands=LEGACY, flag=True,
           doc="skip the Keras 3 migration: no `model.keras` (the re-saved model migrated to Keras 3, with "
               "names Keras 3 refuses made legal and Keras 3's behaviour changes undone: see [Keras 3](keras3.md)), "
               "and no `tf2-keras3-migrated` parity cell"),
    Option("--tf", "more TensorFlow releases to check the model in: VERSION[,VERSION...] (e.g. 2.4,2.12,2.15)",
           commands=LEGACY, metavar="VERSION[,VERSION...]",
           doc="more TensorFlow releases to check the model in, beside the built-in matrix (TF 1.15 and 2.21): "
               "any release from 1.13 to the newest, as `MAJOR.MINOR` (its newest release, e.g. `2.12` is 2.12.1) "
               "or `MAJOR.MINOR.PATCH`. Each gets an environment made from one rule (the TF version gives the "
               "Python, the Keras, the numpy/h5py/protobuf pins: see [Any TensorFlow release](tf-releases.md#any-tensorflow-release---tf---bisect)), locked on first "
               "use under `$TFBRIDGE_HOME` and reused after; its cells: the `.h5` in that TF's own Keras (tf.keras "
               "before 2.16; tf-keras and Keras 3 from 2.16) and the frozen graph. A release with no wheel for a "
               "Python found here is refused before any step, naming the Pythons it needs."),
    Option("--bisect", "when the newest TF differs and an older one matches: find the first release that differs",
           commands=LEGACY, flag=True,
           doc="when a cell of the newest TF mismatches and an older TF's cell of the same kind matches, find the "
               "first release that differs by bisection over the releases between them (minor versions, then "
               "that minor's patch releases), building only the environments it needs; the report names that "
               "release and the first divergent layer (`report.json` `bisect`)."),
    Option("--jobs", "processes that work at once (default: the number of cores)", steps=(TFLITE,), type=int,
           metavar="N",
           doc="how many processes work at once (default: the number of cores). The parity cells (TF 1.15; "
               "TF 2.x with tf-keras, the frozen graph, Keras 3 and the migrated Keras 3 model, which share one "
               "process) and, in convert_legacy, the int8 conversion run side by side, N at a time; while the "
               "re-save runs, one more process runs: the steps started beside it import TensorFlow, then wait for "
               "its model (a failed re-save stops them at once), and the short parity chains run at a lower "
               "priority (niceness 5) than the re-save, the conversion and the tf2 cells; the int8 "
               "conversion calibrates on N threads (TFLite's interpreter with every tensor kept, at least 2 threads: "
               "the same statistics as TFLite's calibrator, checked on the first sample) or, where that route does not "
               "apply, TFLite's calibrator in up to N processes (shards merged exactly); either way the int8 file is "
               "the same byte for byte; 1 = one process at a time."),
    Option("--out", "run folder (default runs/<model-stem>)", metavar="DIR",
           doc="the run folder (default `runs/<model-stem>`). A new or empty folder, or a run folder tfbridge "
               "made; files you put in a run folder are kept when it is replaced."),
    Option("--backend", "where the environment steps run: local venvs (default) or docker", choices=BACKENDS,
           metavar="local|docker",
           doc="where the environment steps run: tfbridge's venvs (default) or the Docker images"),
    Option("--force", "redo every stage even when its inputs are unchanged", commands=(CONVERT_LEGACY,), flag=True,
           doc="redo every stage even when its inputs are unchanged"),
    Option("--debug", "tracebacks; a failed run's partial folder is kept", steps=(RESAVE, TFLITE), flag=True,
           doc="tracebacks; a failed run's partial folder is kept for inspection"),
)

BY_DEST = dict((option.dest, option) for option in OPTIONS)


# The fewest calibration samples a source shared with the probe may leave after it (unless fewer were asked
# for): below ~50 the min/max ranges of the activations visibly miss rarer values. Checked on the host by
# converters.preflight_data.split_fits and in the environment by converters.shared.calibration.split.
MIN_SPLIT_CALIB = 50


def probe_size(requested, shared_count=None):
    """How many probe samples to draw: ``--probe-samples`` when given; else ``DEFAULT_PROBE_SAMPLES``, or
    half of a source of ``shared_count`` samples that also feeds calibration when that is fewer (so that a
    small ``--calib`` source, e.g. ``skimage``'s 106 photographs, still leaves calibration its other half).
    The legacy re-save (TF 1.x) and the tf2 step both size the probe here, so they draw the same one."""
    if requested is not None:
        return int(requested)
    if shared_count is None:
        return DEFAULT_PROBE_SAMPLES
    return max(1, min(DEFAULT_PROBE_SAMPLES, int(shared_count) // 2))

DESCRIPTIONS = {
    CONVERT_LEGACY: "Legacy Keras model (TF 1.13/1.15) -> re-saved in its TF, checked in newer TFs -> fully int8 "
                    "TFLite with int8 I/O -> report. With no MODEL: the embedded demo.",
    VERIFY_UPGRADE: "Re-save a legacy Keras model in its TF version and check its outputs in newer TF versions.",
    CONVERT: "Convert a TF 2.x model (.h5, .keras, SavedModel folder) to full-int8 TFLite, check it against the "
             "float model, assess NPU readiness and write the report.",
}


def for_command(command):
    """The options ``command`` accepts, in declaration order."""
    return [option for option in OPTIONS if command in option.commands]


def for_step(step):
    """The user options the host forwards to in-environment ``step``."""
    return [option for option in OPTIONS if step in option.steps]


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad value reported as tfbridge's one paragraph (a ``UsageError``), not a usage dump."""

    def error(self, message):
        from converters.errors import UsageError

        raise UsageError("%s: %s." % (self.prog, message), step="options",
                         hint="Run with --help for the options (docs/options.md lists them with their meaning).")


def parser_for(command, prog=None):
    """The argparse parser of a user command, built from the declaration."""
    if command not in COMMANDS:
        raise KeyError(command)
    # TFBRIDGE_PROG: set by the ``tfbridge`` command (tfbridge/_layout.py), so that messages name it
    import os

    prog = prog or os.environ.get("TFBRIDGE_PROG") or "nox -s %s --" % command
    parser = _Parser(prog=prog, description=DESCRIPTIONS[command])
    for option in for_command(command):
        if option.positional and option.name == "model" and command != CONVERT_LEGACY:
            Option(option.name, option.help, positional=True, required=True, metavar="MODEL").add_to(parser)
        else:
            option.add_to(parser)
    return parser


def parse(command, argv, prog=None):
    """Parse a user command's arguments (a bad value is a ``UsageError`` paragraph)."""
    return fill_defaults(parser_for(command, prog).parse_args(list(argv)))


def fill_defaults(namespace):
    """Give each repeatable option that was not given its default list (argparse cannot: it would append
    to the default)."""
    for option in OPTIONS:
        if option.repeat and getattr(namespace, option.dest, None) is None and hasattr(namespace, option.dest):
            setattr(namespace, option.dest, [option.default] if option.default is not None else [])
    return namespace


def add_step_options(parser, step):
    """Add the user options that ``step`` receives to the step's own parser (same names, types, defaults)."""
    for option in for_step(step):
        option.add_to(parser)


def step_argv(values, step):
    """The command-line arguments that hand ``values`` (a dict or argparse namespace) to ``step``.

    Every option the step takes and that has a value (or is a set flag) is written out, defaults included,
    so that the step runs with what the host checked, never with a default of its own.
    """
    get = values.get if isinstance(values, dict) else (lambda key, default=None: getattr(values, key, default))
    argv = []
    for option in for_step(step):
        value = get(option.dest)
        if option.flag:
            if value:
                argv.append(option.name)
        elif option.repeat:
            for item in (value if value is not None else [option.default]):
                if item is not None:
                    argv += [option.name, str(item)]
        elif value is not None:
            argv += [option.name, str(value)]
    return argv


def values_of(namespace):
    """A plain dict of every declared option (missing ones at their defaults) from an argparse namespace."""
    values = dict((option.dest, option.default if not option.flag else False) for option in OPTIONS)
    for option in OPTIONS:
        if option.repeat:
            values[option.dest] = [option.default] if option.default is not None else []
    values.update(vars(namespace) if not isinstance(namespace, dict) else namespace)
    return values


def markdown_table(command):
    """docs/options.md's table of ``command``'s options (tests/unit/test_options.py compares the two)."""
    rows = ["| option | meaning |", "|---|---|"]
    for option in for_command(command):
        if option.positional:
            name = "`MODEL`"
        elif option.flag:
            name = "`%s`" % option.name
        else:
            name = "`%s %s`" % (option.name, option.metavar or option.dest.upper())
        rows.append("| %s | %s |" % (name.replace("|", "\\|"), option.doc.replace("|", "\\|")))
    return "\n".join(rows)


def markdown_tables():
    """Every command's table, as docs/options.md's "Options" section shows them."""
    parts = []
    for command in COMMANDS:
        parts.append("### `nox -s %s`\n\n%s\n" % (command, markdown_table(command)))
    return "\n".join(parts)


def write_tables(path):
    """Put the generated tables between the ``options:begin`` / ``options:end`` markers of ``path``
    (docs/options.md)."""
    import re

    with open(path) as handle:
        text = handle.read()
    pattern = re.compile(r"(<!-- options:begin[^>]*-->\n)(.*?)(<!-- options:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit("%s has no options:begin / options:end markers" % path)
    text = pattern.sub(lambda match: match.group(1) + markdown_tables() + match.group(3), text)
    with open(path, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    # python -m converters.options            docs/options.md's option tables, printed
    # python -m converters.options --write    ... written into docs/options.md between its markers
    import os
    import sys

    if sys.argv[1:] == ["--write"]:
        write_tables(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "options.md"))
    else:
        print(markdown_tables())
