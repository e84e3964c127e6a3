"""Station side of central labels: QA label changes -> a label outbox -> S3 (image) + JetStream (labels).

Every QA operation on a station (confirm, move, reclassify, delete, add, mark good: :mod:`labeling.labels`)
appends a review row, so the review id is a cursor over label changes. :meth:`LabelFeed.collect`
(called by the uplink's thread, never the line) reads the reviews after the cursor from the
station database (its own connection), and queues, per changed image, the image's whole current
label set at that revision (:class:`~station.plant.wire.LabelMsg`) together with the image file
in a SQLite outbox of its own (``<plant.outbox_path>`` with ``.labels`` before the suffix; the
result outbox's sequence stays gap-free); then it moves the cursor (a small JSON file beside
it). A crash between the two queues the same revision again, which the message id drops.

:meth:`LabelFeed.send` puts each image to S3 under its content hash (``images/<sha256>.<fmt>``,
skipped when already there), publishes the labels on ``<prefix>.labels.<station>`` with
``Nats-Msg-Id: <station>:label-<revision>``, and deletes an entry only after JetStream's stored ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from station import serialize

from ..store.images import ImageStore
from ..store.outbox import Outbox
from . import wire

log = logging.getLogger(__name__)


def labels_outbox_path(outbox_path: Path) -> Path:
    """The label outbox beside the result outbox: ``plant_outbox.db`` -> ``plant_outbox.labels.db``."""
    return outbox_path.with_name(f"{outbox_path.stem}.labels{outbox_path.suffix or '.db'}")


class LabelFeed:
    """Station database reviews -> label outbox -> plant; used from the uplink's thread only."""

    def __init__(
        self,
        *,
        station: str,
        prefix: str,
        db_path: Path,
        images: ImageStore,
        outbox_path: Path,
        outbox_max: int,
        batch: int = 64,
        poll_s: float = 2.0,
    ):
        self.station = station
        self.subject = wire.labels_subject(prefix, station)
        self.db_path = Path(db_path)
        self.images = images
        self.batch = batch
        self.poll_s = poll_s
        self.outbox = Outbox(outbox_path, outbox_max, setting="plant.outbox_path (labels beside it)")
        self._cursor_path = outbox_path.with_suffix(".cursor.json")
        self.cursor = self._read_cursor()
        self._db: Any = None
        self._due = 0.0
        self.queued = 0  # label changes put into the outbox
        self.published = 0  # label changes JetStream stored
        self.missing_images = 0  # changes skipped: the image file is gone (disk budget)
        self.errors = 0  # polls that failed (retried)

    def _read_cursor(self) -> int:
        try:
            return int(json.loads(self._cursor_path.read_text())["review_id"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            log.error("label cursor %s unreadable (%s): sending every label change again", self._cursor_path, exc)
            return 0

    def _write_cursor(self, review_id: int) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(serialize.dumps({"review_id": review_id}))
        os.replace(tmp, self._cursor_path)
        self.cursor = review_id

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def collect(self, limit: int = 500) -> int:
        """Queue the label changes since the cursor (at most every ``poll_s``); how many images were queued.

        A failure (the station database busy, an image row gone) is logged and counted, the cursor
        stays, and the next poll tries again: the uplink's results never wait on the labels.
        """
        if time.monotonic() < self._due:
            return 0
        self._due = time.monotonic() + self.poll_s
        try:
            return self._collect(limit)
        except (sqlite3.Error, LookupError, OSError) as exc:
            self.errors += 1
            log.warning("label changes not queued yet (retried in %.1f s): %s", self.poll_s, exc)
            return 0

    def _collect(self, limit: int) -> int:
        from labeling.labels import current_labels, image_info

        from ..store import labels as label_rows
        from ..store.db import open_db

        if self._db is None:
            if not self.db_path.exists():
                return 0
            self._db = open_db(self.db_path, synchronous="NORMAL", migrate=False)
        reviews = label_rows.reviews_after(self._db, self.cursor, limit)
        if not reviews:
            return 0
        latest: dict[int, tuple[int, int, str, str, float]] = {}
        for r in reviews:
            latest[r[1]] = r  # one message per image: its labels as of the newest review
        rows = []
        for review_id, image_id, _verdict, by, at in sorted(latest.values()):
            img = image_info(self._db, image_id)
            try:
                body = self.images.open_path(img.sha256, img.format).read_bytes()
            except FileNotFoundError:
                self.missing_images += 1
                log.warning("label change %d of image %d not sent: its file is gone", review_id, image_id)
                continue
            labs = tuple((lab.class_name, lab.x1, lab.y1, lab.x2, lab.y2) for lab in current_labels(self._db, image_id))
            msg = wire.LabelMsg(
                self.station,
                review_id,
                image_id,
                img.part_id,
                img.camera_id,
                wire.stored_image_key(img.sha256, img.format),
                img.sha256,
                img.width,
                img.height,
                "labeled" if labs else "good",
                labs,
                by,
                at,
            )
            rows.append((self.subject, wire.pack(json.loads(msg.to_json()), [body]), 1, False, time.time()))
        self.outbox.append(rows)
        self._write_cursor(max(r[0] for r in reviews))
        self.queued += len(rows)
        return len(rows)

    async def send(self, js: Any, s3: Any, bucket: str) -> int:
        """Send the oldest queued changes; how many JetStream stored. Raises on a NATS or S3 failure (retried later)."""
        entries = self.outbox.after(0, self.batch)
        if not entries:
            return 0
        msgs, bad = [], []
        for e in entries:
            try:
                meta, images = wire.unpack(e.payload)
                msg = wire.LabelMsg.from_json(serialize.dumps(meta).encode())
            except ValueError as exc:  # a damaged entry must not block the ones behind it
                log.error("label outbox entry %d is unreadable, dropped: %s", e.seq, exc)
                bad.append(e.seq)
                continue
            await asyncio.to_thread(self._upload, s3, bucket, msg.image_key, images[0] if images else b"")
            msgs.append((e.seq, msg))
        self.outbox.delete(bad)
        ids = [wire.label_msg_id(m.station, m.revision) for _, m in msgs]
        n, failed = await wire.publish_acked(js, self.subject, msgs, ids, self.outbox)
        self.published += n
        if failed is not None:
            raise failed
        return n

    @staticmethod
    def _upload(s3: Any, bucket: str, key: str, body: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            s3.head_object(Bucket=bucket, Key=key)  # content-addressed: there already means the same bytes
            return
        except ClientError:
            pass
        fmt = key.rsplit(".", 1)[-1]
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=f"image/{'jpeg' if fmt == 'jpg' else fmt}")

    def close(self) -> None:
        self.outbox.close()
        if self._db is not None:
            self._db.close()


def label_feed(cfg: Any, images: ImageStore) -> LabelFeed:
    """The label feed of a station (its ``StationConfig``): its database, its image store, ``plant.outbox_path``."""
    p = cfg.plant
    return LabelFeed(
        station=cfg.name,
        prefix=p.subject_prefix,
        db_path=cfg.store.db_path,
        images=images,
        outbox_path=labels_outbox_path(p.outbox_path),
        outbox_max=p.outbox_max,
        batch=min(p.batch, 256),
    )
