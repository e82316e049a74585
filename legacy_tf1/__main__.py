"""``python -m legacy_tf1 COMMAND ...`` inside tf1.13 / tf1.15 (see ``legacy_tf1/__init__.py``)."""

import sys

from converters import cli
from legacy_tf1._cli import run

if __name__ == "__main__":
    sys.exit(cli.main(run, step=(sys.argv[1] if len(sys.argv) > 1 else None)))
