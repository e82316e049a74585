"""Work beside the search (issue 31): a second process that runs TensorFlow's quantizer (``Worker``), and
threads beside the conversion step's main line (``Beside``; ``Background``: the report-only figures).

For whom: the calibration hook (``converters.tf2.calibrate``) during the candidate search; ``tf2``
environment only. TensorFlow's ``mlir_quantize`` holds the interpreter lock for its whole call (~2 s on
ResNet50), so a thread cannot overlap it; this worker can, on the machine's second core. The search tells it
early which calibrated models it will quantize (plain's fold that checks the template, an equalized
candidate's first fold); when the search asks for one, the worker's bytes are returned, else the hook
quantizes in its own process as before.

How: ``python -m converters.tf2.beside ARGUMENTS_JSON`` loads only TensorFlow's converter
extension (``_pywrap_converter_api``: 0.3 s and ~360 MB, against 3 s and ~600 MB for all of TensorFlow)
and calls ``ExperimentalMlirQuantizeModel`` with the arguments ``lite._mlir_quantize`` gives it, for each
request line on stdin ({"in": path, "out": path}); it answers one line per request on stdout ({"ok": true}
or {"error": message}). The same call on the same bytes: the same model, byte for byte (tested).

What can go wrong: the worker cannot start, fails or dies: ``take`` returns None and the hook quantizes
itself; nothing is lost but the time. The worker dies with its parent (Linux ``PR_SET_PDEATHSIG``).
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# below this size a quantization takes a fraction of a second: not worth a process
MIN_MODEL_BYTES = 16 * 1024 * 1024
ANSWER = "tfbridge-quantize-worker "  # the prefix of the worker's answers (a library may print to stdout too)


def quantize_beside(model, jobs):
    """Whether the search's quantizations may run in a second process: a second core (``jobs``), a model
    (bytes) large enough for a quantization to outlast the process's start, and ``TFBRIDGE_QUANTIZE_WORKER``
    not 0 (the benchmark's and a user's switch)."""
    return (jobs >= 2 and len(model) >= MIN_MODEL_BYTES
            and os.environ.get("TFBRIDGE_QUANTIZE_WORKER", "1") != "0")


def arguments(converter, input_type, output_type, enable_variable_quantization, debug_options):
    """The worker's call's arguments as ``lite._mlir_quantize`` would pass them (TensorFlow imported here)."""
    from tensorflow.compiler.mlir.lite import types_pb2
    from tensorflow.lite.python import convert

    return {"disable_per_channel": bool(converter._experimental_disable_per_channel),
            "inference_type": int(types_pb2.QUANTIZED_INT8),
            "input_type": int(convert.convert_tensor_tf_type_to_tflite_type(input_type)),
            "output_type": int(convert.convert_tensor_tf_type_to_tflite_type(output_type)),
            "enable_variable_quantization": bool(enable_variable_quantization),
            "disable_per_channel_for_dense_layers":
                bool(converter._experimental_disable_per_channel_quantization_for_dense_layers),
            "debug_options": debug_options.SerializeToString().hex() if debug_options is not None else ""}


def worker_env():
    """The environment of a worker process of this package (``python -m converters.tf2...``): this one's,
    with the package's root first on PYTHONPATH."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _die_with_parent():
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Worker(object):
    """The worker process: ``submit(calibrated)`` queues a quantization, ``take(calibrated)`` returns its
    bytes (waiting for them) or None when it was not submitted or failed; ``close()`` stops it. ``record``:
    what it did, for report.json's ``quantization.quantize_worker``."""

    def __init__(self, args):
        self.requests = []  # [(calibrated bytes, out path)] in the order the worker answers them
        self.answers = []  # the worker's answers, in that order
        self.record = {"submitted": 0, "taken": 0}
        self.process = self.folder = None
        try:
            self.folder = tempfile.mkdtemp(prefix="tfbridge-quantize-")
            self.log = os.path.join(self.folder, "worker.log")
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "converters.tf2.beside", json.dumps(args)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=worker_env(),
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        except OSError as exc:
            self.process = None
            self.record["error"] = "the worker did not start: %s" % exc
        atexit.register(self.close)  # whatever path the conversion takes, the worker and its folder go

    def submit(self, calibrated):
        if self.process is None:
            return
        k = len(self.requests)
        source, out = os.path.join(self.folder, "in_%d.tflite" % k), os.path.join(self.folder, "out_%d.tflite" % k)
        try:
            with open(source, "wb") as handle:
                handle.write(calibrated)
            self.process.stdin.write((json.dumps({"in": source, "out": out}) + "\n").encode("utf-8"))
            self.process.stdin.flush()
        except OSError as exc:
            self.record["error"] = "the worker stopped taking requests: %s" % exc
            self.close()
            return
        self.requests.append((calibrated, out))
        self.record["submitted"] += 1

    def take(self, calibrated):
        try:
            return self._take(calibrated)
        except (OSError, ValueError) as exc:  # an answer or a file that cannot be read: the caller quantizes
            self.record["error"] = "%s: %s" % (type(exc).__name__, str(exc)[:200])
            self.close()
            return None

    def _take(self, calibrated):
        found = [k for k, (submitted, _) in enumerate(self.requests)
                 if len(submitted) == len(calibrated) and submitted == calibrated]
        if not found or self.process is None and len(self.answers) <= found[0]:
            return None
        k = found[0]
        while len(self.answers) <= k:
            line = self.process.stdout.readline() if self.process is not None else b""
            if not line:
                self.record["error"] = "the worker ended before answering: %s" % self._log_tail()
                self.close()
                return None
            text = line.decode("utf-8", "replace")
            if text.startswith(ANSWER):
                self.answers.append(json.loads(text[len(ANSWER):]))
        if not self.answers[k].get("ok"):
            self.record["error"] = str(self.answers[k].get("error"))[:300]
            return None
        with open(self.requests[k][1], "rb") as handle:
            content = handle.read()
        self.record["taken"] += 1
        return content

    def _log_tail(self):
        try:
            with open(self.log, "rb") as handle:
                lines = handle.read().decode("utf-8", "replace").strip().splitlines()
            return " / ".join(lines[-3:])[-300:] or "no message"
        except OSError:
            return "no message"

    def close(self):
        if self.process is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class Beside(object):
    """``function(*args)`` in a thread started now; ``result()`` waits for it and returns its value (or raises
    its exception). ``start``/``end``/``seconds``: its run on the monotonic clock; with ``phases``
    (``converters.shared.phases.Phases``) it is also a phase of the step, ``name`` + " (thread)". Not a
    daemon: a process that fails meanwhile still waits for it at exit, so TensorFlow is never torn down
    under its interpreters."""

    def __init__(self, name, function, *args, phases=None):
        import threading

        self.value = self.error = self.end = self.seconds = None
        self.start = time.monotonic()

        def work():
            try:
                self.value = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to result()
                self.error = exc
            self.end = time.monotonic()
            self.seconds = round(self.end - self.start, 2)
            if phases is not None:
                phases.add(name + " (thread)", self.start, self.end)

        self.thread = threading.Thread(target=work, name=name, daemon=False)
        self.thread.start()

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


