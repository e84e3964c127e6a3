"""Sections of the station configs that the tests and benches build."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def store_section(folder: Path, **more: Any) -> dict[str, Any]:
    """The ``store`` section of a station keeping ``station.db`` and ``images/`` in ``folder``; ``more``: its other
    fields."""
    return {"db_path": str(folder / "station.db"), "images_dir": str(folder / "images"), **more}
