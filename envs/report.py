"""``nox -s envs``: the state of every declared environment as a plain-text table."""

from envs import paths, registry, venvs
from envs.errors import EnvError
from envs.interpreters import find_python

COLUMNS = ("environment", "python", "interpreter", "lock", "state", "tensorflow", "keras", "h5py", "numpy")


def environment_names(extra=()):
    """The built-in environments, then those made from the rule (``--tf``) that exist under
    ``$TFBRIDGE_HOME`` or are named in ``extra``, oldest TensorFlow first."""
    import os

    folder = os.path.join(paths.home(), "envs")
    made = [name for name in (os.listdir(folder) if os.path.isdir(folder) else []) if registry.is_derived(name)]
    derived = sorted(set(made) | set(extra), key=lambda name: registry.tf_version_key(name[2:]))
    return list(registry.ENVIRONMENTS) + derived


def environment_rows(diagnoses=None, extra=()):
    """One row per environment (``COLUMNS``). ``diagnoses``: a dict filled with ``{name: (state, reasons)}``."""
    rows = []
    for name in environment_names(extra):
        try:
            env = registry.get(name)
            interpreter = find_python(env.python)
        except EnvError:
            env = registry.Environment(name, "-", (), "", "")
            interpreter = "NOT FOUND (see README: Requirements)"
        try:
            lock = venvs.lock_sha256(name)[:12]
        except EnvError:
            lock = "no lock"
        state, reasons = venvs.diagnose(name)
        if diagnoses is not None:
            diagnoses[name] = (state, reasons)
        # a broken environment's versions too: they show what is there (e.g. keras "-")
        versions = venvs.installed_versions(name) if state in ("ready", "broken") else {}
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


def environments_table(extra=()):
    diagnoses = {}
    table = format_table(COLUMNS, environment_rows(diagnoses, extra))
    broken = ["%s is broken: %s. Rebuild it with `%s` (the next run that uses it rebuilds it too)."
              % (name, venvs.describe_problems(reasons), venvs.rebuild_command(name))
              for name, (state, reasons) in diagnoses.items() if state == "broken"]
    made = ["%s: made in %s s, %.2f GB" % (name, state.get("install_seconds"), state["size_bytes"] / 1e9)
            for name in environment_names(extra) for state in [venvs.read_state(name) or {}]
            if registry.is_derived(name) and state.get("size_bytes")]
    return table + ("\n\n" + "\n".join(broken) if broken else "") + (
        "\n\nMade from the rule (--tf): " + "; ".join(made) if made else "") + (
        "\n\nready: installed from the current lock, still holding what it pins, and reused; broken: the "
        "lock is unchanged but a package it pins is missing, of another version or damaged (rebuilt on "
        "next use); stale: the lock changed or an install was interrupted (rebuilt on next use); missing: "
        "never created. Venvs live in %s." % paths.home()
    )


def rebuild(names, log=print):
    """``nox -s envs -- --rebuild NAME ...``: recreate each named environment from its lock, whatever
    its state. Raises KeyError for an unknown name, EnvError when an install fails."""
    for name in names:
        registry.get(name)
    for name in names:
        venvs.ensure(name, log=log, force=True)
