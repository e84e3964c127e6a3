"""Fan-out of results and status events to the slow consumers.

The hot path calls :meth:`Bus.publish`, which only does ``put_nowait`` into
each subscriber's bounded queue: a slow or stalled consumer (SQLite, a web
client, MQTT) can never block a decision. A full queue drops the event for
that subscriber and counts it.
"""

from __future__ import annotations

import logging
import queue
import threading

from .contracts import PartResult, StatusEvent

log = logging.getLogger(__name__)

BusEvent = PartResult | StatusEvent
"""What the bus carries: a part's final result, or a component's status change (alarms)."""


class Subscription:
    """One consumer's bounded queue and its drop counter."""

    def __init__(self, name: str, maxsize: int):
        self.name = name
        self.queue: queue.Queue[BusEvent] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.delivered = 0
        self._dropped_by_kind: dict[type, int] = {}

    def get(self, timeout: float | None = None) -> BusEvent:
        """Next event, waiting up to ``timeout`` s (0: not at all); raises ``queue.Empty``."""
        if timeout == 0:
            return self.queue.get_nowait()
        return self.queue.get(timeout=timeout)

    def drain(self, max_n: int | None = None) -> list[BusEvent]:
        """The events waiting now, oldest first, at most ``max_n``; never blocks."""
        out: list[BusEvent] = []
        while max_n is None or len(out) < max_n:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return out

    def results_waiting(self) -> int:
        """PartResults waiting in the queue (a consistent copy taken under the queue's lock)."""
        q = self.queue
        with q.mutex:  # a C-level copy: the publisher waits microseconds at most
            queued = list(q.queue)
        return sum(1 for e in queued if isinstance(e, PartResult))

    @property
    def maxsize(self) -> int:
        """The queue's bound."""
        return self.queue.maxsize

    def dropped_of(self, kind: type) -> int:
        """Events of type ``kind`` this subscriber lost to a full queue."""
        return self._dropped_by_kind.get(kind, 0)

    @property
    def pending(self) -> int:
        """Events waiting in the queue."""
        return self.queue.qsize()


class Bus:
    """Publish/subscribe with one bounded queue per subscriber."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, name: str, maxsize: int = 1000) -> Subscription:
        """Add a consumer; it must drain its queue from its own thread."""
        sub = Subscription(name, maxsize)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a consumer (a closed web client)."""
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    def publish(self, event: BusEvent) -> None:
        """Offer ``event`` to every subscriber without ever blocking."""
        for sub in self._subs:  # copy-on-write list: no lock needed to read
            try:
                sub.queue.put_nowait(event)
                sub.delivered += 1
            except queue.Full:
                sub.dropped += 1
                sub._dropped_by_kind[type(event)] = sub._dropped_by_kind.get(type(event), 0) + 1
                if sub.dropped == 1 or sub.dropped % 1000 == 0:
                    log.warning("bus subscriber %s is full: %d events dropped", sub.name, sub.dropped)

    def subscriptions(self) -> list[Subscription]:
        """Current subscribers."""
        return list(self._subs)
