"""Images on disk by content hash, with a retention policy and a disk budget.

Layout: ``<root>/ab/cd/<sha256>.<fmt>`` where ``sha256`` is the hash of the
*encoded* file bytes, so the same content is stored once and a file's name
proves its content. Files are written to a temporary name in the same folder,
fsynced, then renamed (``os.replace``): a reader or a crash never sees half a
file.

Budget policy: :meth:`ImageStore.enforce_budget` deletes the files of the
oldest PASS images first, then the oldest of the others, and *marks* their
rows deleted (``images.deleted_at``) instead of removing them, because labels
refer to image ids and the record of which part had which image is history
worth keeping. A file shared by several rows is removed only with all of them.
The row is committed as deleted before the file is unlinked: a crash in
between leaves an orphan file (wasted space), never a row pointing at a
missing file. Usage is accounted from the database, so files written but whose
rows were never committed (a crash between the two) are not counted.

Free-space watermark: the budget is a fixed size and does not see the disk. So
:meth:`ImageStore.enforce_free_space` also measures the free space of the disk
holding ``root`` (``os.statvfs``: a cheap system call, made by the recorder
thread after a commit or a failed write, never on the decision path). Below the
floor (the smaller of ``min_free_mb`` and ``min_free_percent`` of the disk) it
deletes, in the same order as the budget (oldest PASS first, then the oldest
others), until free space is back at ``free_target_factor`` times the floor;
before deleting anything it checkpoints the WAL (``wal_checkpoint(TRUNCATE)``),
which can hold ~4 MB of already-committed pages between checkpoints.
Images are the first thing to go so that SQLite, usually on the same disk,
never runs short: verdict rows are the last. Each sweep logs one line (free
before and after, files deleted). If the rows cannot be marked deleted (the
database itself cannot write, e.g. the disk is already full), the oldest
*PASS* files are unlinked anyway and their rows marked at the next sweep that
can write: a row may then point at a missing file for a while
(``open_path`` says so), which is better than a database that cannot record.

Heat maps (``anomaly_maps`` rows, :mod:`station.store.heatmaps`) are grayscale PNGs stored the
same way under ``<root>/maps``; each belongs to one image row and is deleted with it: the
budget marks the map rows of the images it deletes in the same transaction, and removes a map
file once no live row uses it. Their bytes count towards the budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..contracts import Outcome

if TYPE_CHECKING:
    import sqlite_utils

    from ..config.store import StoreConfig

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg")
MAPS_DIR = "maps"  # heat maps: <root>/maps/ab/cd/<sha256>.png
_SHA_RE = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class StoredImage:
    """Where an encoded image went and what it is."""

    sha256: str
    relpath: str
    bytes: int
    width: int
    height: int
    format: str


def valid_sha256(sha256: object) -> str:
    """Return ``sha256`` lower-cased if it is exactly 64 hex characters, else raise ValueError."""
    if not isinstance(sha256, str) or not _SHA_RE.fullmatch(sha256):
        raise ValueError(f"not an image id (64 hex characters expected): {str(sha256)[:80]!r}")
    return sha256.lower()


def relpath_for(sha256: str, fmt: str) -> str:
    """``ab/cd/<sha>.<fmt>`` for a validated hash and a known format."""
    sha = valid_sha256(sha256)
    if fmt not in FORMATS:
        raise ValueError(f"image format must be one of {FORMATS}, not {fmt!r}")
    return f"{sha[:2]}/{sha[2:4]}/{sha}.{fmt}"


class ImageStore:
    """Content-addressed image files under ``root`` with keep and budget rules."""

    def __init__(
        self,
        root: Path | str,
        fmt: str = "png",
        keep_pass_every: int = 25,
        disk_budget_mb: float = 2000.0,
        *,
        jpeg_quality: int = 95,
        fsync: bool = True,
        low_water: float = 0.9,
        min_free_mb: float = 0.0,
        min_free_percent: float = 0.0,
        free_target_factor: float = 1.5,
    ):
        """``low_water``: when over budget, delete down to this fraction of it (fewer, larger sweeps).

        ``min_free_mb`` / ``min_free_percent``: the free-space floor of the images disk (the
        smaller of the two that are > 0; both 0 = no watermark); a sweep frees space up to
        ``free_target_factor`` times the floor.
        """
        if fmt not in FORMATS:
            raise ValueError(f"store.image_format must be one of {FORMATS}, not {fmt!r}")
        if keep_pass_every < 0:
            raise ValueError(f"store.keep_pass_every must be >= 0, not {keep_pass_every}")
        if disk_budget_mb <= 0:
            raise ValueError(f"store.disk_budget_mb must be > 0, not {disk_budget_mb}")
        if not 0 < low_water <= 1:
            raise ValueError(f"low_water must be in (0, 1], not {low_water}")
        self.root = Path(root)
        self.maps_root = self.root / MAPS_DIR
        self.fmt = fmt
        self.keep_pass_every = keep_pass_every
        self.budget_bytes = int(disk_budget_mb * 1024 * 1024)
        self.jpeg_quality = jpeg_quality
        self.fsync = fsync
        self.low_water = low_water
        self._used_estimate: int | None = None  # None = unknown: ask the database
        if min_free_mb < 0 or not 0 <= min_free_percent < 100:
            raise ValueError(
                f"store.min_free_mb must be >= 0 and min_free_percent in [0, 100), not {min_free_mb}, "
                f"{min_free_percent}"
            )
        if free_target_factor < 1:
            raise ValueError(f"free_target_factor must be >= 1, not {free_target_factor}")
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.min_free_percent = float(min_free_percent)
        self.free_target_factor = float(free_target_factor)
        self.unmarked: list[tuple[str, str]] = []  # files unlinked while the database could not write (rows to mark)
        self.bytes_since_check = 0  # written since the last free-space check (the recorder checks again after floor/4)
        self.last_floor = 0

    @classmethod
    def from_config(cls, cfg: StoreConfig) -> ImageStore:
        """Build from a :class:`~station.config.StoreConfig`."""
        return cls(
            cfg.images_dir,
            cfg.image_format,
            cfg.keep_pass_every,
            cfg.disk_budget_mb,
            min_free_mb=cfg.min_free_mb,
            min_free_percent=cfg.min_free_percent,
        )

    # -- policy -------------------------------------------------------------
    def should_keep(self, outcome: Outcome | str, part_id: int) -> str | None:
        """Why the image of this part is kept ("fail", "uncertain", "failsafe", "pass-sample"), or None.

        Every FAIL/UNCERTAIN/FAILSAFE image is kept; one PASS in ``keep_pass_every``
        (by part id, so the sample is the same across restarts).
        """
        o = Outcome(outcome)
        if o is Outcome.PASS:
            if self.keep_pass_every and part_id % self.keep_pass_every == 0:
                return "pass-sample"
            return None
        return o.value.lower()

    # -- files --------------------------------------------------------------
    def encode(self, image: np.ndarray) -> bytes:
        """Encode ``image`` (uint8/uint16 gray or BGR) in the store's format."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
            raise ValueError(
                f"cannot store image: expected a 2-D or 3-D array, got {getattr(image, 'shape', type(image))}"
            )
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if self.fmt == "jpg" else []
        try:
            ok, buf = cv2.imencode("." + self.fmt, image, params)
        except cv2.error as exc:
            raise ValueError(f"OpenCV cannot encode a {image.dtype} {image.shape} image as {self.fmt}: {exc}") from None
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image.dtype} {image.shape} image as {self.fmt}")
        return buf.tobytes()

    def save(self, image: np.ndarray) -> StoredImage:
        """Encode and store ``image``; storing the same content twice writes it once."""
        return self.put(self.encode(image), self.fmt, int(image.shape[1]), int(image.shape[0]))

    def put(self, data: bytes, fmt: str, width: int, height: int) -> StoredImage:
        """Store already-encoded image bytes (``fmt`` png or jpg, ``width`` x ``height`` pixels) as they are.

        The same content is written once; a new file is written atomically (see the module docstring).
        """
        return self._put(self.root, data, fmt, width, height)

    def save_map(self, anomaly_map: np.ndarray) -> StoredImage:
        """Store a heat map (``Detections.anomaly_map``) as a grayscale PNG of at most 256 px a side, under ``maps/``.

        ``relpath`` of the result is relative to :attr:`maps_root`. ValueError for an invalid map.
        """
        from .heatmaps import encode_map

        data, w, h = encode_map(anomaly_map)
        return self._put(self.maps_root, data, "png", w, h)

    def open_map_path(self, sha256: str) -> Path:
        """The file of heat map ``sha256``: validated like :meth:`open_path`; FileNotFoundError when gone."""
        return self._open(self.maps_root, sha256, "png", "heat map")

    def _put(self, root: Path, data: bytes, fmt: str, width: int, height: int) -> StoredImage:
        sha = hashlib.sha256(data).hexdigest()
        rel = relpath_for(sha, fmt)
        stored = StoredImage(sha, rel, len(data), int(width), int(height), fmt)
        path = root / rel
        try:
            if path.stat().st_size == len(data):
                return stored
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="." + fmt, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if self._used_estimate is not None:
            self._used_estimate += len(data)
        self.bytes_since_check += len(data)
        return stored

    def open_path(self, sha256: str, fmt: str | None = None) -> Path:
        """The file of image ``sha256`` (format ``fmt``, default the store's).

        ``sha256`` must be exactly 64 hex characters, so no input can name a
        path outside the store (``../``, absolute paths and encoded variants are
        refused with ValueError). Raises FileNotFoundError if the file is gone.
        """
        return self._open(self.root, sha256, fmt or self.fmt, "image")

    @staticmethod
    def _open(root: Path, sha256: str, fmt: str, what: str) -> Path:
        path = root / relpath_for(sha256, fmt)
        # defence in depth: the validated name cannot escape root, check anyway
        if os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) != os.path.abspath(root):
            raise ValueError(f"{what} path escapes the store: {sha256!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{what} {sha256.lower()}.{fmt} is not in {root} (deleted by the disk budget?)")
        return path

    # -- budget -------------------------------------------------------------
    def used_bytes(self, db: sqlite_utils.Database) -> int:
        """Bytes of the image files the database says are on disk (each file once)."""
        row = db.execute(
            "SELECT COALESCE(SUM(b), 0) FROM (SELECT MAX(bytes) AS b FROM images WHERE deleted_at IS NULL GROUP BY "
            "sha256, format)"
        ).fetchone()
        maps = db.execute(
            "SELECT COALESCE(SUM(b), 0) FROM (SELECT MAX(bytes) AS b FROM anomaly_maps WHERE deleted_at IS NULL GROUP "
            "BY sha256)"
        ).fetchone()
        return int(row[0]) + int(maps[0])

    def enforce_budget(self, db: sqlite_utils.Database, *, force: bool = False) -> int:
        """Delete oldest PASS images, then oldest others, until under budget; return bytes freed.

        Must run on the thread that writes ``db`` (the recorder), so no new row
        can refer to a file while it is being deleted. Cheap when under budget:
        the usage estimate is kept up to date by :meth:`save` and re-read from
        the database only when it says the budget is exceeded (or ``force``).
        """
        if not force and self._used_estimate is not None and self._used_estimate <= self.budget_bytes:
            return 0
        used = self.used_bytes(db)
        self._used_estimate = used
        if used <= self.budget_bytes:
            return 0
        target = int(self.budget_bytes * self.low_water)
        victims, freed = self._sweep(db, used - target, "disk budget")
        if victims:
            log.info(
                "disk budget %.0f MB: deleted %d image files, freed %.1f MB",
                self.budget_bytes / 2**20,
                victims,
                freed / 2**20,
            )
        return freed

    def _victims(self, db: sqlite_utils.Database, need: int, pass_only: bool = False) -> list[tuple[str, str, int]]:
        """Files to delete to free ``need`` bytes: oldest PASS first, then the oldest others."""
        # One entry per file: a file is as precious as the most precious row using it,
        # and as old as its newest row. Its heat maps go with it (``with_maps``: an estimate,
        # since a map file shared with a part that stays is not freed).
        cur = db.execute(
            """
            SELECT i.sha256, i.format, MAX(i.bytes),
                   MAX(CASE WHEN p.outcome = 'PASS' THEN 0 ELSE 1 END) AS precious,
                   MAX(i.id) AS newest,
                   COALESCE(SUM((SELECT SUM(m.bytes) FROM anomaly_maps m WHERE m.image_id = i.id AND m.deleted_at IS
                   NULL)), 0)
            FROM images i JOIN inspections p ON p.part_id = i.part_id
            WHERE i.deleted_at IS NULL
            GROUP BY i.sha256, i.format
            ORDER BY precious, newest
            """
        )
        victims: list[tuple[str, str, int]] = []
        freeing = 0
        skip = set(self.unmarked)
        for sha, fmt, nbytes, precious, _newest, with_maps in cur:
            if freeing >= need or (pass_only and precious):
                break
            if (sha, fmt) in skip:
                continue
            victims.append((sha, fmt, int(nbytes)))
            freeing += int(nbytes) + int(with_maps)
        cur.close()
        return victims

    def _sweep(self, db: sqlite_utils.Database, need: int, reason: str) -> tuple[int, int]:
        """Mark rows deleted (one transaction), then unlink their files; (files, bytes freed)."""
        victims = self._victims(db, need)
        if not victims and not self.unmarked:
            return 0, 0
        now = time.time()
        from .db import write_transaction

        marks = [(now, reason, sha, fmt) for sha, fmt, _ in victims] + [
            (now, reason + " (unlinked earlier)", sha, fmt) for sha, fmt in self.unmarked
        ]
        with write_transaction(db):
            db.conn.executemany(
                "UPDATE images SET deleted_at = ?, deleted_reason = ? WHERE sha256 = ? AND format = ? AND deleted_at "
                "IS NULL",
                marks,
            )
            map_files = self._delete_maps_of_deleted_images(db, now, reason)
        self.unmarked = []
        freed = self._unlink_maps(map_files)
        for sha, fmt, nbytes in victims:
            try:
                os.unlink(self.root / relpath_for(sha, fmt))
                freed += nbytes
            except FileNotFoundError:
                log.warning("image %s.%s was already missing from %s", sha, fmt, self.root)
        self._used_estimate = self.used_bytes(db)  # exact: shared map files make ``freeing`` an estimate
        return len(victims), freed

    # -- free space ---------------------------------------------------------
    def disk_space(self) -> tuple[int, int]:
        """(free bytes for an unprivileged writer, total bytes) of the disk holding ``root`` (``os.statvfs``)."""
        p = self.root
        while not p.exists() and p != p.parent:
            p = p.parent
        st = os.statvfs(p)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    @property
    def watermark(self) -> bool:
        """True when a free-space floor is configured."""
        return self.min_free_bytes > 0 or self.min_free_percent > 0

    def free_floor(self, total: int) -> int:
        """The free-space floor in bytes for a disk of ``total`` bytes (0 = no watermark)."""
        floors = [f for f in (self.min_free_bytes, int(total * self.min_free_percent / 100)) if f > 0]
        return min(floors) if floors else 0

    def enforce_free_space(self, db: sqlite_utils.Database) -> tuple[bool, int, int]:
        """Delete images while the images disk is below its free-space floor.

        Returns (short, free bytes after, floor): ``short`` is True when free space is
        still below the floor after the sweep (nothing left to delete, or the deletions
        could not be recorded). Must run on the thread that writes ``db``.
        """
        self.bytes_since_check = 0
        free, total = self.disk_space()
        floor = self.last_floor = self.free_floor(total)
        if floor <= 0 or (free >= floor and not self.unmarked):
            return False, free, floor
        target = int(floor * self.free_target_factor)
        if free < target:  # the WAL grows up to ~4 MB between checkpoints: give that back first (loses nothing)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except Exception as exc:  # sqlite3.Error: a reader holds it, the disk is full
                log.debug("WAL checkpoint before the free-space sweep failed: %s", exc)
            free_wal = self.disk_space()[0]
            if free_wal >= target and not self.unmarked:
                log.warning(
                    "free space on %s was %.1f MB < floor %.1f MB: WAL checkpointed, free now %.1f MB; "
                    "no image deleted",
                    self.root,
                    free / 2**20,
                    floor / 2**20,
                    free_wal / 2**20,
                )
                return False, free_wal, floor
            free = free_wal
        need = max(0, target - free)
        try:
            files, freed = self._sweep(db, need, "free space")
        except Exception as exc:  # sqlite3.Error: the database cannot write (the disk is full?)
            files, freed = self._emergency_unlink(db, need), 0
            free_after = self.disk_space()[0]
            log.error(
                "free space %.1f MB < floor %.1f MB on %s and the database cannot record deletions (%s): unlinked %d "
                "PASS "
                "image files (rows marked later), free now %.1f MB",
                free / 2**20,
                floor / 2**20,
                self.root,
                exc,
                files,
                free_after / 2**20,
            )
            return free_after < floor, free_after, floor
        free_after = self.disk_space()[0]
        if files or free < floor:
            log.warning(
                "free-space sweep on %s: free %.1f MB < floor %.1f MB; deleted %d image files (oldest PASS first, %.1f "
                "MB); free now %.1f MB%s",
                self.root,
                free / 2**20,
                floor / 2**20,
                files,
                freed / 2**20,
                free_after / 2**20,
                "" if free_after >= floor else " (still short: nothing more to delete)",
            )
        return free_after < floor, free_after, floor

    def _emergency_unlink(self, db: sqlite_utils.Database, need: int) -> int:
        """Unlink the oldest PASS files without marking their rows (the database cannot write); remember them."""
        try:
            victims = self._victims(db, need, pass_only=True)
        except Exception as exc:
            log.error("free space: cannot even read which images to delete: %s", exc)
            return 0
        n = 0
        for sha, fmt, _ in victims:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / relpath_for(sha, fmt))
                n += 1
            self.unmarked.append((sha, fmt))
        return n

    def _delete_maps_of_deleted_images(
        self, db: sqlite_utils.Database, now: float, reason: str
    ) -> list[tuple[str, int]]:
        """Inside the caller's write transaction: mark the heat maps of deleted images deleted.

        Returns (sha256, bytes) of the map files no live row uses any more (to unlink after COMMIT).
        """
        cur = db.conn.execute(
            "SELECT DISTINCT m.sha256, m.bytes FROM anomaly_maps m JOIN images i ON i.id = m.image_id "
            "WHERE m.deleted_at IS NULL AND i.deleted_at IS NOT NULL"
        )
        touched = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
        if not touched:
            return []
        db.conn.execute(
            "UPDATE anomaly_maps SET deleted_at = ?, deleted_reason = ? WHERE deleted_at IS NULL "
            "AND image_id IN (SELECT id FROM images WHERE deleted_at IS NOT NULL)",
            [now, reason],
        )
        return [
            (sha, n)
            for sha, n in dict(touched).items()
            if db.conn.execute(
                "SELECT 1 FROM anomaly_maps WHERE sha256 = ? AND deleted_at IS NULL LIMIT 1", [sha]
            ).fetchone()
            is None
        ]

    def _unlink_maps(self, files: list[tuple[str, int]]) -> int:
        freed = 0
        for sha, nbytes in files:
            try:
                os.unlink(self.maps_root / relpath_for(sha, "png"))
                freed += nbytes
            except FileNotFoundError:
                log.warning("heat map %s.png was already missing from %s", sha, self.maps_root)
        return freed
