"""What tests share: fakes of the worker's surroundings, factories of
events and histories, reference computations and drivers. Registered as a
pytest plugin (tests/conftest.py), so fixtures defined here are everywhere."""
