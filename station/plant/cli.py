"""The ``plant`` command: ingest, engines, demo (docs/plant.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("plant")


def _shifts(text: str) -> tuple[tuple[str, str, str], ...]:
    """'A=06:00-14:00,B=14:00-22:00' -> (('A', '06:00', '14:00'), ...)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, span = item.partition("=")
        start, _, end = span.partition("-")
        if not (name and start and end):
            raise argparse.ArgumentTypeError(f"--shifts: {item!r} is not NAME=HH:MM-HH:MM (e.g. A=06:00-14:00)")
        out.append((name, start, end))
    return tuple(out)


def _wait_for_signal() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def cmd_ingest(args: argparse.Namespace) -> int:
    """Consume results from JetStream into PostgreSQL until SIGTERM / Ctrl-C; print the counts as JSON at the end."""
    from .ingest import DEFAULT_SHIFTS, Ingest, shift_function

    try:
        shift_of = shift_function(args.shifts or DEFAULT_SHIFTS, args.tz)
    except (ValueError, KeyError) as exc:
        print(f"--shifts/--tz: {exc}", file=sys.stderr)
        return 2
    ing = Ingest(
        args.dsn,
        args.nats,
        prefix=args.prefix,
        durable=args.durable,
        batch=args.batch,
        shift_of=shift_of,
        ack_wait_s=args.ack_wait,
        replicas=args.replicas,
    )
    stop = _wait_for_signal()
    ing.start()
    log.info("plant ingest: %s -> %s (durable %s)", args.nats, args.dsn, args.durable)
    while not stop.wait(0.5):
        if ing.died:
            log.error("ingest stopped: %s", ing.stats.last_error)
            return 1
    ing.stop()
    print(json.dumps({k: v for k, v in dataclasses.asdict(ing.stats).items() if k != "lag_ms"}), flush=True)
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    """Start NATS, PostgreSQL and SeaweedFS locally (loopback) and print where they are, until Ctrl-C."""
    from .engines import Engines

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="plant-engines-"))
    root.chmod(0o755)
    stop = _wait_for_signal()
    with Engines(root) as e:
        print(json.dumps({"nats": e.nats.url, "postgres": e.pg.dsn, "s3": e.s3.endpoint, "dir": str(root)}), flush=True)
        stop.wait()
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the plant dashboard until Ctrl-C."""
    from ..config import WebConfig
    from . import wire
    from .web import PlantWebState, build_server

    state = PlantWebState(
        dsn=args.dsn, users_db=Path(args.users), s3=wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key), bucket=args.bucket,
        nats_url=args.nats, prefix=args.prefix, cfg=WebConfig(host=args.host, port=args.port),
    )  # fmt: skip
    server, sock = build_server(state, args.host, args.port)
    log.info("plant dashboard on http://%s:%d/", args.host, sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        state.close()
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Roll a model out group by group (canary first); exit 1 when it was rolled back."""
    import psycopg

    from . import wire
    from .controller import Limits, RolloutController

    limits = Limits(args.min_parts, args.max_reject_rate, args.max_failsafe_rate, args.max_latency_ms, args.timeout)
    s3 = wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key)
    wire.ensure_bucket(s3, args.bucket)
    with psycopg.connect(args.dsn) as conn:
        res = RolloutController(conn, args.nats, s3, args.bucket, prefix=args.prefix).promote(
            Path(args.model), args.version, args.groups.split(","), limits
        )
    print(json.dumps(res, default=str), flush=True)
    return 0 if res["state"] == "done" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Engines, ingest and two synthetic stations; prints the plant's counts every few seconds."""
    from .demo import run_demo

    return run_demo(parts=args.parts, seconds=args.seconds, root=Path(args.dir) if args.dir else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="plant", description="The plant tier: ingest, local engines, demo (docs/plant.md)."
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser(
        "ingest", help="JetStream results -> PostgreSQL (durable consumer, exactly once per station:seq)"
    )
    p.add_argument("--dsn", required=True, help="PostgreSQL connection string, e.g. 'host=db user=plant dbname=plant'")
    p.add_argument("--nats", required=True, help="NATS URL(s), e.g. nats://n1:4222,nats://n2:4222")
    p.add_argument("--prefix", default="plant", help="subject prefix of the stations (plant.subject_prefix)")
    p.add_argument(
        "--durable", default="plant-ingest", help="durable consumer name (workers sharing it split the work)"
    )
    p.add_argument("--batch", type=int, default=500, help="messages per transaction")
    p.add_argument("--ack-wait", type=float, default=30.0, help="seconds before an unacknowledged batch is redelivered")
    p.add_argument(
        "--shifts",
        type=_shifts,
        default=None,
        help="shifts for the rollups, NAME=HH:MM-HH:MM,... (default A/B/C at 06/14/22)",
    )
    p.add_argument("--tz", default="UTC", help="IANA time zone of the shifts")
    p.add_argument(
        "--replicas", type=int, default=1, choices=(1, 3, 5), help="stream replicas (3 on a 3-node NATS cluster)"
    )
    p.set_defaults(fn=cmd_ingest)

    def plant_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dsn", required=True, help="PostgreSQL connection string")
        p.add_argument("--nats", required=True, help="NATS URL(s)")
        p.add_argument("--prefix", default="plant", help="subject prefix (plant.subject_prefix of the stations)")
        p.add_argument("--s3", required=True, help="S3 endpoint URL")
        p.add_argument("--bucket", default="plant", help="S3 bucket (plant.s3_bucket of the stations)")
        p.add_argument("--s3-access-key", default="plant")
        p.add_argument("--s3-secret-key", default="plant")

    p = sub.add_parser("web", help="the plant dashboard (same login and roles as the station)")
    plant_args(p)
    p.add_argument("--users", default="data/plant_users.db", help="SQLite file of the dashboard's users and sessions")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.set_defaults(fn=cmd_web)

    p = sub.add_parser("promote", help="staged rollout of a model file: canary group first, automatic rollback")
    plant_args(p)
    p.add_argument("--model", required=True, help="ONNX model file")
    p.add_argument("--version", required=True, help="version name shown to the stations")
    p.add_argument("--groups", required=True, help="station groups in rollout order, e.g. canary,wave-1,wave-2")
    p.add_argument("--min-parts", type=int, default=200, help="parts per group under the new model before judging it")
    p.add_argument("--max-reject-rate", type=float, default=0.05)
    p.add_argument("--max-failsafe-rate", type=float, default=0.005)
    p.add_argument("--max-latency-ms", type=float, default=200.0, help="p95 latency limit")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds a group may take to show min-parts parts")
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("engines", help="start NATS, PostgreSQL and SeaweedFS on loopback (development)")
    p.add_argument("--dir", default=None, help="data folder (default: a new temporary one)")
    p.set_defaults(fn=cmd_engines)

    p = sub.add_parser("demo", help="engines + ingest + two synthetic stations, locally")
    p.add_argument("--parts", type=int, default=200, help="parts per station")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long at the latest")
    p.add_argument("--dir", default=None, help="data folder (default: a new temporary one)")
    p.set_defaults(fn=cmd_demo)

    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
