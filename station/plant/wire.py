"""What travels between a station and the plant: subjects, the stream, the result message.

A result is one JetStream message on ``<prefix>.results.<station>`` with the
header ``Nats-Msg-Id: <station>:<seq>`` (``seq``: the station's outbox sequence,
never reused), so the stream drops a re-publish within its duplicate window and
the ingest drops one after it (``ON CONFLICT (station_id, seq) DO NOTHING``).
Its body is JSON (:class:`ResultMsg`); images travel separately, to S3, under
``images/<sha256>.jpg`` (the same bytes always get the same key: uploads are
idempotent). In the station's outbox an entry is the JSON and the JPEGs packed
together (:func:`pack` / :func:`unpack`), so an outage loses neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from station import serialize

if TYPE_CHECKING:
    from station.store.outbox import Outbox

DUPLICATE_WINDOW_S = 3600.0  # the stream's own de-duplication; the database's covers the rest
_MAGIC = b"PLU1"


def stream_name(prefix: str) -> str:
    """The results stream of a subject prefix (one plant: one prefix, one stream)."""
    return f"{prefix.upper().replace('-', '_')}_RESULTS"


def results_subject(prefix: str, station: str) -> str:
    """The subject a station publishes its results on."""
    return f"{prefix}.results.{station}"


def msg_id(station: str, seq: int) -> str:
    """JetStream's de-duplication id of a result."""
    return f"{station}:{seq}"


def labels_subject(prefix: str, station: str) -> str:
    """The subject a station publishes its QA label changes on (same stream as the results)."""
    return f"{prefix}.labels.{station}"


def label_msg_id(station: str, revision: int) -> str:
    """JetStream's de-duplication id of a label change: ``<station>:label-<revision>``."""
    return f"{station}:label-{revision}"


def stored_image_key(sha256: str, fmt: str) -> str:
    """The object key of a station's stored image file (its content hash and format)."""
    return f"images/{sha256}.{fmt}"


def image_key(jpeg: bytes) -> str:
    """The object key of an image: its content hash."""
    return f"images/{hashlib.sha256(jpeg).hexdigest()}.jpg"


