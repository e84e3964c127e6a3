"""Station side of the staged rollout: follow the desired model of the station's group.

The plant writes the desired model of each station group into the JetStream
key-value bucket ``<prefix>_desired`` (key: the group; value: :class:`Desired`
as JSON), and may pin one station to a model of its own (key ``station/<name>``,
above the group's: :mod:`station.plant.desired`). This thread watches both keys
(a watch delivers the latest values first, so a station that was offline
converges when it returns) and runs the station's own model while it has one,
else the group's. It downloads the model file from S3 (cached by content hash), checks its sha256,
and swaps it in through the station's own hot-swap path
(:meth:`station.app.Station.swap_model`, or any ``swap(path, on_done)``). A
model that fails (download, checksum, load) is not tried again until the
desired version changes, and the running one keeps running. The outcome goes
into ``<prefix>_reported`` (key: the station; value: :class:`Reported`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from station import serialize

from ..services import ThreadWorker
from . import wire

log = logging.getLogger(__name__)

SwapFn = Callable[[Path, Callable[[Exception | None], None]], None]


def desired_bucket(prefix: str) -> str:
    """KV bucket of desired models per group."""
    return f"{prefix}_desired"


STATION_PREFIX = "station/"


def station_key(station: str) -> str:
    """The KV key of one station's own desired model, above its group's (``plant pin``)."""
    return f"{STATION_PREFIX}{station}"


def reported_bucket(prefix: str) -> str:
    """KV bucket of what each station runs."""
    return f"{prefix}_reported"


@dataclass(frozen=True)
class Desired:
    """The model a group should run."""

    version: str
    key: str  # S3 key, models/<sha256>.onnx
    sha256: str

    def to_json(self) -> bytes:
        return serialize.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Desired:
        d = json.loads(data)
        return cls(str(d["version"]), str(d["key"]), str(d["sha256"]))


@dataclass(frozen=True)
class Reported:
    """What a station runs, and why not the desired model when it cannot."""

    station: str
    group: str
    version: str  # running version ("" = the one it was started with)
    sha256: str
    model_id: str
    state: str  # "running" | "failed"
    error: str
    t: float
    pinned: bool = False  # runs its own desired model (station/<name>), not its group's

    def to_json(self) -> bytes:
        return serialize.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Reported:
        return cls(**json.loads(data))


async def ensure_buckets(js: Any, prefix: str) -> None:
    """Create the two KV buckets (file storage, 10 versions of history) if missing."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BadRequestError

    for name in (desired_bucket(prefix), reported_bucket(prefix)):
        try:
            await js.create_key_value(KeyValueConfig(bucket=name, history=10, storage=StorageType.FILE))
        except BadRequestError:  # made meanwhile by a station or the controller (a race on first use): use it
            await js.key_value(name)


