"""Plant side of the staged rollout: canary first, widen only on good metrics, roll back on a breach.

``promote(model file, version, groups)``:

1. uploads the file to S3 as ``models/<sha256>.onnx`` and registers it (``models``);
2. for each group in order: remembers the group's current desired model, writes
   the new one (``<prefix>_desired``), and watches the group's parts *under the
   new model* in PostgreSQL (stations of the group per ``<prefix>_reported``,
   their reported ``model_id``): once ``min_parts`` parts are in, their reject
   rate, FAILSAFE rate and p95 latency must be within the limits, else it is a
   breach; no ``min_parts`` within ``timeout_s`` is a breach too;
3. on a breach, writes the previous desired model back to every group it
   reached (automatic rollback; stations swap back) and records why.

Each step is recorded in ``rollouts``. Stations that are offline meanwhile
converge on whatever is desired when they return (:mod:`station.plant.follower`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import plant_db, plant_models
from .desired import get_value
from .follower import Desired, Reported, desired_bucket, ensure_buckets, reported_bucket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What a group must show over ``min_parts`` parts under the new model."""

    min_parts: int = 200
    max_reject_rate: float = 0.05
    max_failsafe_rate: float = 0.005
    max_latency_ms_p95: float = 200.0
    timeout_s: float = 3600.0

    def breach(self, m: dict[str, float]) -> str:
        """Why ``m`` is out of limits ('' when it is not)."""
        out = []
        if m["reject_rate"] > self.max_reject_rate:
            out.append(f"reject rate {m['reject_rate']:.3f} > {self.max_reject_rate}")
        if m["failsafe_rate"] > self.max_failsafe_rate:
            out.append(f"FAILSAFE rate {m['failsafe_rate']:.3f} > {self.max_failsafe_rate}")
        if m["latency_ms_p95"] > self.max_latency_ms_p95:
            out.append(f"p95 latency {m['latency_ms_p95']:.1f} ms > {self.max_latency_ms_p95} ms")
        return "; ".join(out)


def upload_model(s3: Any, bucket: str, body: bytes) -> tuple[str, str]:
    """Put a model file into the object store under its content hash; (sha256, key)."""
    sha = hashlib.sha256(body).hexdigest()
    key = f"models/{sha}.onnx"
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return sha, key


class RolloutController:
    """Promotes one model through the groups; one rollout at a time per controller."""

    def __init__(self, conn: Any, nats_url: str, s3: Any, bucket: str, *, prefix: str = "plant", poll_s: float = 0.25):
        self.conn = conn
        self.nats_url = nats_url
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.poll_s = poll_s

    def promote(self, model: Path, version: str, groups: Sequence[str], limits: Limits) -> dict[str, Any]:
        """Upload and register a model file, then run its rollout to the end; returns the rollout's record."""
        if not groups:
            raise ValueError("promote: name at least one station group (the first is the canary)")
        plant_db.create_schema(self.conn)  # idempotent: the controller may run before any ingest
        sha, key = upload_model(self.s3, self.bucket, Path(model).read_bytes())
        plant_models.register_model(self.conn, sha, version, key, Path(model).stat().st_size)
        return asyncio.run(self._promote(sha, key, version, list(groups), limits))

    def promote_registered(self, sha256: str, groups: Sequence[str], limits: Limits) -> dict[str, Any]:
        """Roll out a model of the central registry (e.g. from ``plant train``), by sha256 or a unique prefix of it."""
        if not groups:
            raise ValueError("promote: name at least one station group (the first is the canary)")
        plant_db.create_schema(self.conn)
        m = plant_models.find_model(self.conn, sha256)
        return asyncio.run(self._promote(m["sha256"], m["key"], m["version"], list(groups), limits))

    async def _promote(self, sha: str, key: str, version: str, groups: list[str], limits: Limits) -> dict[str, Any]:
        import nats

        rid = plant_models.start_rollout(self.conn, version, sha, groups)
        new = Desired(version, key, sha)
        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        try:
            js = nc.jetstream(timeout=5)
            await ensure_buckets(js, self.prefix)
            desired = await js.key_value(desired_bucket(self.prefix))
            reported = await js.key_value(reported_bucket(self.prefix))
            previous: dict[str, bytes | None] = {}
            reached: list[str] = []
            for group in groups:
                previous[group] = await get_value(desired, group)
                since = dt.datetime.now(dt.UTC)
                await desired.put(group, new.to_json())
                reached.append(group)
                plant_models.update_rollout(self.conn, rid, reached=reached)
                log.info("rollout %d: %s desired for group %s", rid, version, group)
                why = await self._judge(reported, group, sha, since, limits)
                if why:
                    for g in reversed(reached):  # automatic rollback
                        prev = previous[g]
                        await (desired.put(g, prev) if prev is not None else desired.delete(g))
                    reason = f"group {group}: {why}; rolled back {', '.join(reached)}"
                    log.warning("rollout %d: %s", rid, reason)
                    plant_models.update_rollout(self.conn, rid, reached=reached, state="rolled_back", reason=reason)
                    return plant_models.rollout(self.conn, rid)
            plant_models.update_rollout(self.conn, rid, reached=reached, state="done")
            return plant_models.rollout(self.conn, rid)
        finally:
            await nc.close()

    async def _judge(self, reported: Any, group: str, sha: str, since: dt.datetime, limits: Limits) -> str:
        """'' when the group's parts under the new model stay within limits over ``min_parts``, else why not."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limits.timeout_s
        while loop.time() < end:
            reps = await self._reports(reported)
            on_it = [r for r in reps if r.group == group and r.sha256 == sha and r.state == "running"]
            failed = [r for r in reps if r.group == group and r.state == "failed" and sha[:12] in r.error]
            if failed:
                return f"station {failed[0].station} could not run it: {failed[0].error}"
            if on_it:
                m = await asyncio.to_thread(
                    plant_models.group_metrics,
                    self.conn,
                    [r.station for r in on_it],
                    sorted({r.model_id for r in on_it}),
                    since,
                )
                if m["parts"] >= limits.min_parts:
                    why = limits.breach(m)
                    log.info("group %s under the new model: %s%s", group, m, f" -> {why}" if why else "")
                    return why
            await asyncio.sleep(self.poll_s)
        return f"fewer than {limits.min_parts} parts under the new model within {limits.timeout_s:g} s"

    async def _reports(self, reported: Any) -> list[Reported]:
        from nats.js.errors import NoKeysError

        try:
            keys = await reported.keys()
        except NoKeysError:
            return []
        out = []
        for k in keys:
            value = await get_value(reported, k)
            if value is not None:
                out.append(Reported.from_json(value))
        return out
