"""The ``plant`` command: ingest, web, promote, pin, rollback, roles, datasets, train, engines, demo (docs/plant.md)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from station import serialize

from ..cli_common import iso_time, print_json, refuse, setup_logging

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
    from .ingest import Ingest, shift_function

    try:
        shift_of = shift_function(args.shifts or None, args.tz)
    except (ValueError, KeyError) as exc:
        return refuse(f"--shifts/--tz: {exc}")
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
    return print_json({k: v for k, v in dataclasses.asdict(ing.stats).items() if k != "lag_ms"})


def cmd_engines(args: argparse.Namespace) -> int:
    """Start NATS, PostgreSQL and SeaweedFS locally (loopback) and print where they are, until Ctrl-C."""
    from .engines import Engines

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="plant-engines-"))
    root.chmod(0o755)
    stop = _wait_for_signal()
    with Engines(root) as e:
        print(
            serialize.dumps({"nats": e.nats.url, "postgres": e.pg.dsn, "s3": e.s3.endpoint, "dir": str(root)}),
            flush=True,
        )
        stop.wait()
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the plant dashboard until Ctrl-C."""
    from ..config import WebConfig
    from . import wire
    from .web import build_server
    from .web_state import PlantWebState

    state = PlantWebState(
        dsn=args.dsn,
        users_db=Path(args.users),
        s3=wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key),
        bucket=args.bucket,
        nats_url=args.nats,
        prefix=args.prefix,
        cfg=WebConfig(host=args.host, port=args.port),
    )
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

    if (args.model is None) == (args.sha is None):
        return refuse("promote: give --model FILE --version V, or --sha SHA256 of a registered model")
    if args.model is not None and not args.version:
        return refuse("promote: --model needs --version")
    limits = Limits(args.min_parts, args.max_reject_rate, args.max_failsafe_rate, args.max_latency_ms, args.timeout)
    s3 = wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key)
    wire.ensure_bucket(s3, args.bucket)
    with psycopg.connect(args.dsn) as conn:
        ctl = RolloutController(conn, args.nats, s3, args.bucket, prefix=args.prefix)
        groups = args.groups.split(",")
        try:
            if args.sha is not None:
                res = ctl.promote_registered(args.sha, groups, limits)
            else:
                res = ctl.promote(Path(args.model), args.version, groups, limits)
        except ValueError as exc:
            return refuse(f"promote: {exc}")
    print(serialize.dumps(res), flush=True)
    return 0 if res["state"] == "done" else 1


def cmd_pin(args: argparse.Namespace) -> int:
    """Pin one station to a registered model, above its group's desired model."""
    import psycopg

    from .desired import pin_station

    with psycopg.connect(args.dsn) as conn:
        try:
            model = pin_station(conn, args.nats, args.prefix, args.station, args.model)
        except ValueError as exc:
            return refuse(f"pin: {exc}")
    return print_json({"station": args.station, "pinned": dataclasses.asdict(model)})


def cmd_unpin(args: argparse.Namespace) -> int:
    """Drop a station's pin: it follows its group again."""
    from .desired import unpin_station

    had = unpin_station(args.nats, args.prefix, args.station)
    return print_json({"station": args.station, "unpinned": had})


def cmd_rollback(args: argparse.Namespace) -> int:
    """Write a group's previous desired model back (its stations swap back)."""
    from .desired import rollback

    try:
        now = rollback(args.nats, args.prefix, args.group)
    except ValueError as exc:
        return refuse(f"rollback: {exc}")
    return print_json({"group": args.group, "desired": None if now is None else dataclasses.asdict(now)})


def cmd_role(args: argparse.Namespace) -> int:
    """Grant, revoke or list plant roles on the dashboard's users file."""
    from ..store import plant_roles
    from ..store.db import open_db

    db = open_db(Path(args.users))
    try:
        plant_roles.ensure_table(db)
        if args.action == "list":
            print(serialize.dumps(plant_roles.list_roles(db)), flush=True)
        elif args.action == "grant":
            plant_roles.grant(db, args.user, args.role, granted_by="cli")
        elif not plant_roles.revoke(db, args.user):
            print(f"role: {args.user} had no plant role", file=sys.stderr)
            return 1
    except ValueError as exc:
        return refuse(f"role: {exc}")
    finally:
        db.close()
    return 0


