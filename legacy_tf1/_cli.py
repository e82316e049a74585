"""Argument parsing of ``python -m legacy_tf1`` (errors become paragraphs in ``converters.cli.main``)."""

import argparse
import json
import os
import sys

from converters import options
from converters.errors import UsageError

COMMANDS = ("inspect", "inspect-graph", "resave", "activations", "evaluate", "zoo", "make-demo", "digits",
            "separable")


def _shape(text):
    try:
        return tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError("--input-shape %r must look like 224,224,3." % text)


def _env_name():
    return os.environ.get("TFBRIDGE_ENV") or "tf1"


def run(argv):
    if not argv or argv[0] not in COMMANDS:
        raise UsageError("usage: python -m legacy_tf1 {%s} ... (got %r)" % ("|".join(COMMANDS), argv[:1]),
                         hint="Run `python -m legacy_tf1 COMMAND --help` for the options of a command.")
    command, argv = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog="python -m legacy_tf1 " + command)
    if command != "resave":  # resave takes --debug with the other declared options
        parser.add_argument("--debug", action="store_true", help="show tracebacks")
    if command == "inspect":
        parser.add_argument("model")
        parser.add_argument("--known-classes", action="store_true",
                            help="also list layer classes this Keras does not know (imports TensorFlow)")
        args = parser.parse_args(argv)
        from legacy_tf1 import inspection

        # Without --known-classes this reads the file with h5py alone (no TensorFlow, no Keras): the host's
        # preflight runs it before any step that loads the model (converters.verify's preflight read).
        known = None
        if args.known_classes:
            from legacy_tf1 import compat

            known = compat.layer_class_names("keras") | compat.layer_class_names("tf.keras")
        print(json.dumps(inspection.inspect_file(args.model, known), sort_keys=True))
        return 0
    if command == "inspect-graph":
        parser.add_argument("model", help="a TF 1.x GraphDef (.pb/.pbtxt), SavedModel folder or checkpoint")
        for name in ("--tags", "--signature", "--inputs", "--outputs"):
            parser.add_argument(name, default=None)
        args = parser.parse_args(argv)
        from legacy_tf1 import graph_signature

        # the host's preflight read of a graph (converters.verify.inspect_graph): origin, inputs, outputs
        print(json.dumps(graph_signature.inspect(args.model, args.tags, args.signature, args.inputs, args.outputs),
                         sort_keys=True))
        return 0
    if command == "resave":
        parser.add_argument("model", help="legacy Keras .h5 (full model, or weights with --arch), or a TF 1.x graph")
        parser.add_argument("--out", required=True, help="run folder")
        parser.add_argument("--origin-env", default=None, help="label of the references (default $TFBRIDGE_ENV)")
        options.add_step_options(parser, options.RESAVE)  # --calib, --probe-samples, ...: converters/options.py
        args = parser.parse_args(argv)
        from converters import preflight_model
        from legacy_tf1 import resave

        if args.probe_samples is not None and args.probe_samples < 1:
            raise UsageError("--probe-samples must be at least 1.", step="resave")
        if preflight_model.model_kind(args.model) in preflight_model.GRAPH_KINDS:  # a TF 1.x graph: legacy_tf1.graph_resave
            return _resave_graph(args)
        manifest = resave.resave(
            args.model, args.out, args.origin_env or _env_name(), arch=args.arch,
            custom_objects=args.custom_objects, trust_model=args.trust_model, samples=args.probe_samples,
            seed=args.seed, input_range=resave.parse_range(args.input_range) if args.input_range else None,
            calib=args.calib, preprocess=args.preprocess, probe_source=args.probe)
        sys.stdout.write("re-saved %s (%s, %d parameters) -> %s\n" % (
            args.model, manifest["model"]["keras_flavour"], manifest["model"]["parameters"], args.out))
        return 0
    if command == "activations":
        parser.add_argument("run")
        parser.add_argument("--out", default=None, help="default RUN/activations_<env>.npz")
        parser.add_argument("--label", default=None, help="default $TFBRIDGE_ENV")
        parser.add_argument("--samples", type=int, default=2)
        args = parser.parse_args(argv)
        from converters.shared import parity
        from legacy_tf1 import compat  # noqa: F401 - quiet TF logging before the model loads

        label = args.label or _env_name()
        out = args.out or os.path.join(args.run, parity.activations_name(label))
        manifest = parity._read_manifest(args.run)
        flavour = manifest["model"].get("keras_flavour") or "keras"
        names = parity.activations(args.run, label, out, flavour, args.samples)
        sys.stdout.write("%d layer outputs -> %s\n" % (len(names), out))
        return 0
    if command == "evaluate":
        parser.add_argument("run", help="a run folder filled by resave")
        parser.add_argument("--eval", required=True, help="labelled data: class subfolders, or an .npz of x and y")
        parser.add_argument("--eval-classes", default=None, help="class names in the model's output order")
        parser.add_argument("--preprocess", default=None, help="default: the probe's (manifest.json)")
        parser.add_argument("--label", default=None, help="default $TFBRIDGE_ENV")
        args = parser.parse_args(argv)
        from legacy_tf1 import compat  # noqa: F401 - quiet TF logging before the model loads
        from legacy_tf1 import evaluate

        summary = evaluate.evaluate(args.run, args.eval, args.eval_classes, args.preprocess,
                                    args.label or _env_name())
        sys.stdout.write("float top-1 %.2f %% on %d samples (%s)\n" % (summary["top1"], summary["samples"],
                                                                      summary["runtime"]))
        return 0
    if command == "zoo":
        from legacy_tf1 import zoo

        parser.add_argument("name", choices=zoo.NAMES)
        parser.add_argument("--out", required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--include-top", action="store_true")
        parser.add_argument("--input-shape", type=_shape, default=None)
        parser.add_argument("--pooling", default=None, choices=[None, "avg", "max"])
        parser.add_argument("--weights-only", action="store_true")
        args = parser.parse_args(argv)
        info = zoo.save(args.name, args.out, args.seed, args.include_top, args.input_shape, args.pooling,
                        args.weights_only)
        print(json.dumps(info, sort_keys=True))
        return 0
    if command == "make-demo":
        parser.add_argument("--out", required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=15)
        args = parser.parse_args(argv)
        from legacy_tf1 import demo

        print(json.dumps(demo.make_demo(args.out, args.seed, args.epochs), sort_keys=True))
        return 0
    if command == "digits":  # legacy_tf1/digits.py: a CNN trained on scikit-learn's digits (BENCHMARKS.md)
        from legacy_tf1 import digits

        parser.add_argument("out", help="folder for model.h5, calib.npy, eval.npz, digits.json")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=digits.EPOCHS)
        args = parser.parse_args(argv)
        print(json.dumps(digits.make_digits(args.out, args.seed, args.epochs), sort_keys=True))
        return 0
    if command == "separable":  # legacy_tf1/separable.py: the int8 accuracy-recovery test models (issue 22)
        from legacy_tf1 import separable

        parser.add_argument("out", help="folder for model.h5, model_rescaled.h5, calib.npy, eval.npz, separable.json")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=separable.EPOCHS)
        args = parser.parse_args(argv)
        print(json.dumps(separable.make_separable(args.out, args.seed, args.epochs), sort_keys=True))
        return 0
    raise UsageError("unknown command %r" % command)  # pragma: no cover - COMMANDS checked above


def _resave_graph(args):
    from legacy_tf1 import graph_resave, resave

    manifest = graph_resave.resave_graph(
        args.model, args.out, args.origin_env or _env_name(), inputs=args.inputs, outputs=args.outputs,
        tags=args.tags, signature=args.signature, samples=args.probe_samples, seed=args.seed,
        input_range=resave.parse_range(args.input_range) if args.input_range else None, calib=args.calib,
        preprocess=args.preprocess, probe_source=args.probe)
    sys.stdout.write("re-saved %s (%s, %d nodes; %s) -> %s\n" % (
        args.model, manifest["model"]["source_kind"], manifest["model"]["frozen_graph"]["nodes"],
        "; ".join(t["what"] for t in manifest["model"]["transforms"]) or "no transform", args.out))
    return 0
