"""``nox -s envs``: the state of every declared environment as a plain-text table."""

from envs import registry, venvs
from envs.errors import EnvError
from envs.interpreters import find_python

COLUMNS = ("environment", "python", "interpreter", "lock", "state", "tensorflow", "keras", "h5py", "numpy")


def environment_rows():
    rows = []
    for name, env in registry.ENVIRONMENTS.items():
        try:
            interpreter = find_python(env.python)
        except EnvError:
            interpreter = "NOT FOUND (see README: Requirements)"
        try:
            lock = venvs.lock_sha256(name)[:12]
        except EnvError:
            lock = "no lock"
        state = venvs.status(name)
        versions = venvs.installed_versions(name) if state == "ready" else {}
        if versions.get("tf-keras"):
            versions["keras"] = "%s + tf-keras %s" % (versions.get("keras"), versions["tf-keras"])
        rows.append(
            (name, env.python, interpreter, lock, state)
            + tuple(versions.get(package) or "-" for package in ("tensorflow", "keras", "h5py", "numpy"))
        )
    return rows


def format_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header] + list(rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def environments_table():
    return format_table(COLUMNS, environment_rows()) + (
        "\n\nready: installed from the current lock and reused; stale: the lock changed or an install "
        "was interrupted (rebuilt on next use); missing: never created. Venvs live in %s."
        % venvs.home()
    )
