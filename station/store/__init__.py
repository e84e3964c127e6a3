"""Recording: SQLite (WAL, recorded migrations) and content-addressed images.

- :func:`~station.store.db.open_db` opens and migrates the database.
- :class:`~station.store.images.ImageStore` keeps image files and the disk budget.
- :class:`~station.store.recorder.Recorder` is the one writer thread fed by the bus.
- :mod:`~station.store.queries` holds the read functions.
"""

from .db import StoreError, open_db, write_transaction
from .images import ImageStore, StoredImage
from .migrations import MIGRATIONS, applied_migrations, apply_migrations, migration
from .recorder import Recorder

__all__ = [
    "MIGRATIONS",
    "ImageStore",
    "Recorder",
    "StoreError",
    "StoredImage",
    "applied_migrations",
    "apply_migrations",
    "migration",
    "open_db",
    "write_transaction",
]
