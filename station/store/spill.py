"""The spill file: records the database could not take, kept on another path until it can.

One JSON object per line, appended and fsynced per batch (the folder too when the
file is created), so a crash or a power cut loses at most the batch being
written; a torn last line is skipped (and counted) when the file is read, and
the next append starts on a fresh line. Nothing is ever rewritten in place: the
file is removed only after every record in it is committed to the database.
Replaying is idempotent because part ids are unique: a record whose part is
already in the database (a crash between COMMIT and the removal) is skipped.

The record format (``v`` 1) is what :mod:`station.store.part_rows` builds: the
inspection row, its defect rows, and the stored image files with their heat
maps; ``run`` names the recorder run that spilled it, so a running recorder
counts only its own records when it replays the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..serialize import dumps

log = logging.getLogger(__name__)


class SpillFile:
    """An append-only JSON-lines file at ``path``."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append ``records`` and fsync; returns how many. Raises OSError (disk full, read-only, ...)."""
        lines = [dumps(r) + "\n" for r in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            prefix = ""
            if size:
                with open(self.path, "rb") as f:  # a torn last line (crash mid-append) must not swallow the next record
                    f.seek(size - 1)
                    prefix = "" if f.read(1) == b"\n" else "\n"
            data = (prefix + "".join(lines)).encode()
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            # leave no half batch: cut the file back to where it was (best effort)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.ftruncate(fd, size)
            raise
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.path.parent)
        return len(lines)

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """(records, unreadable lines); ([], 0) when there is no file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        out: list[dict[str, Any]] = []
        bad = 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict) and rec.get("v") == 1:
                out.append(rec)
            else:
                bad += 1
        return out, bad

    def count(self) -> int:
        """Lines in the file (0 when there is none)."""
        try:
            with open(self.path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def remove(self) -> None:
        """Delete the file (after its records are committed)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        _fsync_dir(self.path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
