"""The synthetic camera: procedural parts with known defects (the embedded default).

Part ``N`` of a line seeded with ``seed`` is always the same part (its random
generator is ``default_rng([seed, N])``), whatever order parts are grabbed in,
so a failing part can be re-rendered from its id alone.

Each frame's ``meta`` carries the ground truth:

- ``"truth"``: tuple of dicts ``{"class_name", "box_xyxy", "area_px"}``
  (see :class:`~station.acquire.render.TruthDefect`), frame pixels;
- ``"marks"``: harmless ink marks in the same form (class ``"mark"``, not defects);
- ``"defective"``: bool, ``"product"``: str, ``"seed"``: int, ``"pose"``: (dx, dy, deg).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator

from ..config.camera import SyntheticCameraConfig
from ..contracts import Frame, Trigger
from .base import CameraError
from .products import product_base
from .render import RenderedPart, part_rng, render_part

log = logging.getLogger(__name__)


def iter_parts(cfg: SyntheticCameraConfig, start_id: int, n: int) -> Iterator[tuple[int, RenderedPart]]:
    """Yield ``(part_id, RenderedPart)`` for part ids ``start_id .. start_id+n-1``.

    The same parts the synthetic camera delivers for these ids with the same
    config (``cfg.seed`` None counts as seed 0 here, so datasets are
    reproducible). For training-data scripts and tests.
    """
    seed = 0 if cfg.seed is None else cfg.seed
    for part_id in range(start_id, start_id + n):
        yield part_id, render_part(part_rng(seed, part_id), cfg)


class SyntheticCamera:
    """A :class:`~station.acquire.base.CameraDriver` that renders parts."""

    def __init__(self, cfg: SyntheticCameraConfig, **_: object):
        self.cfg = cfg
        self.camera_id = cfg.id
        self.seed = cfg.seed if cfg.seed is not None else secrets.randbits(31)
        self._open = False
        self._frames = 0
        self._lock = threading.Lock()
        if cfg.seed is None:
            log.info("synthetic camera %s: no seed configured, using seed %d", cfg.id, self.seed)

    def open(self) -> None:
        """Build (and cache) the product's base so the first grab is fast."""
        product_base(self.cfg.product, self.cfg.width, self.cfg.height)
        self._open = True

    def grab(self, trigger: Trigger, timeout_s: float) -> Frame:
        """Render the part of ``trigger.part_id`` (rendering takes a few ms)."""
        if not self._open:
            raise CameraError(f"camera {self.camera_id}: grab before open()")
        t_exposure = time.monotonic_ns()
        part = render_part(part_rng(self.seed, trigger.part_id), self.cfg)
        with self._lock:
            self._frames += 1
        meta = {
            "truth": tuple(t.as_dict() for t in part.truth),
            "marks": tuple(m.as_dict() for m in part.marks),
            "defective": part.defective,
            "product": part.product,
            "seed": self.seed,
            "pose": part.pose,
        }
        return Frame(
            part_id=trigger.part_id, camera_id=self.camera_id, image=part.image, t_exposure_ns=t_exposure, meta=meta
        )

    def close(self) -> None:
        """Nothing to release; safe to call twice."""
        self._open = False

    def health(self) -> dict[str, object]:
        """Ok once open."""
        if not self._open:
            return {"state": "warning", "message": "not open"}
        return {"state": "ok", "message": f"synthetic {self.cfg.product}, seed {self.seed}, {self._frames} frames"}
