"""``plant ingest``: JetStream results -> PostgreSQL, each (station, seq) once.

A durable pull consumer on the results stream: fetch a batch, write it in one
transaction (:func:`station.store.plant_db.write_results`: keys ``ON CONFLICT
(station_id, seq) DO NOTHING``, rows, rollups from the new rows only), commit,
then acknowledge every message of the batch. A crash or a lost connection
before the acks means JetStream redelivers the batch after ``ack_wait`` and the
keys turn it into a no-op: nothing is counted twice, nothing is lost. A message
that is not a result is terminated (never redelivered) and counted. QA label changes
(``<prefix>.labels.>``, same stream) have a durable consumer of their own (``<durable>-labels``)
and go into ``labels`` the same way: each (station, revision) once, commit, then ack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from ..services import ThreadWorker
from ..store import plant_db, plant_labels
from . import wire

T = TypeVar("T")

log = logging.getLogger(__name__)


def shift_function(shifts: Sequence[tuple[str, str, str]] | None = None, tz: str = "UTC") -> plant_db.ShiftFn:
    """t (UNIX s) -> shift name, with the station's shift rules (labeling.stats: quarter hours, across midnight);
    ``shifts`` None: the station's default shifts (``labeling.stats.DEFAULT_SHIFTS``)."""
    from labeling.stats import DEFAULT_SHIFTS, shift_table

    table = shift_table(DEFAULT_SHIFTS if shifts is None else shifts)
    zone = ZoneInfo(tz)

    def shift_of(t: float) -> str:
        local = dt.datetime.fromtimestamp(t, zone)
        return table[(local.hour * 60 + local.minute) // 15][0]

    return shift_of


@dataclass
class IngestStats:
    """What the ingest did, for health and tests."""

    received: int = 0
    written: int = 0  # new rows
    duplicates: int = 0
    rejected: int = 0  # not a result message: terminated
    batches: int = 0
    errors: int = 0
    last_error: str = ""
    labels_received: int = 0  # QA label changes
    labels_written: int = 0  # new (station, revision) rows
    lag_ms: list[float] = field(default_factory=list)  # receive time - part time, of new rows (the bench reads it)


def _parse(msgs: list[Any], parse: Callable[[bytes], T], what: str) -> tuple[list[T], list[Any]]:
    """The parsed bodies, and the messages that are not a ``what`` (logged; the ack terminates them)."""
    parsed, bad = [], []
    for m in msgs:
        try:
            parsed.append(parse(m.data))
        except ValueError as exc:
            log.error("not a %s on %s, terminated: %s", what, m.subject, exc)
            bad.append(m)
    return parsed, bad


class Ingest(ThreadWorker):
    """One ingest worker; several may share the durable consumer (each batch is one transaction)."""

    def __init__(
        self,
        dsn: str,
        nats_url: str,
        *,
        prefix: str = "plant",
        durable: str = "plant-ingest",
        batch: int = 500,
        shift_of: plant_db.ShiftFn | None = None,
        ack_wait_s: float = 10.0,
        keep_lag: bool = False,
        replicas: int = 1,
    ):
        self.replicas = replicas
        self.dsn = dsn
        self.nats_url = nats_url
        self.prefix = prefix
        self.durable = durable
        self.batch = batch
        self.shift_of = shift_of or shift_function()
        self.ack_wait_s = ack_wait_s
        self.keep_lag = keep_lag
        self.stats = IngestStats()
        self._partitions: set[dt.date] = set()
        super().__init__("plant-ingest")

    # -- as a thread (tests, demo) or in the foreground (plant ingest) --------
    def start(self) -> Ingest:
        """Run in a background thread."""
        self._start_thread(self.run)
        return self

    def stop(self) -> None:
        """Finish the batch in hand and stop."""
        self._stop_thread(30)

    @property
    def died(self) -> bool:
        """True when the ingest thread was started and has ended (stop() not called, or called and done)."""
        return self._thread is not None and not self._thread.is_alive()

    def run(self) -> None:
        """Run until ``stop()``."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        import nats
        import psycopg

        conn = psycopg.connect(self.dsn)
        lconn = psycopg.connect(self.dsn)  # the labels' consumer writes in transactions of its own
        try:
            plant_db.create_schema(conn)
            nc = await nats.connect(
                self.nats_url,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                name=f"plant-ingest-{self.durable}",
                error_cb=self._nats_error,
            )
            try:
                await asyncio.gather(
                    self._consume(nc, conn, "results", self._handle),
                    self._consume(nc, lconn, "labels", self._handle_labels),
                )
            finally:
                await nc.close()
        finally:
            conn.close()
            lconn.close()

    async def _nats_error(self, exc: Exception) -> None:
        self.stats.last_error = f"NATS: {exc}"

    async def _subscribe(self, nc: Any, kind: str) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig

        js = nc.jetstream(timeout=5)
        await wire.ensure_stream(js, self.prefix, self.replicas)
        cfg = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s, max_ack_pending=50 * self.batch, max_deliver=-1
        )
        durable = self.durable if kind == "results" else f"{self.durable}-{kind}"
        return await js.pull_subscribe(
            f"{self.prefix}.{kind}.>", durable=durable, stream=wire.stream_name(self.prefix), config=cfg
        )

    async def _consume(self, nc: Any, conn: Any, kind: str, handle: Any) -> None:
        """Fetch batches of ``kind`` (results or labels) from its durable consumer and ``handle`` them."""
        import nats.errors

        sub = None
        while not self._stop.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe(nc, kind)
                msgs = await sub.fetch(self.batch, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as exc:  # NATS restarting: the client reconnects; subscribe again then
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                sub = None
                await asyncio.sleep(0.25)
                continue
            await handle(msgs, conn)

    async def _handle(self, msgs: list[Any], conn: Any) -> None:
        results, bad = _parse(msgs, wire.ResultMsg.from_json, "result")
        new = await asyncio.to_thread(plant_db.write_results, conn, results, self.shift_of, self._partitions)  # commits
        now = time.time()
        self.stats.received += len(results)
        self.stats.written += new
        self.stats.duplicates += len(results) - new
        self.stats.rejected += len(bad)
        self.stats.batches += 1
        if self.keep_lag:
            self.stats.lag_ms.extend((now - r.t) * 1000 for r in results)
        await self._ack(msgs, bad)

    async def _handle_labels(self, msgs: list[Any], conn: Any) -> None:
        """QA label changes -> ``labels`` (each (station, revision) once), commit, then ack."""
        changes, bad = _parse(msgs, wire.LabelMsg.from_json, "label change")
        new = await asyncio.to_thread(plant_labels.write_labels, conn, changes)  # commits
        self.stats.labels_received += len(changes)
        self.stats.labels_written += new
        self.stats.rejected += len(bad)
        await self._ack(msgs, bad)

    async def _ack(self, msgs: list[Any], bad: list[Any]) -> None:
        import nats.errors

        bad_ids = {id(m) for m in bad}
        try:
            for m in msgs:  # after the commit: a crash before this means a redelivery, which the keys ignore
                await (m.term() if id(m) in bad_ids else m.ack())
        except nats.errors.Error as exc:  # unacknowledged: redelivered after ack_wait, and ignored then
            self.stats.errors += 1
            self.stats.last_error = f"ack: {type(exc).__name__}: {exc}"
