"""``tfbridge envs`` / ``nox -s envs``: every environment's state; ``--rebuild NAME ...`` recreates some;
``--tf VERSION[,VERSION...]`` makes the environments of those TensorFlow releases (locked first).

Host side, standard library only. Exit status 0, 2 (a bad argument or an unknown name), 3 (an install
failed: its paragraph names the log).
"""

import sys

from converters import cli
from converters.errors import UsageError
from envs import registry, report, venvs

USAGE = "envs [--rebuild NAME [NAME ...] | --tf VERSION[,VERSION...]]"


def run(argv):
    log = lambda message: sys.stderr.write(message + "\n")  # noqa: E731
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: tfbridge %s  (known: %s, or tfX.Y[.Z] for any TensorFlow release)"
              % (USAGE, ", ".join(registry.ENVIRONMENTS)))
        return 0
    extra = []
    if args:
        if args[0] not in ("--rebuild", "--tf") or len(args) < 2:
            raise UsageError("usage: %s; known: %s, or tfX.Y[.Z] for any TensorFlow release."
                             % (USAGE, ", ".join(registry.ENVIRONMENTS)), step="options")
        if args[0] == "--tf":  # the environments of these TF releases, made (locked first) unless ready
            extra = registry.tf_environments(",".join(args[1:]))
            for name in extra:
                venvs.ensure(name, log=log)
        else:
            try:
                report.rebuild(args[1:], log=log)
            except KeyError as error:
                raise UsageError(str(error).strip("'\""), step="options")
    print(report.environments_table(extra))
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run, step="envs"))
