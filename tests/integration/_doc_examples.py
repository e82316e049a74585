"""The documentation's Python examples, as written: the code block after a ``<!-- doc-example: NAME ...-->``
line in README.md or a page of docs/."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def example(name):
    pattern = re.compile(r"<!-- doc-example: %s\b[^>]*-->\n```python\n(.*?)\n```" % re.escape(name), re.S)
    for page in PAGES:
        with open(page) as handle:
            match = pattern.search(handle.read())
        if match:
            return match.group(1) + "\n"
    raise AssertionError("no page of README.md or docs/ has the example %r" % name)
