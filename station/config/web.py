"""Web server configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import CountUpTo1k, JpegQuality, ListenPort, SecondsUpTo1day, StrictModel


class WebConfig(StrictModel):
    """The FastAPI app: operator screen, review UI, REST API."""

    enabled: bool = Field(True, description="Serve the web app.")
    host: str = Field(
        "127.0.0.1", description="Listen address; loopback unless the station must be reached from the network."
    )
    port: ListenPort = Field(8000, description="TCP port (0 = pick a free one).")
    live_fps: float = Field(
        5.0, gt=0, le=60, description="Most live-image updates per second sent to each operator screen."
    )
    live_width: int = Field(
        1000,
        ge=160,
        le=4096,
        description="The live image is downscaled to at most this width in pixels (never upscaled).",
    )
    live_jpeg_quality: JpegQuality = Field(
        80, description="JPEG quality of the live image (higher = sharper and larger)."
    )
    sse_queue: int = Field(
        32,
        ge=4,
        le=10000,
        description=(
            "Events buffered per live client; a client that falls further behind misses events (counted in /metrics). "
            "Each buffered result holds its frames in memory, so keep this small."
        ),
    )
    max_live_clients: CountUpTo1k = Field(
        16, description="Most live screens (event streams) at once; one more gets HTTP 503 and retries."
    )
    anonymous_view: bool = Field(
        True,
        description=(
            "Show the read-only operator screen, /api/events, /api/live/*, /api/status and /health without login: "
            "a line-side display panel shows the screen without a keyboard. Every write (acknowledge, pause, trigger, "
            "model swap) still needs a login with the right role. False = every page needs a login."
        ),
    )
    metrics_anonymous: bool = Field(
        True,
        description="Serve /metrics (Prometheus) without login so a scraper needs no credentials; it holds counters "
        "only.",
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 90, description="A login session expires this many hours after login."
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the session cookie Secure: auto = when the request came over https (TLS here or a trusted "
        "proxy), always, never.",
    )
    login_max_failures: CountUpTo1k = Field(
        5, description="Failed logins allowed per username and client address within login_window_s; more get HTTP 429."
    )
    login_window_s: SecondsUpTo1day = Field(60.0, description="Window of the failed-login limit, in seconds.")
    ssl_certfile: Path | None = Field(
        None, description="Serve HTTPS with this PEM certificate (needs ssl_keyfile); cookies are then Secure."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile.")
    access_log: bool = Field(False, description="Log every HTTP request (the live screen makes several per second).")
    max_upload_mb: float = Field(
        500.0,
        gt=0,
        le=100_000,
        description=(
            "Largest dataset zip (YOLO or COCO) the review page accepts for import, in MB; a bigger upload gets HTTP "
            "413 "
            "before it is stored. Uploads are written to a temporary folder next to store.images_dir."
        ),
    )
    max_upload_unpacked_mb: float = Field(
        4000.0,
        gt=0,
        le=1_000_000,
        description="Most bytes an uploaded zip may unpack to, in MB (guards against zip bombs); more gets HTTP 413.",
    )
    max_upload_files: int = Field(
        200_000, ge=1, le=10_000_000, description="Most entries an uploaded dataset zip may hold; more gets HTTP 413."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both for HTTPS, or neither")
        return self
