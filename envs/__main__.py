"""``tfbridge envs`` / ``nox -s envs``: every environment's state; ``--rebuild NAME ...`` recreates some.

Host side, standard library only. Exit status 0, 2 (a bad argument or an unknown name), 3 (an install
failed: its paragraph names the log).
"""

import sys

from converters import cli
from converters.errors import UsageError
from envs import registry, report


def run(argv):
    log = lambda message: sys.stderr.write(message + "\n")  # noqa: E731
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: tfbridge envs [--rebuild NAME [NAME ...]]  (known: %s)" % ", ".join(registry.ENVIRONMENTS))
        return 0
    if args:
        if args[0] != "--rebuild" or len(args) < 2:
            raise UsageError("usage: envs [--rebuild NAME [NAME ...]]; known: %s."
                             % ", ".join(registry.ENVIRONMENTS), step="options")
        try:
            report.rebuild(args[1:], log=log)
        except KeyError as error:
            raise UsageError(str(error).strip("'\""), step="options")
    print(report.environments_table())
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(run, step="envs"))
