"""Station side of the plant tier: bus -> SQLite outbox -> S3 (images) + JetStream (results).

One thread, with its own asyncio loop (nats-py is asyncio), does everything:

1. drains its bounded bus subscription (a full queue drops and counts; the line
   never waits), encodes each part's frames as JPEG and appends the result to
   the outbox (:class:`station.store.outbox.Outbox`, its own file,
   ``plant.outbox_path``) in one transaction;
2. while the plant is reachable, takes the oldest ``batch`` entries, uploads
   their images to S3 under their content hash (a retry writes the same key),
   publishes each result with ``Nats-Msg-Id: <station>:<seq>`` and waits for
   JetStream's stored acknowledgements (PubAck: the message is in the
   file-backed stream); only acknowledged entries are deleted, so a failure
   anywhere resends from the oldest entry later;
3. when the plant is unreachable, keeps storing: the outbox grows up to
   ``outbox_max`` (warning at ``alarm_fill``), then the overflow policy drops
   the oldest or the newest results, counted (``dropped``) and alarmed; on
   reconnect it drains oldest first;
4. with a :class:`~station.plant.labels_up.LabelFeed`, also queues and sends the station's QA
   label changes (central labels), from an outbox of their own.

Nothing here is on the hot path, and a station without ``plant:`` never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import cv2

from station import serialize

from ..alarms import ReportFn
from ..bus import Subscription
from ..config.plant import PlantLinkConfig
from ..contracts import Outcome, PartResult
from ..plc.link import Backoff
from ..publish.sender import OutboxSender
from ..store.outbox import Outbox
from . import wire
from .labels_up import LabelFeed

log = logging.getLogger(__name__)


def result_meta(r: PartResult, station: str, cfg: PlantLinkConfig, image_keys: list[str]) -> dict[str, Any]:
    """The message fields of a part (without ``seq``: the outbox gives it)."""
    v = r.verdict
    latency = (
        (v.t_decided_ns - v.t_trigger_ns) / 1e6
        if v.t_decided_ns and v.t_trigger_ns
        else float(sum(v.timings_ms.values()))
    )
    return {
        "station": station,
        "line": cfg.line,
        "product": cfg.product,
        "t": r.trigger.t_trigger_wall or time.time(),
        "outcome": str(v.outcome),
        "part_id": int(v.part_id),
        "model_id": v.model_id,
        "latency_ms": round(latency, 3),
        "defects": [d.class_name for d in v.defects],
        "images": image_keys,
    }


class PlantUplink(OutboxSender):
    """Bus subscriber -> outbox -> plant (S3 + JetStream)."""

    component = "plant-link"

    def __init__(
        self,
        cfg: PlantLinkConfig,
        station_name: str,
        sub: Subscription,
        *,
        report: ReportFn | None = None,
        status: Callable[[], dict[str, Any]] = dict,
        status_s: float = 5.0,
        labels: LabelFeed | None = None,
    ):
        super().__init__("plant-uplink", sub, Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s), report, status)
        self.cfg = cfg
        self.labels = labels  # QA label changes of the station database (central labels), or None
        self.status_s = status_s
        self._status_kv: Any = None
        self._status_due = 0.0
        self.station = station_name
        self.subject = wire.results_subject(cfg.subject_prefix, station_name)
        self._nc: Any = None
        self._js: Any = None
        self._s3: Any = None
        self._last_error: str | None = None
        self._alarm_state = "ok"
        self.uploaded = 0  # images put to S3; ``published``: results JetStream stored (acknowledged)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Open the outbox (entries of an earlier run are sent first) and start the thread."""
        outbox = Outbox(
            self.cfg.outbox_path, self.cfg.outbox_max, policy=self.cfg.overflow, setting="plant.outbox_path"
        )
        self._open_outbox(outbox, "results")
        self._start_thread(self._run)

    def stop(self, flush_s: float = 2.0) -> None:
        """Send what is pending (up to ``flush_s`` while connected), then stop; the rest stays in the outbox."""
        self._stop_thread(
            10,
            drain_s=flush_s,
            busy=lambda: self._connected and (self.sub.pending or self.outbox_pending or self._labels_pending),
        )

    @property
    def _labels_pending(self) -> int:
        return self.labels.pending if self.labels is not None else 0

    @property
    def dropped(self) -> int:
        """Results lost: the bus queue was full, or the outbox overflowed."""
        return self.sub.dropped + self.outbox_dropped

    def health(self) -> dict[str, object]:
        """Connection state and counts."""
        return {
            "state": self._alarm_state if self._alarm_state != "ok" else ("ok" if self._connected else "warning"),
            "message": f"{self.cfg.nats_url} "
            f"{'connected' if self._connected else f'not connected: storing ({self._last_error})'}",
            "published": self.published,
            "uploaded": self.uploaded,
            "outbox": self.outbox_pending,
            "outbox_dropped": self.outbox_dropped,
            "queue_dropped": self.sub.dropped,
            **(
                {"labels_outbox": self.labels.pending, "labels_published": self.labels.published}
                if self.labels is not None
                else {}
            ),
        }

    # -- the thread ---------------------------------------------------------
    def _run(self) -> None:
        assert self._outbox is not None
        try:
            asyncio.run(self._main())
        finally:
            self._outbox.close()
            if self.labels is not None:
                self.labels.close()

    async def _main(self) -> None:
        while not self._stop.is_set():
            stored = self._store(self._drain())
            if self.labels is not None:
                stored += self.labels.collect()
            if not self._connected and self._backoff.due():
                await self._connect()
            sent = 0
            if self._connected and (self.outbox_pending or (self.labels is not None and self.labels.pending)):
                try:
                    sent = await self._send_batch() if self.outbox_pending else 0
                    if self.labels is not None:
                        sent += await self.labels.send(self._js, self._s3, self.cfg.s3_bucket)
                except Exception as exc:  # noqa: BLE001 - any failure of NATS or S3 means "offline": keep storing, retry
                    await self._offline(exc)
            if self._connected and time.monotonic() >= self._status_due:
                await self._put_status()
            if not stored and not sent:
                await asyncio.sleep(0.02)
        self._store(self._drain())
        await self._close()

    def _drain(self) -> list[PartResult]:
        events: list[PartResult] = []
        try:
            while len(events) < 1000:
                ev = self.sub.queue.get_nowait()
                if isinstance(ev, PartResult):
                    events.append(ev)
        except queue.Empty:
            pass
        return events

    def _store(self, results: list[PartResult]) -> int:
        if not results:
            return 0
        rows = []
        now = time.time()
        for r in results:
            try:
                images = self._jpegs(r)
                meta = result_meta(r, self.station, self.cfg, [wire.image_key(b) for b in images])
                rows.append((self.subject, wire.pack(meta, images), 1, False, now))
            except (TypeError, ValueError, cv2.error) as exc:
                self.encode_errors += 1
                log.error("cannot encode part %s for the plant: %s", r.verdict.part_id, exc)
        assert self._outbox is not None
        before = self._outbox.dropped
        self._outbox.append(rows)
        self._check_fill(self._outbox.dropped - before)
        return len(rows)

    def _jpegs(self, r: PartResult) -> list[bytes]:
        if self.cfg.images == "none" or (self.cfg.images == "rejects" and r.verdict.outcome == Outcome.PASS):
            return []
        out = []
        for f in r.frames:
            ok, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if not ok:
                raise ValueError(f"JPEG encoding of camera {f.camera_id} failed")
            out.append(buf.tobytes())
        return out

    def _check_fill(self, newly_dropped: int) -> None:
        assert self._outbox is not None
        n, cap = len(self._outbox), self.cfg.outbox_max
        if newly_dropped:
            self._emit(
                "alarm",
                f"plant outbox full ({cap}): {self._outbox.dropped} results dropped ({self.cfg.overflow}); the plant "
                "has been unreachable too long",
            )
        elif n >= self.cfg.alarm_fill * cap:
            if self._alarm_state == "ok":
                self._emit("warning", f"plant outbox {n}/{cap} results: the plant is unreachable ({self._last_error})")
        elif self._alarm_state != "ok" and n < self.cfg.alarm_fill * cap / 2:
            self._emit("ok", f"plant outbox drained to {n}")

    def _emit(self, state: str, message: str) -> None:
        self._alarm_state = state
        log.log(logging.INFO if state == "ok" else logging.WARNING, "%s", message)
        if self._report is not None:
            self._report(self.component, state, message)

    # -- the plant ----------------------------------------------------------
    async def _connect(self) -> None:
        import nats

        try:
            # no client-side reconnect: a lost connection is "offline", and this loop retries with its backoff
            conn = nats.connect(
                self.cfg.nats_url,
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                name=f"station-{self.station}",
                error_cb=self._nats_error,
            )
            self._nc = await asyncio.wait_for(conn, 5)
            self._js = self._nc.jetstream(timeout=5)
            if self._s3 is None:
                self._s3 = wire.s3_client(self.cfg.s3_endpoint, self.cfg.s3_access_key, self.cfg.s3_secret_key)
            await asyncio.to_thread(wire.ensure_bucket, self._s3, self.cfg.s3_bucket)
            self._status_kv = await wire.status_bucket(self._js, self.cfg.subject_prefix)
            self._status_due = 0.0
        except Exception as exc:  # noqa: BLE001 - unreachable plant: stay offline, retry after the backoff
            await self._offline(exc)
            return
        self._connected = True
        self._backoff.succeeded()
        log.info(
            "plant link up: %s, %s (%d results waiting)", self.cfg.nats_url, self.cfg.s3_endpoint, self.outbox_pending
        )

    async def _nats_error(self, exc: Exception) -> None:
        self._last_error = f"NATS: {exc}"

    async def _offline(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self._connected:
            log.warning("plant link down (%s): storing results in %s", self._last_error, self.cfg.outbox_path)
        self._connected = False
        self._backoff.failed()
        await self._close()
        self._check_fill(0)

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except (TimeoutError, OSError) as exc:
                log.debug("closing the NATS connection: %s", exc)

    async def _send_batch(self) -> int:
        assert self._outbox is not None
        entries = self._outbox.after(0, self.cfg.batch)
        msgs, bad = [], []
        for e in entries:
            try:
                meta, images = wire.unpack(e.payload)
                msg = wire.ResultMsg.from_dict({**meta, "seq": e.seq})
            except (ValueError, KeyError) as exc:  # a damaged entry must not block the ones behind it
                self.encode_errors += 1
                log.error("plant outbox entry %d is unreadable, dropped: %s", e.seq, exc)
                bad.append(e.seq)
                continue
            if images:
                await asyncio.to_thread(self._upload, images)
            msgs.append((e.seq, msg))
        self._outbox.delete(bad)
        ids = [wire.msg_id(self.station, seq) for seq, _ in msgs]
        n, failed = await wire.publish_acked(self._js, self.subject, msgs, ids, self._outbox)
        self.published += n
        self._check_fill(0)
        if failed is not None:
            raise failed
        return n

    async def _put_status(self) -> None:
        """The station's state for the plant dashboard (KV ``<prefix>_status``, key: the station)."""
        self._status_due = time.monotonic() + self.status_s
        d = {
            "station": self.station,
            "line": self.cfg.line,
            "group": self.cfg.group,
            "t": time.time(),
            "outbox": self.outbox_pending,
            "dropped": self.dropped,
            "published": self.published,
            **self._status_fn(),
        }
        try:
            await self._status_kv.put(self.station, serialize.dumps(d).encode())
        except Exception as exc:  # noqa: BLE001 - any NATS failure: offline, retried with the results
            await self._offline(exc)

    def _upload(self, images: list[bytes]) -> None:
        for img in images:
            self._s3.put_object(Bucket=self.cfg.s3_bucket, Key=wire.image_key(img), Body=img, ContentType="image/jpeg")
            self.uploaded += 1
