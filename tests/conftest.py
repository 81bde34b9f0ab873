# The shared test support (fakes, factories, drivers, servers): its fixtures
# are available everywhere, and pytest rewrites its asserts.
pytest_plugins = ["tests.support.fixtures"]
