"""Desired models beyond a rollout: pin one station, unpin it, roll a group back, read what is desired.

The KV bucket ``<prefix>_desired`` holds, per key, the :class:`~station.plant.follower.Desired`
model: a **group**'s under the group's name (written by the rollout controller), and a single
**station**'s override under ``station/<name>`` (written here by ``plant pin``). A follower runs its
station's override while there is one, else its group's (:func:`effective`); ``plant unpin``
deletes the override and the station goes back to its group's model. A group rolling forward never
touches a pinned station, and the controller judges a group only on the stations that run the new
model, so a pinned station neither blocks nor skews a rollout.

``rollback_group`` writes back the group's previous distinct value from the bucket's history
(10 versions kept), or deletes the key when there was none (the stations keep what they run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from .follower import STATION_PREFIX, Desired, desired_bucket, ensure_buckets, station_key

__all__ = [
    "STATION_PREFIX",
    "desired_now",
    "pin",
    "pin_station",
    "read_all",
    "rollback",
    "rollback_group",
    "station_key",
    "unpin",
    "unpin_station",
    "with_bucket",
]

T = TypeVar("T")


def with_bucket(nats_url: str, prefix: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connect, open the desired bucket, run ``fn(kv)``, close; for the command line and the dashboard's threads."""

    async def main() -> T:
        import nats

        nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=2)
        try:
            js = nc.jetstream(timeout=5)
            await ensure_buckets(js, prefix)
            return await fn(await js.key_value(desired_bucket(prefix)))
        finally:
            await nc.close()

    return asyncio.run(main())


async def pin(kv: Any, station: str, model: Desired) -> None:
    """Station ``station`` runs ``model`` whatever its group's desired model is."""
    await kv.put(station_key(station), model.to_json())


async def unpin(kv: Any, station: str) -> bool:
    """Drop the station's override (it follows its group again); False when it had none."""
    if await get_value(kv, station_key(station)) is None:
        return False
    await kv.delete(station_key(station))
    return True


async def rollback_group(kv: Any, group: str) -> Desired | None:
    """Write back the group's previous desired model (from the key's history); the model now desired, or None."""
    from nats.js.errors import NoKeysError

    try:
        entries = await kv.history(group)
    except NoKeysError:
        raise ValueError(f"group {group!r} has no desired model to roll back") from None
    values = [e.value if e.operation is None else None for e in entries]  # oldest first; None = deleted
    current = values[-1]
    previous = next((v for v in reversed(values[:-1]) if v != current), None)
    if previous is None:
        if current is None:
            raise ValueError(f"group {group!r} has no desired model to roll back")
        await kv.delete(group)
        return None
    await kv.put(group, previous)
    return Desired.from_json(previous)


async def read_all(kv: Any) -> dict[str, dict[str, dict[str, str]]]:
    """``{"groups": {group: desired}, "stations": {station: pinned}}`` as plain dicts, for the dashboard."""
    from nats.js.errors import NoKeysError

    out: dict[str, dict[str, dict[str, str]]] = {"groups": {}, "stations": {}}
    try:
        keys = await kv.keys()
    except NoKeysError:
        return out
    for k in keys:
        value = await get_value(kv, k)
        if value is None:
            continue
        d = asdict(Desired.from_json(value))
        if k.startswith(STATION_PREFIX):
            out["stations"][k[len(STATION_PREFIX) :]] = d
        else:
            out["groups"][k] = d
    return out


async def get_value(kv: Any, key: str) -> bytes | None:
    """The value of ``key``; None when it was never written or was deleted."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    try:
        value: bytes | None = (await kv.get(key)).value
        return value
    except (KeyNotFoundError, KeyDeletedError):
        return None


# -- what the command line and the dashboard call (the same code for both) ----
def pin_station(conn: Any, nats_url: str, prefix: str, station: str, sha256: str) -> Desired:
    """Pin ``station`` to the registered model ``sha256`` (or a unique prefix); the pinned model."""
    from ..store import plant_db, plant_models

    plant_db.create_schema(conn)
    m = plant_models.find_model(conn, sha256)
    model = Desired(m["version"], m["key"], m["sha256"])
    with_bucket(nats_url, prefix, lambda kv: pin(kv, station, model))
    return model


def unpin_station(nats_url: str, prefix: str, station: str) -> bool:
    """Drop the pin of ``station``; False when it had none."""
    return with_bucket(nats_url, prefix, lambda kv: unpin(kv, station))


def rollback(nats_url: str, prefix: str, group: str) -> Desired | None:
    """Roll ``group`` back to its previous desired model; the model now desired (None: none)."""
    return with_bucket(nats_url, prefix, lambda kv: rollback_group(kv, group))


def desired_now(nats_url: str, prefix: str) -> dict[str, dict[str, dict[str, str]]]:
    """Every group's desired model and every station's pin."""
    return with_bucket(nats_url, prefix, read_all)
