"""Recording configuration: SQLite and images."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import StrictModel


class StoreConfig(StrictModel):
    """Where results and images go, and how much is kept."""

    db_path: Path = Field(Path("data/station.db"), description="SQLite database file (WAL mode).")
    images_dir: Path = Field(Path("data/images"), description="Folder for images, stored by content hash.")
    queue_size: int = Field(5000, ge=10, description="Records waiting for the writer; beyond this they are dropped and counted.")
    batch_size: int = Field(64, ge=1, le=10000, description="Rows written per transaction at most.")
    image_format: Literal["png", "jpg"] = Field("png", description="png is lossless (for relabelling); jpg is smaller.")
    keep_pass_every: int = Field(25, ge=0, description="Keep the image of one PASS part in N (0 = none); FAIL/UNCERTAIN/FAILSAFE are always kept.")
    disk_budget_mb: float = Field(2000.0, gt=0, description="Delete the oldest PASS images, then the oldest others, to stay under this.")
