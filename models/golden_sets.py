"""The golden sets of a running station: list them, resolve one by id, freeze a dataset snapshot as a new one.

Part of the model lifecycle the web models page drives (:class:`models.service.ModelsService` holds one);
every golden set lives under ``<data>/golden/<name>/`` (:mod:`models.golden`), and clients name it by
golden id, never by a path.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.store import audit
from station.store.db import open_db

from .service_views import ServiceError

if TYPE_CHECKING:
    from station.app import Station

    from .golden import GoldenSet

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,60}$")


class GoldenSets:
    """The golden sets under ``golden_dir``; a freeze reads the station's database and images and exports the
    snapshot to a scratch folder under ``exports_dir``."""

    def __init__(self, station: Station, golden_dir: Path, exports_dir: Path):
        self.station = station
        self.golden_dir = golden_dir
        self.exports_dir = exports_dir

    def list(self) -> list[dict[str, Any]]:
        """Every golden set under ``<data>/golden`` (not re-hashed here: the evaluation verifies)."""
        from .golden import GoldenSetError, load_golden

        out = []
        for m in sorted(self.golden_dir.glob("*/golden.json")):
            try:
                gs = load_golden(m.parent, verify=False)
            except GoldenSetError as e:
                log.warning("golden set %s unusable: %s", m.parent, e)
                continue
            out.append({**_golden_dict(gs, m.parent.name), "source": dict(gs.source)})
        return out

    def root(self, golden_id: str | None) -> tuple[Path, str, str]:
        """(root, golden_id, name) of a golden set (the newest when ``golden_id`` is None); 404 when unknown."""
        sets = self.list()
        if not sets:
            raise ServiceError(
                409,
                "no golden set yet: freeze one from a dataset snapshot on this page (or `models golden` into "
                f"{self.golden_dir})",
            )
        g: dict[str, Any] | None
        if golden_id is None:
            g = max(sets, key=lambda s: (self.golden_dir / s["name"] / "golden.json").stat().st_mtime)
        else:
            g = next((s for s in sets if s["golden_id"] == golden_id), None)
            if g is None:
                raise ServiceError(404, f"no golden set {golden_id}")
        return self.golden_dir / g["name"], g["golden_id"], g["name"]

    def freeze(self, snapshot_id: int, name: str, user: str) -> dict[str, Any]:
        """Freeze a dataset snapshot (every image, no split) as a new golden set ``<data>/golden/<name>``."""
        import labeling

        from .golden import freeze_split

        if not NAME_RE.match(name):
            raise ServiceError(422, "name: 1-60 letters, digits, '.', '_' or '-'")
        out = self.golden_dir / name
        if out.exists():
            raise ServiceError(
                409, f"golden set {name} exists already: a golden set is never overwritten; choose another name"
            )
        tmp = self.exports_dir / f"golden-{name}-{int(time.time())}"
        db = open_db(self.station.cfg.store.db_path, migrate=False)
        try:
            try:
                snap = labeling.get_snapshot(db, snapshot_id)
                data_yaml = labeling.export_yolo(
                    db, self.station.images, snapshot_id, tmp, val_fraction=0.0, link=False
                )
            except LookupError as e:
                raise ServiceError(404, str(e)) from None
            except (FileNotFoundError, FileExistsError) as e:
                raise ServiceError(409, str(e)) from None
            gs = freeze_split(
                data_yaml, "train", out, source={"snapshot_id": snap.id, "snapshot_sha": snap.sha, "frozen_by": user}
            )
            audit.record(
                db,
                user,
                "golden_freeze",
                "golden",
                gs.golden_id,
                after={"name": name, "snapshot_id": snap.id, "n": len(gs)},
            )
        finally:
            db.close()
            shutil.rmtree(tmp, ignore_errors=True)
        return _golden_dict(gs, name)


def _golden_dict(gs: GoldenSet, name: str) -> dict[str, Any]:
    """What the models page shows of a golden set."""
    return {
        "golden_id": gs.golden_id,
        "name": name,
        "n": len(gs),
        "n_defective": gs.n_defective,
        "names": list(gs.names),
    }
