"""USB cameras, RTSP/HTTP streams and video files through OpenCV's ``VideoCapture``.

The device life (lost, backoff, reconnect, configuration re-applied) is the
shared :class:`~station.acquire.lifecycle.Lifecycle`; this module only knows
how to open, configure, read and release a ``VideoCapture``.

Two ways of reading:

- **per grab** (a video file with ``playback: per_grab``): each grab reads the
  next frame of the file, so a recorded line replays one frame per part.
  At the end of the file: ``at_end: loop`` starts again, ``at_end: lost``
  treats the camera as lost, and the lifecycle reopens the file with backoff
  (a file being replaced or re-recorded is picked up again).
- **stream** (USB index, URL, or a file with ``playback: realtime``): a reader
  thread reads continuously (a file at its own frame rate) into a small
  buffer; a grab takes the first frame that arrived after its trigger, and a
  ``{type: camera}`` trigger takes every frame in order (each frame one part).
  A stream that stops delivering (read fails or stays silent for
  ``stream_timeout_ms``) is lost and reopened with backoff.

Frames are stamped with the host clock when read.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..config.camera import OpenCvCameraConfig
from ..contracts import Trigger
from .lifecycle import DeviceLost, GrabTimeout, LifecycleCamera, StatusFn

log = logging.getLogger(__name__)

_BACKENDS = {"any": cv2.CAP_ANY, "v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}


class _Reader:
    """Reads a capture continuously into a bounded buffer of ``(image, t_ns, seq)``."""

    def __init__(
        self,
        cap: Any,
        name: str,
        maxlen: int,
        pace_s: float | None,
        loop: bool,
        silent_s: float,
        on_lost: Callable[[str], None],
    ):
        self.cap = cap
        self.pace_s = pace_s
        self.loop = loop
        self.silent_s = silent_s
        self.on_lost = on_lost
        self.buf: collections.deque[tuple[np.ndarray, int, int]] = collections.deque()
        self.maxlen = maxlen
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.failed = ""
        self.seq = 0
        self.overruns = 0
        self.loops = 0
        self.t_last_ns = time.monotonic_ns()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            # a read blocks at most the stream timeout; the capture must not be released under it
            self.thread.join(timeout=self.silent_s + 2.0)

    def _fail(self, reason: str) -> None:
        with self.cond:
            self.failed = reason
            self.cond.notify_all()
        self.on_lost(reason)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self.stop.is_set():
            ok, img = self.cap.read()
            if not ok and self.loop and self.seq > 0:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self.loops += 1
                ok, img = self.cap.read()
            if self.stop.is_set():
                return
            if not ok or img is None:
                self._fail(
                    "stream stopped: no frame could be read" if self.seq else "stream opened but delivers no frames"
                )
                return
            t = time.monotonic_ns()
            with self.cond:
                self.seq += 1
                self.t_last_ns = t
                if len(self.buf) >= self.maxlen:
                    self.buf.popleft()
                    self.overruns += 1
                self.buf.append((img, t, self.seq))
                self.cond.notify_all()
            if self.pace_s is not None:
                next_t += self.pace_s
                delay = next_t - time.monotonic()
                if delay < -self.pace_s:  # fell behind: do not burst to catch up
                    next_t = time.monotonic()
                elif delay > 0 and self.stop.wait(delay):
                    return

    def take(self, after_ns: int | None, timeout_s: float) -> tuple[np.ndarray, int, int]:
        """The oldest buffered frame (``after_ns`` None) or the first one read at/after ``after_ns``."""
        end = time.monotonic() + timeout_s
        with self.cond:
            while True:
                if self.failed:
                    raise DeviceLost(self.failed)
                while self.buf and after_ns is not None and self.buf[0][1] < after_ns:
                    self.buf.popleft()  # read before this part's trigger: not its frame
                if self.buf:
                    return self.buf.popleft()
                left = end - time.monotonic()
                if left <= 0:
                    silent = (time.monotonic_ns() - self.t_last_ns) / 1e9
                    if silent >= self.silent_s:
                        raise DeviceLost(f"stream silent for {silent:.1f} s")
                    raise GrabTimeout(f"no frame within {timeout_s * 1000:.0f} ms")
                self.cond.wait(left)


class OpenCvCamera(LifecycleCamera):
    """A :class:`~station.acquire.base.CameraDriver` over ``cv2.VideoCapture``; see the module docstring."""

    def __init__(self, cfg: OpenCvCameraConfig, *, on_status: StatusFn | None = None, **_: object):
        super().__init__(cfg.id, cfg.reconnect, on_status)
        self.cfg = cfg
        self.per_grab = cfg.is_file and cfg.playback == "per_grab"
        self.self_triggered = not self.per_grab
        self._where = f"cameras[{cfg.id}]"
        self._cap: Any | None = None
        self._reader: _Reader | None = None
        self._pos = 0
        self.loops = 0
        self.applied: dict[str, Any] = {}

    @property
    def source(self) -> str:
        """What is opened, for messages."""
        c = self.cfg
        if c.file is not None:
            return f"file {c.file}"
        if c.url is not None:
            return f"url {c.url}"
        return f"device index {c.index}"

    # -- lifecycle hooks ----------------------------------------------------
    def connect(self) -> None:
        """Open the VideoCapture; DeviceLost naming the field when it cannot be opened."""
        c = self.cfg
        api = _BACKENDS[c.backend]
        if c.file is not None:
            if not c.file.is_file():
                raise DeviceLost(f"{self._where}.file: {c.file} not found (write the video there or fix the path)")
            cap = cv2.VideoCapture(str(c.file), api)
        else:
            ms = int(c.stream_timeout_ms)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            src: int | str = c.index if c.index is not None else str(c.url)
            cap = cv2.VideoCapture(src, api, params)
        if not cap.isOpened():
            cap.release()
            field = "file" if c.file is not None else "url" if c.url is not None else "index"
            raise DeviceLost(f"{self._where}.{field}: cannot open {self.source} (backend {c.backend})")
        self._cap = cap

    def configure(self) -> None:
        """Request size / rate / codec / exposure, read them back, and start the reader thread for streams."""
        cap = self._cap
        assert cap is not None
        c = self.cfg
        applied: dict[str, Any] = {}
        if c.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*c.fourcc))
        for prop, value, name in (
            (cv2.CAP_PROP_FRAME_WIDTH, c.width, "width"),
            (cv2.CAP_PROP_FRAME_HEIGHT, c.height, "height"),
            (cv2.CAP_PROP_FPS, None if c.is_file else c.fps, "fps"),
            (cv2.CAP_PROP_EXPOSURE, c.exposure, "exposure"),
        ):
            if value is not None and not c.is_file:
                cap.set(prop, float(value))
                got = cap.get(prop)
                applied[name] = got
                if abs(got - float(value)) > 1e-6:
                    log.warning("camera %s: requested %s=%s, the device gives %s", self.camera_id, name, value, got)
        applied["frame_size"] = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        file_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        applied["source_fps"] = file_fps
        self.applied = applied
        self._pos = 0
        if not self.per_grab:
            pace = None
            if c.is_file:
                fps = c.fps or file_fps or 25.0
                pace = 1.0 / fps
            self._reader = _Reader(
                cap,
                f"opencv-reader-{self.camera_id}",
                c.buffer_frames,
                pace,
                loop=c.is_file and c.at_end == "loop",
                silent_s=c.stream_timeout_ms / 1000,
                on_lost=self.lifecycle.lost,
            )
            self._reader.start()

    def disconnect(self) -> None:
        """Stop the reader thread and release the capture; never raises."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def is_removed(self) -> bool:
        """The reader thread saw the stream stop."""
        return self._cap is None or bool(self._reader is not None and self._reader.failed)

    # -- grabbing -----------------------------------------------------------
    def grab_raw(self, trigger: Trigger | None, timeout_s: float) -> tuple[np.ndarray, int, dict[str, Any]]:
        """The next file frame (per grab) or the first streamed frame after the trigger."""
        if self.per_grab:
            img, t, meta = self._read_file_frame()
        else:
            reader = self._reader
            if reader is None:
                raise DeviceLost(f"camera {self.camera_id}: not streaming")
            img, t, seq = reader.take(trigger.t_trigger_ns if trigger is not None else None, timeout_s)
            meta = {"source": self.source, "seq": seq, "overruns": reader.overruns, "loops": reader.loops}
        if self.cfg.grayscale and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif not self.cfg.grayscale and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return img, t, meta

    def _read_file_frame(self) -> tuple[np.ndarray, int, dict[str, Any]]:
        cap = self._cap
        if cap is None:
            raise DeviceLost(f"camera {self.camera_id}: file not open")
        t = time.monotonic_ns()
        ok, img = cap.read()
        if not ok or img is None:
            if self._pos == 0:
                raise DeviceLost(
                    f"{self._where}.file: no frame could be read from {self.cfg.file} (empty or not a video)"
                )
            if self.cfg.at_end == "lost":
                raise DeviceLost(f"video file {self.cfg.file} ended after {self._pos} frames (at_end: lost)")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._pos = 0
            self.loops += 1
            t = time.monotonic_ns()
            ok, img = cap.read()
            if not ok or img is None:
                raise DeviceLost(f"video file {self.cfg.file} cannot be read again from its start")
        index = self._pos
        self._pos += 1
        return img, t, {"source": self.source, "frame_index": index, "loops": self.loops}

    def health(self) -> dict[str, Any]:
        """Lifecycle health plus source, applied settings and stream overruns."""
        h = super().health()
        h.update(source=self.source, applied=dict(self.applied))
        if self._reader is not None:
            h.update(overruns=self._reader.overruns, loops=self._reader.loops)
        else:
            h.update(loops=self.loops)
        return h
