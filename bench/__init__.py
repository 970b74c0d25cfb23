"""The benchmarks: scripts run as `python bench/NAME.py`, and the modules they share.
Installed with the packages (pyproject.toml), so that they and the tests import them by
name."""
