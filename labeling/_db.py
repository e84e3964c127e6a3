"""Small shared helpers of the labeling package (transactions come from station.store.db)."""

from __future__ import annotations

import math
from typing import Any

import sqlite_utils

from station.store.db import transaction  # noqa: F401  (the store's, re-exported for labeling)


def table_exists(db: sqlite_utils.Database, name: str) -> bool:
    """True if a table or view called ``name`` exists."""
    return db[name].exists()


def check_finite(name: str, value: Any) -> float:
    """``value`` as a finite float, else ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return v
