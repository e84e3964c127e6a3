"""``python -m station``."""

from .cli import main

raise SystemExit(main())
