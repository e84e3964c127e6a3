"""Recording configuration: SQLite, images, free-space watermarks and the spill file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import CountUpTo10k, StrictModel


class StoreConfig(StrictModel):
    """Where results and images go, and how much is kept."""

    db_path: Path = Field(Path("data/station.db"), description="SQLite database file (WAL mode).")
    images_dir: Path = Field(Path("data/images"), description="Folder for images, stored by content hash.")
    queue_size: int = Field(
        5000, ge=10, description="Records waiting for the writer; beyond this they are dropped and counted."
    )
    batch_size: CountUpTo10k = Field(64, description="Rows written per transaction at most.")
    image_format: Literal["png", "jpg"] = Field("png", description="png is lossless (for relabelling); jpg is smaller.")
    keep_pass_every: int = Field(
        25,
        ge=0,
        description="Keep the image of one PASS part in N (0 = none); FAIL/UNCERTAIN/FAILSAFE are always kept.",
    )
    disk_budget_mb: float = Field(
        2000.0, gt=0, description="Delete the oldest PASS images, then the oldest others, to stay under this."
    )
    min_free_mb: float = Field(
        1024.0,
        ge=0,
        description="Free-space floor on the disk of images_dir, in MB: below it the oldest PASS images, then the "
        "oldest "
        "others, are deleted (images go before the database runs short) and an alarm is raised while space stays "
        "short. "
        "The floor is the smaller of this and min_free_percent of the disk; 0 for both turns the watermark off.",
    )
    min_free_percent: float = Field(
        10.0,
        ge=0,
        le=90,
        description="Free-space floor as a percentage of the images disk's size (see min_free_mb; the smaller one "
        "applies, 0 = not used).",
    )
    spill_path: Path | None = Field(
        None,
        description="Append-only file (JSON lines, fsynced per batch) that takes the records the database cannot: "
        "while "
        "it is unwritable and the queue is half full, and at stop. Replayed into the database when it can be written "
        "and "
        "at the next start (idempotent: part ids are unique). Put it on another disk than db_path. None: records that "
        "cannot be written are dropped and counted in records_dropped.",
    )
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL",
        description="SQLite synchronous mode of the writer. FULL: a committed batch survives a power cut (one fsync "
        "per "
        "batch). NORMAL: faster, survives a process crash, but a power cut can lose the batches committed since the "
        "last "
        "checkpoint (see docs/storage.md).",
    )

    @model_validator(mode="after")
    def _spill_is_elsewhere(self) -> StoreConfig:
        if self.spill_path is not None:
            names = {
                self.db_path,
                Path(f"{self.db_path}-wal"),
                Path(f"{self.db_path}-shm"),
                Path(f"{self.db_path}-journal"),
            }
            if self.spill_path in names:
                raise ValueError(
                    f"store.spill_path must not be the database or its journal ({self.spill_path}); put it on another "
                    "disk"
                )
        return self