def _when(text: str) -> dt.datetime:
    t = iso_time(text, f"{text!r} is not an ISO time, e.g. 2026-12-01 or 2026-12-01T06:00+01:00")
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def cmd_dataset(args: argparse.Namespace) -> int:
    """Freeze a dataset snapshot across stations (content-addressed), or list the snapshots."""
    import psycopg

    from ..store import plant_labels
    from . import datasets, wire

    with psycopg.connect(args.dsn) as conn:
        if args.action == "list":
            return print_json(plant_labels.snapshots(conn))
        if not args.stations or not args.name:
            return refuse("dataset snapshot: give --stations a,b and --name")
        s3 = wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key)
        wire.ensure_bucket(s3, args.bucket)
        try:
            row = datasets.snapshot(
                conn, s3, args.bucket, args.stations.split(","), args.name, since=args.since, until=args.until
            )
        except ValueError as exc:
            return refuse(f"dataset snapshot: {exc}")
    return print_json(row)


def cmd_train(args: argparse.Namespace) -> int:
    """Train on this host from a central snapshot; the new model enters the central registry."""
    import psycopg

    from . import wire
    from .train_host import TrainSpec, train_snapshot

    spec = TrainSpec(args.model, args.epochs, args.imgsz, args.batch, args.seed, args.val_fraction)
    s3 = wire.s3_client(args.s3, args.s3_access_key, args.s3_secret_key, timeout_s=60.0)
    with psycopg.connect(args.dsn) as conn:
        try:
            row = train_snapshot(
                conn, s3, args.bucket, args.snapshot, args.host_name, Path(args.work), spec, version=args.version
            )
        except ValueError as exc:
            return refuse(f"train: {exc}")
    return print_json(row)


def cmd_demo(args: argparse.Namespace) -> int:
    """Engines, ingest and two synthetic stations; prints the plant's counts every few seconds."""
    from .demo import run_demo

    return run_demo(parts=args.parts, seconds=args.seconds, root=Path(args.dir) if args.dir else None)


def _dsn_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", required=True, help="PostgreSQL connection string, e.g. 'host=db user=plant dbname=plant'")


def _nats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", required=True, help="NATS URL(s), e.g. nats://n1:4222,nats://n2:4222")
    p.add_argument("--prefix", default="plant", help="subject prefix (plant.subject_prefix of the stations)")


def _s3_args(p: argparse.ArgumentParser, endpoint: str | None = None) -> None:
    """--s3 (required unless ``endpoint`` is its default), --bucket and the keys."""
    p.add_argument("--s3", required=endpoint is None, default=endpoint, help="S3 endpoint URL")
    p.add_argument("--bucket", default="plant", help="S3 bucket (plant.s3_bucket of the stations)")
    p.add_argument("--s3-access-key", default="plant")
    p.add_argument("--s3-secret-key", default="plant")