def pack(meta: dict[str, Any], images: Sequence[bytes]) -> bytes:
    """One outbox entry: the result's JSON and its JPEGs."""
    body = serialize.dumps(meta).encode()
    parts = [_MAGIC, struct.pack("<II", len(body), len(images)), body]
    for img in images:
        parts += [struct.pack("<I", len(img)), img]
    return b"".join(parts)


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The inverse of :func:`pack`."""
    if data[:4] != _MAGIC:
        raise ValueError("not a plant outbox entry (bad magic)")
    try:
        n_body, n_img = struct.unpack_from("<II", data, 4)
        pos = 12 + n_body
        meta = json.loads(data[12:pos])
        images = []
        for _ in range(n_img):
            (n,) = struct.unpack_from("<I", data, pos)
            images.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
    except (struct.error, ValueError) as exc:
        raise ValueError(f"truncated or damaged plant outbox entry: {exc}") from None
    return meta, images


@dataclass(frozen=True)
class ResultMsg:
    """One part's result as the plant stores it."""

    station: str
    seq: int
    line: str
    product: str
    t: float  # trigger time, UNIX seconds
    outcome: str  # PASS | FAIL | UNCERTAIN | FAILSAFE
    part_id: int
    model_id: str
    latency_ms: float
    defects: tuple[str, ...]  # class names
    images: tuple[str, ...]  # S3 keys

    def to_json(self) -> bytes:
        """The message body."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["defects"], d["images"] = list(self.defects), list(self.images)
        return serialize.dumps(d).encode()

    @classmethod
    def from_json(cls, body: bytes) -> ResultMsg:
        """Parse and check a message body; ValueError names the field."""
        try:
            d = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"result message is not JSON: {exc}") from None
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Any) -> ResultMsg:
        """Check the fields of a decoded message; ValueError names the field."""
        if not isinstance(d, dict):
            raise ValueError("result message must be a JSON object")
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise ValueError(f"result message lacks {', '.join(missing)}")
        if d["outcome"] not in ("PASS", "FAIL", "UNCERTAIN", "FAILSAFE"):
            raise ValueError(f"result message: outcome {d['outcome']!r} is not PASS, FAIL, UNCERTAIN or FAILSAFE")
        try:
            return cls(
                station=str(d["station"]),
                seq=int(d["seq"]),
                line=str(d["line"]),
                product=str(d["product"]),
                t=float(d["t"]),
                outcome=str(d["outcome"]),
                part_id=int(d["part_id"]),
                model_id=str(d["model_id"]),
                latency_ms=float(d["latency_ms"]),
                defects=tuple(str(x) for x in d["defects"]),
                images=tuple(str(x) for x in d["images"]),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"result message has a field of the wrong type: {exc}") from None


@dataclass(frozen=True)
class LabelMsg:
    """The labels of one image after a QA change on a station: its whole current label set at ``revision``.

    ``revision`` is the station's review row id (grows with every QA operation), so the newest
    revision of a (station, image) is its current labels and the older ones are its history.
    """

    station: str
    revision: int
    image_id: int
    part_id: int
    camera_id: str
    image_key: str  # S3 key of the station's image file, images/<sha256>.<png|jpg>
    sha256: str
    width: int
    height: int
    verdict: str  # labeled | good (no labels left: a reviewed negative)
    labels: tuple[tuple[str, float, float, float, float], ...]  # (class, x1, y1, x2, y2) in image pixels
    reviewed_by: str
    reviewed_at: float

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["labels"] = [list(lab) for lab in self.labels]
        return serialize.dumps(d).encode()

    @classmethod
    def from_json(cls, body: bytes) -> LabelMsg:
        """Parse and check a message body; ValueError says what is wrong."""
        try:
            d = json.loads(body)
            missing = [k for k in cls.__dataclass_fields__ if k not in d]
            if missing:
                raise ValueError(f"label message lacks {', '.join(missing)}")
            if d["verdict"] not in ("labeled", "good"):
                raise ValueError(f"label message: verdict {d['verdict']!r} is not labeled or good")
            return cls(
                station=str(d["station"]),
                revision=int(d["revision"]),
                image_id=int(d["image_id"]),
                part_id=int(d["part_id"]),
                camera_id=str(d["camera_id"]),
                image_key=str(d["image_key"]),
                sha256=str(d["sha256"]),
                width=int(d["width"]),
                height=int(d["height"]),
                verdict=str(d["verdict"]),
                labels=tuple((str(c), float(a), float(b), float(x), float(y)) for c, a, b, x, y in d["labels"]),
                reviewed_by=str(d["reviewed_by"]),
                reviewed_at=float(d["reviewed_at"]),
            )
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"label message has a field of the wrong type: {exc}") from None


async def ensure_stream(js: Any, prefix: str = "plant", replicas: int = 1) -> None:
    """Create (or update) the file-backed results stream with its duplicate window."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError

    cfg = StreamConfig(
        name=stream_name(prefix),
        subjects=[f"{prefix}.results.>", f"{prefix}.labels.>"],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(cfg)
    except BadRequestError:  # it exists with another configuration (e.g. an older duplicate window)
        await js.update_stream(cfg)


async def publish_acked(
    js: Any, subject: str, msgs: Sequence[tuple[int, ResultMsg | LabelMsg]], ids: Sequence[str], outbox: Outbox
) -> tuple[int, BaseException | None]:
    """Publish ``(outbox seq, message)`` pairs, each with its ``Nats-Msg-Id`` from ``ids``, and wait for JetStream's
    stored acknowledgements; delete the acknowledged entries from ``outbox``.

    Returns how many were acknowledged and the first failure (None when all were): the caller counts, then raises it.
    """
    acks = await asyncio.gather(
        *(js.publish(subject, m.to_json(), headers={"Nats-Msg-Id": i}) for (_, m), i in zip(msgs, ids)),
        return_exceptions=True,
    )
    done = [seq for (seq, _), ack in zip(msgs, acks) if not isinstance(ack, BaseException)]
    outbox.delete(done)
    return len(done), next((a for a in acks if isinstance(a, BaseException)), None)


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create the image bucket if it does not exist."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:  # another station made it meanwhile
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def s3_client(endpoint: str, access_key: str, secret_key: str, timeout_s: float = 5.0) -> Any:
    """A boto3 S3 client with short timeouts (a dead store fails fast, the caller retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


async def status_bucket(js: Any, prefix: str) -> Any:
    """The KV bucket where stations put their state (outbox depth, alarms, model) for the dashboard."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BadRequestError

    try:
        return await js.create_key_value(KeyValueConfig(bucket=f"{prefix}_status", history=1, storage=StorageType.FILE))
    except BadRequestError:  # made meanwhile by another station (a race on first use)
        return await js.key_value(f"{prefix}_status")
