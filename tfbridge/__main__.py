"""``python -m tfbridge``: the same as the ``tfbridge`` command."""

import sys

from tfbridge._cli import main

sys.exit(main())
