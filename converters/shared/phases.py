"""Phases of a step on the machine's monotonic clock, for the run's timeline (issue 31).

For whom: the steps that have phases worth seeing (the TF 1.x re-save, the tf2 conversion step) and the
host, which puts them on one time axis with the steps themselves (``converters.timeline``). Standard
library only, Python 3.7: it runs in every environment.

Each phase is ``{"phase", "start", "end"}`` in seconds of ``time.monotonic()``: on Linux that is the
system-wide ``CLOCK_MONOTONIC``, the same clock in every process of the machine, so the host can subtract
its own run start from a step's stamps. ``waits_on`` names what a phase waited for (a file of another
step), so the timeline shows what waited on what.
"""

import contextlib
import time


def now():
    """The clock every stamp uses (``time.monotonic``)."""
    return time.monotonic()


class Phases(object):
    """A step's phases, in the order they started."""

    def __init__(self):
        self.entries = []

    def add(self, name, start, end=None, waits_on=None):
        entry = {"phase": name, "start": round(start, 3), "end": round(now() if end is None else end, 3)}
        if waits_on:
            entry["waits_on"] = waits_on
        self.entries.append(entry)
        return entry

    @contextlib.contextmanager
    def phase(self, name, waits_on=None):
        """Time the ``with`` block as phase ``name`` (recorded even when it raises)."""
        start = now()
        try:
            yield
        finally:
            self.add(name, start, waits_on=waits_on)

    def as_list(self):
        return list(self.entries)