def Background(function):  # noqa: N802 - reads as the class it starts
    """``function()`` in a ``Beside`` thread named "quantization figures", started now (issue 31: the search's
    report-only figures, started as soon as the choice is made, beside the rest of the conversion and the
    written file's checks); a failure is its value ``{"report_figures_error": ...}`` (figures for the report
    never fail a conversion)."""

    def reported():
        try:
            return function()
        except Exception as exc:  # noqa: BLE001 - a diagnostic: never the reason a conversion fails
            return {"report_figures_error": "%s: %s" % (type(exc).__name__, str(exc)[:200])}
    return Beside("quantization figures", reported)


def _main(argv):
    from converters.tf2 import tflite_model

    args = json.loads(argv[0])
    api = tflite_model.load_tf_module("_pywrap_converter_api",
                                      os.path.join("compiler", "mlir", "lite", "python", "_pywrap_converter_api.so"))
    for line in sys.stdin:
        request = json.loads(line)
        try:
            with open(request["in"], "rb") as handle:
                calibrated = handle.read()
            os.remove(request["in"])
            quantized = api.ExperimentalMlirQuantizeModel(
                calibrated, args["disable_per_channel"], False, args["inference_type"], args["input_type"],
                args["output_type"], False, False, None, None, args["enable_variable_quantization"],
                args["disable_per_channel_for_dense_layers"], bytes.fromhex(args["debug_options"]))
            partial = request["out"] + ".part"
            with open(partial, "wb") as handle:
                handle.write(quantized)
            os.replace(partial, request["out"])
            answer = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - told to the parent, which quantizes itself
            answer = {"error": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
        sys.stdout.write(ANSWER + json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
