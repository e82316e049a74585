"""Fixtures shared by the host unit tests (none at present: the tiny real environment, which needs the
package registry, lives in tests/integration/test_envs_crossenv.py)."""
