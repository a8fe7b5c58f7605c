# Root conftest: its presence puts the repository root on sys.path during tests, so that tests can
# import the PyTorch reference as `reference.mst_torch`. Shared fixtures belong in tests/conftest.py.
