"""What a folder holds, for tests that check that a failed or killed run left a folder as it was."""

import hashlib
import os


def file_hashes(folder):
    """{relative path: sha256} of every file below ``folder``."""
    found = {}
    for root, _, files in os.walk(str(folder)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, str(folder))] = hashlib.sha256(handle.read()).hexdigest()
    return found
