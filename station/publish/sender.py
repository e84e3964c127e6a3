"""What the station's two store-and-forward senders share: the MQTT publisher and the plant uplink.

Each drains a bus subscription into a SQLite outbox (:class:`station.store.outbox.Outbox`) on its
own thread and deletes what the far end acknowledged (the broker's PUBACK, JetStream's stored
acknowledgement); a lost connection is retried with a capped backoff. :class:`OutboxSender` holds
the subscription, the backoff, the alarm callback, the status function, the outbox (left-overs of
an earlier run go first) and the counts; the protocol is the subclass's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..alarms import ReportFn
from ..bus import Subscription
from ..plc.link import Backoff
from ..services import ThreadWorker
from ..store.outbox import Outbox

log = logging.getLogger(__name__)


class OutboxSender(ThreadWorker):
    """A bus subscriber -> outbox -> far end worker; the subclass starts its thread after :meth:`_open_outbox`."""

    def __init__(
        self,
        thread_name: str,
        sub: Subscription,
        backoff: Backoff,
        report: ReportFn | None,
        status: Callable[[], dict[str, Any]],
    ):
        super().__init__(thread_name)
        self.sub = sub
        self._backoff = backoff
        self._report = report
        self._status_fn = status
        self._outbox: Outbox | None = None
        self._connected = False
        self.published = 0
        self.encode_errors = 0

    def _open_outbox(self, outbox: Outbox, what: str) -> None:
        """Use ``outbox``; log how many ``what`` (e.g. "unsent messages") an earlier run left in it (sent first)."""
        self._outbox = outbox
        if len(outbox):
            log.info(
                "%s: outbox %s holds %d %s from before: sending them first",
                self._thread_name,
                outbox.path,
                len(outbox),
                what,
            )

    @property
    def outbox_pending(self) -> int:
        """Entries the far end has not acknowledged yet (the broker, JetStream)."""
        return len(self._outbox) if self._outbox is not None else 0

    @property
    def outbox_dropped(self) -> int:
        """Entries the full outbox dropped."""
        return self._outbox.dropped if self._outbox is not None else 0

    @property
    def connected(self) -> bool:
        """True while the far end answers."""
        return self._connected
