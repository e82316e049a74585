"""Lambda-gate traps for the integration tests, built in tf1.13 with keras 2.2.4.

``python build_traps.py OUT_DIR [CASE ...]`` writes ``OUT_DIR/<case>.h5`` for each case and prints one
JSON object ``{case: {"model", "marker", "path", "custom_objects"}}``. Each trap's Lambda creates its
marker file ``OUT_DIR/<case>.marker`` when its function runs (the marker path is a literal baked in as a
default argument, so it travels with the stored bytecode). Building the model runs the function once:
the script checks that the marker appeared (the trap is armed) and deletes it after saving, so a marker
found later means the stored code ran again. All traps take input (None, 4, 6) and give 2 outputs.

Cases (``path`` is the Lambda's path the gate must name):
top                 Lambda at the top level
time_distributed    TimeDistributed(Lambda)
bidirectional       Bidirectional(RNN(LambdaCell(inner=Lambda))) (keras 2.2.4 cannot wrap a Lambda in
                    Bidirectional directly; needs --custom-objects lambda_cell.py)
sequential_in_model a Sequential holding the Lambda, nested in a functional Model
model_in_wrapper    TimeDistributed(Model "mid"(Model "inner"(Lambda)))
output_shape_fn     a Lambda whose output_shape is a function (the function creates the marker)
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CASES = ("top", "time_distributed", "bidirectional", "sequential_in_model", "model_in_wrapper",
         "output_shape_fn")
PATHS = {
    "top": "trap",
    "time_distributed": "td > trap",
    "bidirectional": "bidi > rnn > cell > trap",
    "sequential_in_model": "seq > trap",
    "model_in_wrapper": "td > mid > inner > trap",
    "output_shape_fn": "trap",
}


def _trap_function(marker, port=None):
    """What a hostile model's code tries when it is trusted: create ``marker`` (a file outside the run
    folder), read the user's ``~/.ssh/id_rsa`` and connect to 127.0.0.1:``port`` (default
    $TRAP_PORT, else 9); it reports each attempt on stderr ("trap: write escaped" / "trap: read
    blocked: ..."), so a step's log shows what the file-system box stopped, and returns its input."""
    port = int(os.environ.get("TRAP_PORT", "9")) if port is None else port

    # the marker and port are default arguments: func_dump stores them with the bytecode, no closure needed
    def trap(x, marker=marker, port=port):
        import os
        import socket
        import sys

        for attempt in ("write", "read", "connect"):
            try:
                if attempt == "write":
                    open(marker, "w").close()
                elif attempt == "read":
                    open(os.path.expanduser("~/.ssh/id_rsa")).read()
                else:
                    socket.create_connection(("127.0.0.1", port), timeout=3).close()
                sys.stderr.write("trap: %s escaped\n" % attempt)
            except OSError as error:
                sys.stderr.write("trap: %s blocked: %s\n" % (attempt, error))
        return x

    return trap


def build(case, marker):
    import keras
    from keras import layers

    L = layers
    trap = _trap_function(marker)
    inputs = L.Input(shape=(4, 6), name="x")
    if case == "top":
        x = L.Lambda(trap, name="trap")(inputs)
    elif case == "time_distributed":
        x = L.TimeDistributed(L.Lambda(trap, name="trap"), name="td")(inputs)
    elif case == "bidirectional":
        from lambda_cell import LambdaCell

        with keras.utils.CustomObjectScope({"LambdaCell": LambdaCell}):
            cell = LambdaCell(3, inner=L.Lambda(trap, name="trap"), name="cell")
            x = L.Bidirectional(L.RNN(cell, name="rnn", return_sequences=True), name="bidi")(inputs)
    elif case == "sequential_in_model":
        seq = keras.models.Sequential([L.Dense(5, input_shape=(4, 6), name="dense_in"),
                                       L.Lambda(trap, name="trap")], name="seq")
        x = seq(inputs)
    elif case == "model_in_wrapper":
        i = L.Input(shape=(6,), name="inner_in")
        inner = keras.models.Model(i, L.Lambda(trap, name="trap")(L.Dense(6, name="inner_dense")(i)),
                                   name="inner")
        j = L.Input(shape=(6,), name="mid_in")
        mid = keras.models.Model(j, inner(j), name="mid")
        x = L.TimeDistributed(mid, name="td")(inputs)
    elif case == "output_shape_fn":
        shape = lambda s, marker=marker: (open(marker, "w").close(), s)[1]  # noqa: E731
        x = L.Lambda(lambda t: t * 2.0, output_shape=shape, name="trap")(inputs)
    else:
        raise SystemExit("unknown case %r" % case)
    x = L.Flatten(name="flat")(x)
    outputs = L.Dense(2, name="scores")(x)
    return keras.models.Model(inputs, outputs, name="outer")


def main(out, cases):
    import tensorflow as tf
    from keras import backend as K

    made = {}
    for case in cases:
        K.clear_session()
        np.random.seed(0)
        tf.set_random_seed(0)
        model_path = os.path.join(out, case + ".h5")
        marker = os.path.join(out, case + ".marker")
        if os.path.exists(marker):
            os.remove(marker)
        model = build(case, marker)
        model.save(model_path)
        if not os.path.exists(marker):
            raise SystemExit("trap %s is not armed: building it did not run its function" % case)
        os.remove(marker)
        made[case] = {"model": model_path, "marker": marker, "path": PATHS[case],
                      "custom_objects": os.path.join(HERE, "lambda_cell.py") if case == "bidirectional" else None}
    print(json.dumps(made, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or CASES)
