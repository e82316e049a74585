"""Packaging of the repository's tree inside the ``tfbridge`` package (metadata: pyproject.toml).

The wheel holds ``tfbridge/`` (the command and the Python API) and the repository's ``envs/``,
``converters/`` and ``legacy_tf1/`` as ``tfbridge/_tree/envs/...`` and so on (``package_dir`` maps
each one), so that installing tfbridge adds one top-level name, ``tfbridge``, to site-packages and no
generic ``envs`` or ``converters`` that would collide with another package's (tfbridge/_layout.py says
how the code finds them). The packages are found here rather than listed in pyproject.toml so that a new
subpackage (say ``converters/tf2/recovery``) is shipped without anyone remembering to add it.
"""

from setuptools import find_packages, setup

TREE = ("envs", "converters", "legacy_tf1")
tree_packages = find_packages(include=[pattern for name in TREE for pattern in (name, name + ".*")])

setup(
    packages=["tfbridge"] + ["tfbridge._tree." + name for name in tree_packages],
    package_dir=dict([("tfbridge", "tfbridge")]
                     + [("tfbridge._tree." + name, name.replace(".", "/")) for name in tree_packages]),
    # the locks, the report template and the VX delegate's op table: read at run time from the tree
    package_data={"tfbridge._tree." + name: ["*.json", "*.txt", "*.j2", "locks/*.txt", "templates/*.j2"]
                  for name in tree_packages},
)