def _plant_args(p: argparse.ArgumentParser) -> None:
    """PostgreSQL, NATS and S3: what the dashboard and the rollout controller reach."""
    _dsn_arg(p)
    _nats_args(p)
    _s3_args(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="plant", description="The plant tier: ingest, local engines, demo (docs/plant.md)."
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser(
        "ingest", help="JetStream results -> PostgreSQL (durable consumer, exactly once per station:seq)"
    )
    _dsn_arg(p)
    _nats_args(p)
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

    p = sub.add_parser("web", help="the plant dashboard (same login and roles as the station)")
    _plant_args(p)
    p.add_argument("--users", default="data/plant_users.db", help="SQLite file of the dashboard's users and sessions")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.set_defaults(fn=cmd_web)

    p = sub.add_parser("promote", help="staged rollout of a model file: canary group first, automatic rollback")
    _plant_args(p)
    p.add_argument("--model", default=None, help="ONNX model file (uploaded and registered)")
    p.add_argument("--version", default=None, help="version name shown to the stations (with --model)")
    p.add_argument("--sha", default=None, help="or: sha256 (8+ digits) of a model in the central registry")
    p.add_argument("--groups", required=True, help="station groups in rollout order, e.g. canary,wave-1,wave-2")
    p.add_argument("--min-parts", type=int, default=200, help="parts per group under the new model before judging it")
    p.add_argument("--max-reject-rate", type=float, default=0.05)
    p.add_argument("--max-failsafe-rate", type=float, default=0.005)
    p.add_argument("--max-latency-ms", type=float, default=200.0, help="p95 latency limit")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds a group may take to show min-parts parts")
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("pin", help="run one station on a registered model, whatever its group's desired model")
    _nats_args(p)
    _dsn_arg(p)
    p.add_argument("--station", required=True, help="station name")
    p.add_argument("--model", required=True, help="sha256 (8+ digits) of a model in the central registry")
    p.set_defaults(fn=cmd_pin)

    p = sub.add_parser("unpin", help="a pinned station follows its group again")
    _nats_args(p)
    p.add_argument("--station", required=True, help="station name")
    p.set_defaults(fn=cmd_unpin)

    p = sub.add_parser("rollback", help="write a group's previous desired model back")
    _nats_args(p)
    p.add_argument("--group", required=True, help="station group")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("role", help="plant roles (quality_lead, plant_admin) of the dashboard's users")
    p.add_argument("action", choices=("grant", "revoke", "list"))
    p.add_argument("user", nargs="?", default="", help="user name (grant, revoke)")
    p.add_argument("role", nargs="?", default="plant_admin", choices=("quality_lead", "plant_admin"))
    p.add_argument("--users", default="data/plant_users.db", help="the dashboard's users file")
    p.set_defaults(fn=cmd_role)

    p = sub.add_parser("dataset", help="dataset snapshots across stations, from the plant's QA labels")
    p.add_argument("action", choices=("snapshot", "list"))
    _dsn_arg(p)
    _s3_args(p, endpoint="http://127.0.0.1:8333")
    p.add_argument("--stations", default="", help="comma-separated station names")
    p.add_argument("--since", type=_when, default=None, help="labels reviewed from this time (ISO; UTC if no zone)")
    p.add_argument("--until", type=_when, default=None, help="labels reviewed before this time (ISO)")
    p.add_argument("--name", default="", help="a name for people (the id is the content hash)")
    p.set_defaults(fn=cmd_dataset)

    p = sub.add_parser("train", help="train on this host from a central snapshot; register the ONNX model centrally")
    _dsn_arg(p)
    _s3_args(p)
    p.add_argument("--snapshot", required=True, help="dataset snapshot id (8+ digits)")
    p.add_argument("--host-name", required=True, help="this training host's name (recorded in the model's lineage)")
    p.add_argument("--work", default="data/plant_train", help="local folder for the dataset copy and the run")
    p.add_argument("--model", default="yolov8n.yaml", help="architecture .yaml (new) or parent .pt (fine-tune)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--imgsz", type=int, default=640, help="training and ONNX input size (multiple of 32)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of parts for validation (split by part)")
    p.add_argument("--version", default=None, help="version name (default: <snapshot name>-<sha256[:8]>)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("engines", help="start NATS, PostgreSQL and SeaweedFS on loopback (development)")
    p.add_argument("--dir", default=None, help="data folder (default: a new temporary one)")
    p.set_defaults(fn=cmd_engines)

    p = sub.add_parser("demo", help="engines + ingest + two synthetic stations, locally")
    p.add_argument("--parts", type=int, default=200, help="parts per station")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long at the latest")
    p.add_argument("--dir", default=None, help="data folder (default: a new temporary one)")
    p.set_defaults(fn=cmd_demo)

    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
