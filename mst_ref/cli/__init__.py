"""The ``mst-ref`` command line: one module per command group, :mod:`~mst_ref.cli.common` shared by all.

Nothing outside this package prints. ``main`` is the entry point (``mst-ref`` and ``python -m mst_ref.cli``).
"""

from .app import main

__all__ = ["main"]
