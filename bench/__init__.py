"""tfbridge's benchmarks (``nox -s bench``): measured, never asserted in tests. See bench/run.py."""
