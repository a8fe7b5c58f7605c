"""``python -m mst_ref.cli ...``: the same as the ``mst-ref`` command."""

import sys

from .app import main

sys.exit(main())
