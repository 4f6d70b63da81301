"""Shared fixtures live in tests/fixtures/, one module per subsystem."""

import os

from hypothesis import settings

pytest_plugins = [
    "tests.fixtures.sim",
    "tests.fixtures.servers",
    "tests.fixtures.daemon",
]

# CI must be reproducible: the same examples on every run. Locally, hypothesis explores.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
