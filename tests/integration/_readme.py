"""README.md's Python examples, as written: the code block after a ``<!-- readme-example: NAME ...-->`` line."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def example(name):
    with open(README) as handle:
        text = handle.read()
    match = re.search(r"<!-- readme-example: %s\b[^>]*-->\n```python\n(.*?)\n```" % re.escape(name), text, re.S)
    assert match, "README.md has no example %r" % name
    return match.group(1) + "\n"
