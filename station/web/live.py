"""The live side of the operator screen: the last image, the event stream, the rates.

- :class:`LiveImages` turns the first frame of ``station.last_result`` into a
  downscaled JPEG on demand, caches a few by part id, and encodes at most
  ``live_fps`` new images per second whatever the number of screens. The frame's
  heat map (``Detections.anomaly_map``), if any, is encoded with it as a grayscale PNG.
- :class:`RateMeter` gives parts/min over a rolling 60 s from counter samples.
- :class:`EventStream` is one Server-Sent Events client: its own bounded bus
  subscription (dropped events are counted, the hot path never waits),
  unsubscribed when the client goes away.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import cv2
import numpy as np
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..bus import BusEvent, Subscription
from ..contracts import Outcome, PartResult, StatusEvent
from ..serialize import dumps, event_to_dict, result_to_dict
from ..store.heatmaps import encode_map

if TYPE_CHECKING:
    from .state import WebState

log = logging.getLogger(__name__)

COUNTERS_EVERY_S = 0.5
COUNTERS_KEEPALIVE_S = 5.0
PING_EVERY_S = 15.0
POLL_S = 0.1


def safe_result_dict(r: PartResult) -> dict[str, Any]:
    """:func:`result_to_dict`, tolerant of frame meta that is not plain JSON (arrays)."""
    try:
        return result_to_dict(r)
    except (TypeError, ValueError):
        log.debug("frame meta of part %d is not JSON-able; sent without it", r.verdict.part_id, exc_info=True)
        r2 = PartResult(r.trigger, r.verdict, (), r.detections, r.reject_fire_at_ns)
        d = result_to_dict(r2)
        d["frames"] = [
            {"camera_id": f.camera_id, "width": int(f.image.shape[1]), "height": int(f.image.shape[0])}
            for f in r.frames
        ]
        return d


# -- live image ---------------------------------------------------------------
@dataclass(frozen=True)
class LiveImage:
    """One encoded live image."""

    part_id: int
    camera_id: str
    jpeg: bytes
    frame_width: int
    frame_height: int
    width: int
    height: int
    heatmap_png: bytes | None = None  # the frame's heat map (grayscale PNG), None when the inspector gave none


def live_heatmap(r: PartResult) -> bytes | None:
    """The first frame's heat map as a grayscale PNG, or None (no map, or an invalid one: logged)."""
    det = r.detections[0] if r.detections else None
    if det is None or det.anomaly_map is None:
        return None
    try:
        return encode_map(det.anomaly_map)[0]
    except ValueError as exc:
        log.warning("heat map of part %d not shown: %s", r.verdict.part_id, exc)
        return None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An 8-bit image for display (deeper images are scaled by their maximum)."""
    if image.dtype == np.uint8:
        return image
    img = image.astype(np.float32)
    top = float(img.max()) if img.size else 0.0
    out: np.ndarray = np.clip(img * (255.0 / top if top > 0 else 1.0), 0, 255).astype(np.uint8)
    return out


def encode_live(image: np.ndarray, max_width: int, quality: int) -> tuple[bytes, int, int]:
    """Downscale ``image`` to at most ``max_width`` wide and JPEG-encode it; returns (jpeg, width, height)."""
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = img.shape[:2]
    if w > max_width:
        nh = max(1, round(h * max_width / w))
        img = cv2.resize(img, (max_width, nh), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes(), int(img.shape[1]), int(img.shape[0])


class LiveImages:
    """Encode-on-demand cache of the last parts' images, rate limited to ``fps`` encodes per second."""

    def __init__(self, fps: float, max_width: int, quality: int, keep: int = 8):
        self.min_interval_s = 1.0 / fps
        self.max_width = max_width
        self.quality = quality
        self.keep = keep
        self.encoded = 0
        self._cache: collections.OrderedDict[int, LiveImage] = collections.OrderedDict()
        self._last_encode = -math.inf
        self._lock = threading.Lock()

    def cached(self, part_id: int) -> LiveImage | None:
        """The already encoded image of ``part_id``, or None (never encodes)."""
        with self._lock:
            return self._cache.get(part_id)

    def get(self, latest: PartResult | None, part_id: int | None = None, now: float | None = None) -> LiveImage | None:
        """The image of ``part_id`` if still available, else the newest one allowed by the rate limit.

        The caller compares ``LiveImage.part_id`` with what it asked for.
        None when no part with an image has been seen yet.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            if part_id is not None and part_id in self._cache:
                return self._cache[part_id]
            newest = next(reversed(self._cache.values()), None)
            if latest is None or not latest.frames:
                return newest
            pid = latest.verdict.part_id
            if pid in self._cache:
                return self._cache[pid]
            if newest is not None and now - self._last_encode < self.min_interval_s:
                return newest  # rate limit: the screen gets the newest already encoded image
            frame = latest.frames[0]
            jpeg, w, h = encode_live(frame.image, self.max_width, self.quality)
            img = LiveImage(
                pid,
                frame.camera_id,
                jpeg,
                int(frame.image.shape[1]),
                int(frame.image.shape[0]),
                w,
                h,
                live_heatmap(latest),
            )
            self._last_encode = now
            self.encoded += 1
            self._cache[pid] = img
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
            return img


# -- rates and counters -------------------------------------------------------
class RateMeter:
    """Rate of a growing total over a rolling window, from samples taken at most every 0.5 s."""

    def __init__(self, window_s: float = 60.0, min_step_s: float = 0.5):
        self.window_s = window_s
        self.min_step_s = min_step_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def sample(self, total: int, now: float | None = None) -> None:
        """Record the total now (ignored if the last sample is younger than ``min_step_s``)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._samples and now - self._samples[-1][0] < self.min_step_s:
                return
            self._samples.append((now, total))
            while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
                self._samples.popleft()

    def per_minute(self, total: int, now: float | None = None) -> float | None:
        """Events per minute over the window (None until 5 s of history exist: fewer parts give a jumpy rate)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = next(((t, n) for t, n in self._samples if t >= now - self.window_s), None)
        if old is None or now - old[0] < 5.0:
            return None
        return max(0.0, (total - old[1]) * 60.0 / (now - old[0]))


def counters_payload(state: WebState) -> dict[str, Any]:
    """The counters with yield, parts/min and the reject total, for the screen and the API."""
    st = state.station
    snap = st.counters.snapshot().as_dict()
    now = time.monotonic()
    state.rate.sample(int(snap["verdicts"]), now)
    verdicts = int(snap["verdicts"])
    out: dict[str, Any] = dict(snap)
    out["yield_pct"] = round(100.0 * snap["PASS"] / verdicts, 2) if verdicts else None
    ppm = state.rate.per_minute(verdicts, now)
    out["parts_per_min"] = None if ppm is None else round(ppm, 1)
    out["rejects"] = sum(int(snap[o]) for o in state.reject_outcomes())
    return out


def settled_reconcile(station: Any, tries: int = 4, gap_s: float = 0.025) -> list[str]:
    """Counter problems that persist over ``tries`` checks ``gap_s`` apart (empty if any check is clean).

    ``Station.reconcile()`` reads the counters and the in-flight counts at
    slightly different instants and has no term for a part still being
    grabbed, so on a running line single checks report problems that are
    gone a few ms later. A real broken invariant stays broken.
    """
    problems: list[str] = []
    for i in range(tries):
        problems = station.reconcile()
        if not problems:
            return []
        if i + 1 < tries:
            time.sleep(gap_s)
    return problems


def status_payload(state: WebState) -> dict[str, Any]:
    """Station state for the screen header: running, paused (by whom, why), model, alarms."""
    st = state.station
    health = st.health()
    paused = bool(health.get("paused"))
    pause = state.pause if paused else None
    return {
        "station": st.cfg.name,
        "running": bool(health.get("running")),
        "paused": paused,
        "pause": None if pause is None else {"by": pause.by, "reason": pause.reason, "t_wall": pause.t_wall},
        "model_id": health.get("model_id"),
        "config_hash": health.get("config_hash"),
        "trigger": st.cfg.trigger.type,
        "live_fps": state.cfg.live_fps,
        "anonymous_view": state.cfg.anonymous_view,
        "reject_outcomes": list(state.reject_outcomes()),
        "alarms": health.get("alarms", []),
    }


# -- Server-Sent Events -------------------------------------------------------
def sse(event: str, data: Any) -> bytes:
    """One SSE message."""
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


def select_events(batch: list[Any]) -> list[Any]:
    """What a screen needs from a burst: every status event, every non-PASS result, the newest result."""
    last_result = max((i for i, e in enumerate(batch) if isinstance(e, PartResult)), default=-1)
    return [
        e
        for i, e in enumerate(batch)
        if isinstance(e, StatusEvent)
        or (isinstance(e, PartResult) and (i == last_result or e.verdict.outcome != Outcome.PASS))
    ]


class EventStream(Response):
    """An ASGI response streaming one client's live events until it disconnects.

    Messages: ``hello`` (status, counters, last result) once, then ``result``
    (a PartResult as :func:`result_to_dict`), ``status`` (a StatusEvent) and
    ``counters`` (at most every 0.5 s, when they changed, and every 5 s anyway).
    The route reserves the client slot (:meth:`WebState.client_opened`); the
    stream releases it when it ends.
    """

    media_type = "text/event-stream"

    def __init__(self, state: WebState, poll_s: float = POLL_S, until_wall: float | None = None):
        """``until_wall``: end the stream at this UNIX time (the viewer's session expiry)."""
        super().__init__(headers={"cache-control": "no-store", "x-accel-buffering": "no"})
        self.state = state
        self.poll_s = poll_s
        self.until_wall = until_wall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        bus = state.station.bus
        sub = bus.subscribe(state.next_client_name(), maxsize=state.cfg.sse_queue)
        gone = anyio.Event()

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                with contextlib.suppress(OSError):  # client went away mid-write
                    await self._stream(send, sub, gone)
                tg.cancel_scope.cancel()
        finally:
            bus.unsubscribe(sub)
            state.client_closed(sub.dropped)
            log.debug("live client %s closed (%d events dropped)", sub.name, sub.dropped)

    async def _stream(self, send: Send, sub: Any, gone: anyio.Event) -> None:
        state = self.state
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def out(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        last = state.station.last_result
        counters = counters_payload(state)
        await out(b"retry: 2000\n\n")
        await out(
            sse(
                "hello",
                {
                    "status": status_payload(state),
                    "counters": counters,
                    "result": safe_result_dict(last) if last is not None else None,
                },
            )
        )
        t_counters = t_sent_counters = t_ping = time.monotonic()
        while not gone.is_set():
            if self.until_wall is not None and time.time() >= self.until_wall:
                # the session that opened the stream expired: end it cleanly; the browser reconnects and must log in
                # again
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            batch = _drain(sub)
            for ev in select_events(batch):
                if isinstance(ev, PartResult):
                    await out(sse("result", safe_result_dict(ev)))
                else:
                    await out(sse("status", event_to_dict(ev)))
            now = time.monotonic()
            if now - t_counters >= COUNTERS_EVERY_S:
                t_counters = now
                c = counters_payload(state)
                if c != counters or now - t_sent_counters >= COUNTERS_KEEPALIVE_S:
                    counters, t_sent_counters = c, now
                    await out(sse("counters", c))
            if now - t_ping >= PING_EVERY_S:
                t_ping = now
                await out(b": ping\n\n")
            with anyio.move_on_after(self.poll_s):
                await gone.wait()


def _drain(sub: Subscription, limit: int = 10000) -> list[BusEvent]:
    return sub.drain(limit)


__all__ = [
    "EventStream",
    "LiveImage",
    "LiveImages",
    "RateMeter",
    "counters_payload",
    "dumps",
    "encode_live",
    "safe_result_dict",
    "select_events",
    "sse",
    "status_payload",
]
