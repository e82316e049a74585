"""tfbridge's conversion step with one quantization candidate forced: the benchmark's instrument for measuring
a candidate the search did not choose (tf2 environment).

    python -m bench.forced_tf2 CANDIDATE RUN_DIR --out STAGE --quantize CANDIDATE [the step's options]

Runs ``converters.tf2.tflite_convert`` unchanged, except that the search's choice
(``converters.tf2.recovery.choice.choose``) returns CANDIDATE whenever it was built and scored, with why
naming what the search itself chose. The written ``model_int8.tflite`` and ``tflite.json`` are then that
candidate's, measured on the probe as any chosen file is. A candidate that was not built (cle dropped by
its float check, or refused) is not forced: ``tflite.json``'s ``quantization.chosen`` says what was written,
and the benchmark checks it. Never used by tfbridge itself.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as converters.tf2.tflite_convert, before anything imports TF
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORCED = "forced by the benchmark (bench/forced_tf2.py); the search chose %s: %s"


def main(argv):
    name, argv = argv[0], argv[1:]
    from converters.tf2.recovery import choice

    chooses = choice.choose

    def forced(candidates, *args, **kwargs):
        chosen, why = chooses(candidates, *args, **kwargs)
        built = [candidate["name"] for candidate in candidates]
        if name in built and chosen != name:
            return name, FORCED % (chosen, why)
        return chosen, why

    choice.choose = forced  # search() looks choose up in the choice module when it runs
    from converters.cli import main as cli_main
    from converters.tf2 import tflite_convert

    return cli_main(tflite_convert.run_step, step="convert", argv=argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
