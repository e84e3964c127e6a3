"""The station's link to the plant tier (docs/plant.md): the ``plant:`` section; absent = no link."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from .base import CountUpTo10k, JpegQuality, StrictModel

Name = Annotated[str, Field(min_length=1)]
"""A name that groups results on the plant's dashboard and rollups: not empty."""


class PlantLinkConfig(StrictModel):
    """Uplink of results and images to the plant (NATS JetStream + S3), through a local SQLite outbox."""

    nats_url: str = Field(
        ..., description="NATS server(s) of the plant, e.g. nats://plant-nats-1:4222 (comma-separated for a cluster)."
    )
    s3_endpoint: str = Field(..., description="S3 endpoint URL of the plant's object store, e.g. http://plant-s3:8333.")
    s3_bucket: str = Field(
        "plant", min_length=3, max_length=63, description="Bucket for images (keyed by content hash)."
    )
    s3_access_key: str = Field("station", description="S3 access key id.")
    s3_secret_key: str = Field("station", description="S3 secret key.")
    line: Name = Field(
        "line-1", description="The production line this station inspects (dashboard and rollups group by it)."
    )
    product: Name = Field("default", description="Product name sent with every result (Pareto per product).")
    group: Name = Field("default", description="Station group for staged model rollout (e.g. canary, wave-1).")
    subject_prefix: str = Field(
        "plant",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="NATS subject prefix: results go to <prefix>.results.<station>.",
    )
    outbox_path: Path = Field(
        Path("data/plant_outbox.db"),
        description="SQLite file holding results until JetStream stored them (survives restarts and outages).",
    )
    outbox_max: int = Field(
        50000,
        ge=10,
        le=10_000_000,
        description="Most results kept while the plant is unreachable; beyond it the overflow policy applies.",
    )
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="When the outbox is full: drop the oldest stored results, or refuse the new ones. Either way they "
        "are counted and alarmed.",
    )
    alarm_fill: float = Field(
        0.8, gt=0, le=1, description="Outbox fill (fraction of outbox_max) that raises the plant-link warning."
    )
    images: Literal["all", "rejects", "none"] = Field(
        "all", description="Which parts' images are uploaded (JPEG of each frame)."
    )
    jpeg_quality: JpegQuality = Field(90, description="JPEG quality of uploaded images.")
    batch: CountUpTo10k = Field(
        256, description="Results sent per round trip (published together, deleted on their stored acks)."
    )
    queue_size: int = Field(
        2000,
        ge=10,
        le=1_000_000,
        description="Bus queue of the uplink thread; when full, results are dropped and counted "
        "(the line never waits).",
    )
    labels: bool = Field(
        True,
        description="Send the station's QA label changes (with their image files) to the plant database "
        "(central labels).",
    )
    follow_models: bool = Field(
        False,
        description="Run the model the plant desires for this station's group (staged rollout): download, check "
        "sha256, hot-swap (needs inspector.type onnx or anomaly).",
    )
    shadow_parts: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="With follow_models: run a new model in shadow mode on this many parts before swapping it in (0 = "
        "swap at once).",
    )
    shadow_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A shadow run that has not judged shadow_parts parts in this time fails the model (the running one "
        "stays).",
    )
    models_dir: Path = Field(
        Path("data/plant_models"), description="Where downloaded model files are kept (named by sha256)."
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First retry delay after the plant became unreachable.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Longest retry delay (exponential backoff).")
