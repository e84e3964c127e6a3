"""``python -m labeling``: see :mod:`labeling.cli`."""

import sys

from .cli import main

sys.exit(main())
