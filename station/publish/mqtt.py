"""MQTT publisher: every verdict and status change as JSON, QoS 1, store-and-forward.

Topics (``<p>`` = ``publish.mqtt.topic_prefix``, ``<n>`` = station name):

* ``<p>/<n>/result`` — one message per part, in decision order (not retained).
* ``<p>/<n>/status`` — on every status change (``event``: component, state,
  message) and after every (re)connect (``event`` null), with the station's
  state and active alarms (retained: a new subscriber sees the latest).
* ``<p>/<n>/online`` — ``online`` when connected, ``offline`` as the last
  will (broker-published if the station vanishes) and on a clean stop (retained).

One thread does everything: it drains its bus subscription into the SQLite
outbox (:mod:`station.store.outbox`), keeps up to ``max_inflight``
messages in flight in outbox order, deletes them on PUBACK and drives
paho's network loop itself. When the broker goes away the paho client is
discarded and a new one connects later (with backoff) and sends again
from the oldest unacknowledged message, so order is kept and nothing is
lost; a message whose PUBACK was lost is delivered twice (QoS 1 is
at-least-once: consumers dedupe on ``part_id``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..alarms import ReportFn, report_or_log
from ..bus import Subscription
from ..config import MqttConfig
from ..contracts import PartResult, StatusEvent
from ..plc.link import Backoff
from ..serialize import dumps, event_to_dict, result_to_dict
from ..store.outbox import Outbox
from .sender import OutboxSender

log = logging.getLogger(__name__)


def topics(cfg: MqttConfig, station_name: str) -> dict[str, str]:
    """The three topics of a station."""
    base = f"{cfg.topic_prefix}/{station_name}"
    return {"result": f"{base}/result", "status": f"{base}/status", "online": f"{base}/online"}


class MqttPublisher(OutboxSender):
    """Bus subscriber -> SQLite outbox -> broker."""

    component = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        station_name: str,
        sub: Subscription,
        *,
        report: ReportFn | None = None,
        status: Callable[[], dict[str, Any]] = dict,
    ):
        super().__init__("mqtt-publisher", sub, Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s), report, status)
        self.cfg = cfg
        self.station_name = station_name
        self.topics = topics(cfg, station_name)
        self._client_id = cfg.client_id or f"inspection-{station_name}"
        self._client: mqtt.Client | None = None
        self._conn_failed: str | None = None
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._dropped_reason: str | None = None
        self._snapshot_due = False
        self._acked: list[int] = []
        self._last_sent = 0
        self._flush = threading.Event()
        self.acked = 0
        self.connects = 0

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Open the outbox (unsent messages of an earlier run go first) and start the thread."""
        self._open_outbox(Outbox(self.cfg.outbox_path, self.cfg.outbox_max), "unsent messages")
        self._start_thread(self._run)

    def stop(self, flush_s: float = 2.0) -> None:
        """Send what is pending (up to ``flush_s`` while connected), say offline, disconnect."""
        self._flush.set()
        self._stop_thread(
            5, drain_s=flush_s, busy=lambda: self._connected and (self.sub.pending or self.outbox_pending)
        )

    def health(self) -> dict[str, object]:
        """Connection state and counts."""
        return {
            "state": "ok" if self._connected else "warning",
            "message": f"{self.cfg.host}:{self.cfg.port} "
            + ("connected" if self._connected else "not connected: storing"),
            "published": self.published,
            "acked": self.acked,
            "outbox_dropped": self.outbox_dropped,
        }

    # -- the thread ---------------------------------------------------------
    def _run(self) -> None:
        assert self._outbox is not None
        try:
            while not self._stop.is_set():
                self._store(self._drain(0.0 if self._connected else 0.05))
                if not self._connected and self._backoff.due():
                    self._connect()
                if self._snapshot_due:
                    self._snapshot_due = False
                    self._store([None])  # the current state, retained, after every (re)connect
                if self._connected:
                    self._send_window()
                    self._network(0.01)
                if self._acked:
                    self._outbox.delete(self._acked)
                    self._acked.clear()
            self._store(self._drain(0.0))
            self._goodbye()
        finally:
            if self._acked:
                self._outbox.delete(self._acked)
            self._outbox.close()

    def _drain(self, wait_s: float) -> list[Any]:
        try:
            first = self.sub.get(timeout=max(wait_s, 0.0))
        except queue.Empty:
            return []
        return [first, *self.sub.drain(999)]

    def _store(self, events: list[Any]) -> None:
        rows = []
        now = time.time()
        for ev in events:
            try:
                if isinstance(ev, PartResult):
                    rows.append((self.topics["result"], self._result_payload(ev), self.cfg.qos, False, now))
                elif isinstance(ev, StatusEvent) or ev is None:
                    rows.append((self.topics["status"], self._status_payload(ev), self.cfg.qos, True, now))
            except (TypeError, ValueError) as exc:
                self.encode_errors += 1
                log.error("cannot encode %s for MQTT: %s", type(ev).__name__, exc)
        if rows:
            assert self._outbox is not None
            before = self._outbox.dropped
            self._outbox.append(rows)
            if self._outbox.dropped != before:
                self._emit(
                    "warning", f"outbox full ({self.cfg.outbox_max}): {self._outbox.dropped} oldest messages dropped"
                )

    def _result_payload(self, r: PartResult) -> bytes:
        d = result_to_dict(r)
        if not self.cfg.include_frames:
            d.pop("frames", None)
        d["station"] = self.station_name
        d["reject_fire_at_ns"] = r.reject_fire_at_ns
        return dumps(d).encode()

    def _status_payload(self, ev: StatusEvent | None) -> bytes:
        d = {"station": self.station_name, "event": None if ev is None else event_to_dict(ev), **self._status_fn()}
        return dumps(d).encode()

    # -- broker -------------------------------------------------------------
    def _connect(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self.cfg.password)
        c.will_set(self.topics["online"], "offline", qos=1, retain=True)
        c.max_inflight_messages_set(self.cfg.max_inflight)
        c.connect_timeout = 2.0
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._conn_failed = None
        try:
            c.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            self._failed(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}")
            return
        self._client = c
        end = time.monotonic() + 3.0
        while not self._connected and self._conn_failed is None and time.monotonic() < end:
            if c.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if not self._connected:
            self._drop_client()
            self._failed(self._conn_failed or f"no CONNACK from {self.cfg.host}:{self.cfg.port}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._conn_failed = f"broker refused the connection: {reason_code}"
            return
        self._connected = True
        self.connects += 1
        self._backoff.succeeded()
        self._inflight.clear()
        self._dropped_reason = None
        self._last_sent = 0  # everything still in the outbox goes again, oldest first
        self._snapshot_due = True
        client.publish(self.topics["online"], "online", qos=1, retain=True)
        self._emit("ok", f"connected to {self.cfg.host}:{self.cfg.port}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._dropped_reason = f"lost {self.cfg.host}:{self.cfg.port} ({reason_code})"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # the 'online' message, or QoS 0 (counted as sent)
        self._acked.append(seq)
        self.acked += 1

    def _send_window(self) -> None:
        assert self._outbox is not None and self._client is not None
        room = self.cfg.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for m in self._outbox.after(self._last_sent, room):
            info = self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(f"publish failed: {mqtt.error_string(info.rc)}")
                return
            self._last_sent = m.seq
            self.published += 1
            if m.qos == 0:
                self._acked.append(m.seq)  # no acknowledge exists at QoS 0: handed to the socket is done
                self.acked += 1
            else:
                self._inflight[info.mid] = m.seq

    def _network(self, timeout: float) -> None:
        assert self._client is not None
        rc = self._client.loop(timeout=timeout)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._dropped_reason is not None:
            self._lost(
                self._dropped_reason or f"connection to {self.cfg.host}:{self.cfg.port} lost: {mqtt.error_string(rc)}"
            )

    def _lost(self, why: str) -> None:
        self._connected = False
        self._drop_client()
        self._failed(why)

    def _failed(self, why: str) -> None:
        self._connected = False
        self._inflight.clear()
        wait = self._backoff.failed()
        pending = len(self._outbox) if self._outbox is not None else 0
        self._emit("warning", f"{why}; storing ({pending} waiting), retrying in {wait:.1f} s")

    def _drop_client(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            c.on_disconnect = None
            with contextlib.suppress(OSError, ValueError):
                c.disconnect()
            sock = c.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _goodbye(self) -> None:
        """Clean stop: retained 'offline', then disconnect (the will is not sent on a clean disconnect)."""
        c = self._client
        if c is None or not self._connected:
            return
        info = c.publish(self.topics["online"], "offline", qos=1, retain=True)
        end = time.monotonic() + 1.0
        while not info.is_published() and time.monotonic() < end:
            if c.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._connected = False
        c.disconnect()
        c.loop(timeout=0.05)
        self._client = None

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self._report, self.component, state, message)
