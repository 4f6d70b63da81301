"""Shared fixtures live in tests/fixtures/, one module per subsystem."""

pytest_plugins = [
    "tests.fixtures.sim",
    "tests.fixtures.servers",
    "tests.fixtures.daemon",
]
