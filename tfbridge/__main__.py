"""``python -m tfbridge``: the same as the ``tfbridge`` command."""

import sys

from tfbridge._cli import main

if __name__ == "__main__":
    sys.exit(main())
