"""Web server configuration."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class WebConfig(StrictModel):
    """The FastAPI app: operator screen, review UI, REST API."""

    enabled: bool = Field(True, description="Serve the web app.")
    host: str = Field("127.0.0.1", description="Listen address; loopback unless the station must be reached from the network.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = pick a free one).")
    live_fps: float = Field(5.0, gt=0, le=60, description="Most live-image updates per second sent to each operator screen.")