class ModelFollower(ThreadWorker):
    """One thread with its own asyncio loop: watch, download, verify, swap, report."""

    def __init__(
        self,
        *,
        station: str,
        group: str,
        prefix: str,
        nats_url: str,
        s3: Callable[[], Any],
        bucket: str,
        models_dir: Path,
        swap: SwapFn,
        model_id: Callable[[], str],
        swap_timeout_s: float = 120.0,
        retry_s: float = 0.5,
        shadow: Callable[[Path], dict[str, Any]] | None = None,
    ):
        self._shadow = shadow
        self.last_shadow: dict[str, Any] | None = None
        self.station = station
        self.group = group
        self.prefix = prefix
        self.nats_url = nats_url
        self._s3_factory = s3
        self.bucket = bucket
        self.models_dir = Path(models_dir)
        self._swap = swap
        self._model_id = model_id
        self.swap_timeout_s = swap_timeout_s
        self.retry_s = retry_s
        self.version = ""
        self.sha256 = ""
        self.state = "running"
        self.error = ""
        self.failed: set[str] = set()  # sha256 of desired models that could not run
        self.group_desired: Desired | None = None  # the group's key
        self.pinned: Desired | None = None  # the station's own key (station/<name>), above the group's
        self.swaps = 0
        super().__init__("plant-model-follower")

    def start(self) -> ModelFollower:
        self._start_thread(lambda: asyncio.run(self._main()))
        return self

    def stop(self) -> None:
        self._stop_thread(10)

    def report(self) -> Reported:
        return Reported(
            self.station,
            self.group,
            self.version,
            self.sha256,
            self._model_id(),
            self.state,
            self.error,
            time.time(),
            self.pinned is not None,
        )

    def _desired(self, key: str, entry_value: bytes | None) -> Desired | None:
        """Note a change of the group's or the station's key; what the station should run now (None: keep it)."""
        value = None if entry_value is None else Desired.from_json(entry_value)
        if key == self.group:
            self.group_desired = value
        else:
            self.pinned = value
        return self.pinned if self.pinned is not None else self.group_desired

    async def _main(self) -> None:
        import nats
        import nats.errors

        while not self._stop.is_set():
            nc = None
            try:
                nc = await asyncio.wait_for(
                    nats.connect(
                        self.nats_url,
                        connect_timeout=2,
                        allow_reconnect=False,
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0.1,
                    ),
                    5,
                )
                js = nc.jetstream(timeout=5)
                await ensure_buckets(js, self.prefix)
                desired = await js.key_value(desired_bucket(self.prefix))
                reported = await js.key_value(reported_bucket(self.prefix))
                await reported.put(self.station, self.report().to_json())
                keys = (self.group, station_key(self.station))
                watcher = await desired.watch(">")  # one watch, both keys: the group's and the station's own
                while not self._stop.is_set():
                    try:
                        entry = await watcher.updates(timeout=0.5)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None or entry.key not in keys:
                        continue  # the end of the initial values, or another group's or station's key
                    was_pinned = self.pinned is not None
                    want = self._desired(entry.key, entry.value if entry.operation is None else None)
                    # nothing desired (keys deleted): keep what runs
                    changed = want is not None and await self._apply(want)
                    if changed or was_pinned != (self.pinned is not None):
                        await reported.put(self.station, self.report().to_json())
            except (TimeoutError, OSError, nats.errors.Error, ValueError, KeyError) as exc:
                log.debug("model follower offline: %s", exc)
                await asyncio.sleep(self.retry_s)  # offline: the watch restarts with the latest value
            finally:
                if nc is not None and not nc.is_closed:
                    await nc.close()

    async def _apply(self, d: Desired) -> bool:
        """Run ``d`` unless it runs already or failed before; True when there is something new to report."""
        if d.sha256 == self.sha256:  # runs already (e.g. a rollback to the model that kept running)
            changed = self.state != "running"
            self.state, self.error = "running", ""
            return changed
        if d.sha256 in self.failed:
            return False
        try:
            path = await asyncio.to_thread(self._fetch, d)
            if self._shadow is not None:  # shadow first: judged beside the line, acting on nothing
                self.last_shadow = await asyncio.to_thread(self._shadow, path)
            await asyncio.to_thread(self._swap_and_wait, path)
        except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
            self.failed.add(d.sha256)
            self.state, self.error = (
                "failed",
                f"model {d.version} ({d.sha256[:12]}) not loaded, "
                f"keeping {self.version or 'the start-up model'}: {exc}",
            )
            log.error("%s", self.error)
            return True
        self.version, self.sha256, self.state, self.error = d.version, d.sha256, "running", ""
        self.swaps += 1
        log.info("model %s (%s) running", d.version, d.sha256[:12])
        return True

    def _fetch(self, d: Desired) -> Path:
        path = self.models_dir / f"{d.sha256}.onnx"
        if not path.exists():
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                body = self._s3_factory().get_object(Bucket=self.bucket, Key=d.key)["Body"].read()
            except (BotoCoreError, ClientError) as exc:
                raise RuntimeError(f"download of s3://{self.bucket}/{d.key} failed: {exc}") from None
            got = hashlib.sha256(body).hexdigest()
            if got != d.sha256:
                raise ValueError(f"sha256 of s3://{self.bucket}/{d.key} is {got[:12]}, not the desired {d.sha256[:12]}")
            self.models_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(body)
            tmp.replace(path)
        return path

    def _swap_and_wait(self, path: Path) -> None:
        done: Future[None] = Future()
        self._swap(
            path, lambda err: done.set_exception(RuntimeError(str(err))) if err is not None else done.set_result(None)
        )
        done.result(timeout=self.swap_timeout_s)


def s3_factory(endpoint: str, access_key: str, secret_key: str) -> Callable[[], Any]:
    """A lazily made S3 client (boto3 is imported only when a model is downloaded)."""
    client: list[Any] = []

    def get() -> Any:
        if not client:
            client.append(wire.s3_client(endpoint, access_key, secret_key))
        return client[0]

    return get


def follower_for_station(station: Any) -> ModelFollower:
    """The follower of a :class:`station.app.Station` with ``plant.follow_models``: swaps through
    ``Station.swap_model``."""
    cfg = station.cfg.plant
    if station.cfg.inspector.type not in ("onnx", "anomaly"):
        raise ValueError(
            f"plant.follow_models needs inspector.type onnx or anomaly (hot swap), not {station.cfg.inspector.type}"
        )
    return ModelFollower(
        station=station.cfg.name,
        group=cfg.group,
        prefix=cfg.subject_prefix,
        nats_url=cfg.nats_url,
        bucket=cfg.s3_bucket,
        s3=s3_factory(cfg.s3_endpoint, cfg.s3_access_key, cfg.s3_secret_key),
        models_dir=cfg.models_dir,
        swap=station.swap_model,
        model_id=lambda: station.inspector.model_id,
        retry_s=cfg.reconnect_min_s,
        shadow=(lambda path: shadow_run(station, path, cfg.shadow_parts, cfg.shadow_timeout_s))
        if cfg.shadow_parts
        else None,
    )


def shadow_run(station: Any, path: Path, parts: int, timeout_s: float) -> dict[str, Any]:
    """Run ``path`` in the station's shadow mode until it judged ``parts`` parts; its final counters.

    RuntimeError when it cannot start (another shadow run, a file that does not load) or is too slow.
    """
    try:
        runner = station.start_shadow(path)
    except Exception as exc:  # noqa: BLE001 - loading raises onnxruntime's own types (no common base): the model is refused
        raise RuntimeError(f"shadow mode refused it: {exc}") from None
    end = time.monotonic() + timeout_s
    try:
        while runner.snapshot()["recorded"] < parts:
            if not runner.running or time.monotonic() > end:
                raise RuntimeError(
                    f"shadow run judged {runner.snapshot()['recorded']} of {parts} parts "
                    f"({runner.snapshot()['last_error'] or 'too slow'})"
                )
            time.sleep(0.1)  # the follower's thread, not the line
    finally:
        final = station.stop_shadow()
    return final or {}
