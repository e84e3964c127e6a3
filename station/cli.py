"""The ``station`` command: run, replay, check-config, config-schema."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from station import serialize

from .cli_common import refuse, setup_logging
from .config import ConfigError, FolderCameraConfig, StationConfig, config_hash, load_config

log = logging.getLogger("station")


def _load(path: str | None) -> StationConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise SystemExit(refuse(exc)) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print each error with its field path."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return refuse(exc)
    print(
        f"{args.config}: ok (config hash {config_hash(cfg)}; {len(cfg.cameras)} camera(s), inspector "
        f"{cfg.inspector.type})"
    )
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of the config (every field with its description)."""
    print(serialize.dumps(StationConfig.model_json_schema(), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the station until Ctrl-C (or ``--parts`` parts)."""
    from .app import Station

    cfg = _load(args.config)
    if args.port is not None:
        cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"port": args.port})})
    try:
        station = Station(cfg, max_parts=args.parts)
    except ValueError as e:  # rules that cannot judge the model (check_rules_for_model)
        return refuse(f"{args.config}: {e}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    station.on_failure(lambda _reason: stop.set())  # the watchdog gave up: stop, exit 1, systemd restarts
    station.start()
    try:
        if cfg.web.enabled and not args.no_web:
            from .web.server import serve

            serve(station, cfg.web, stop_event=stop)  # returns on Ctrl-C / SIGTERM / stop
        else:
            while not stop.is_set() and not station.trigger_source_done():
                stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        station.stop()
    snap = station.counters.snapshot()
    # "records": written / dropped / spilled at stop, said plainly (counters that add up can still mean records were
    # lost)
    print(
        serialize.dumps(
            {"counters": snap.as_dict(), "reconcile": station.reconcile(), "records": station.recorder.stop_report},
        )
    )
    if station.failure is not None:
        print(f"station stopped itself: {station.failure}", file=sys.stderr)
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Run the production inspect+decide path over a folder; one JSON line per image."""
    from dataclasses import replace

    from .acquire.base import CameraError
    from .acquire.folder import FolderCamera
    from .app import build_inspector, effective_calibration
    from .camera_setup import load_file, undistorters
    from .contracts import PartResult, Trigger
    from .decide import Decider, check_rules_for_model
    from .pipeline import inspect_part
    from .serialize import result_to_dict

    cfg = _load(args.config)
    camera_id = args.camera or cfg.cameras[0].id
    cam = FolderCamera(FolderCameraConfig(id=camera_id, path=Path(args.folder), loop=False, grayscale=not args.color))
    cam.open()
    inspector = build_inspector(cfg)
    try:
        check_rules_for_model(cfg.rules, getattr(inspector, "task", None), inspector.names)
    except ValueError as e:
        inspector.close()
        return refuse(f"{args.config}: {e}")
    inspector.warmup()
    setup = load_file(
        cfg.store.db_path, cfg.name, [c.id for c in cfg.cameras]
    )  # the line's calibrations and regions in force
    decider = Decider(cfg.rules, effective_calibration(cfg.calibration), config_hash(cfg), setup)
    undistort = undistorters(setup).get(camera_id) if cfg.calibration.undistort else None
    out = open(args.out, "w") if args.out != "-" else sys.stdout  # noqa: SIM115 - closed in the finally below
    counts: dict[str, int] = {}
    try:
        for i, path in enumerate(cam.files, start=1):
            trig = Trigger(
                part_id=i, seq=i, t_trigger_ns=time.monotonic_ns(), source="replay", t_trigger_wall=time.time()
            )
            try:
                frame = cam.grab(trig, timeout_s=5.0)
                if undistort is not None:
                    frame = replace(frame, image=undistort(frame.image))
            except (CameraError, ValueError) as exc:
                result = PartResult(trig, decider.failsafe(trig, f"camera: {exc}", inspector.model_id))
            else:
                result = inspect_part(inspector, decider, trig, [frame])
            row = result_to_dict(result)
            row["file"] = path.name
            row["anomaly_score"] = row["image_score"]  # no-labels backends: the image score (1.0 = at the threshold)
            out.write(serialize.dumps(row) + "\n")
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    finally:
        if out is not sys.stdout:
            out.close()
        cam.close()
        inspector.close()
    print(serialize.dumps({"images": sum(counts.values()), **counts}), file=sys.stderr)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """Manage web users in the station database (add, passwd, role, disable, enable, list)."""
    import getpass

    from .store.db import open_db
    from .web.auth import AuthError, create_user, list_users, set_disabled, set_password, set_role

    cfg = _load(args.config)
    db = open_db(cfg.store.db_path)

    def password() -> str:
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n")
        first = getpass.getpass(f"password for {args.name}: ")
        if first != getpass.getpass("again: "):
            raise AuthError("the two passwords differ")
        return first

    try:
        if args.action == "list":
            for u in list_users(db):
                print(f"{u['username']:20s} {u['role']:9s} {'disabled' if u.get('disabled') else ''}")
        elif args.action == "add":
            create_user(db, args.name, password(), args.role)
        elif args.action == "passwd":
            set_password(db, args.name, password())
        elif args.action == "role":
            set_role(db, args.name, args.role)
        elif args.action in ("disable", "enable"):
            set_disabled(db, args.name, args.action == "disable")
    except (AuthError, LookupError) as exc:
        return refuse(f"user {args.action}: {exc}")
    finally:
        db.close()
    if args.action != "list":
        print(f"user {args.name}: {args.action} done")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    p = argparse.ArgumentParser(prog="station", description="Vision inspection station")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the station (default config: synthetic line, web UI on 127.0.0.1:8000)")
    r.add_argument("-c", "--config", help="YAML config file (default: the embedded default)")
    r.add_argument("--parts", type=int, default=None, help="stop after this many parts")
    r.add_argument("--no-web", action="store_true", help="do not serve the web UI")
    r.add_argument("--port", type=int, default=None, help="override web.port")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="inspect a folder of images offline through the production path")
    rp.add_argument("folder", help="folder of images")
    rp.add_argument("--out", default="-", help="JSON-lines output file (default stdout)")
    rp.add_argument("-c", "--config", help="YAML config file (inspector and rules)")
    rp.add_argument("--color", action="store_true", help="load images as BGR instead of Mono8")
    rp.add_argument(
        "--camera",
        default=None,
        help="judge as this camera (its calibration and drawn regions in force; default: the config's first)",
    )
    rp.set_defaults(func=cmd_replay)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("config")
    c.set_defaults(func=cmd_check_config)

    u = sub.add_parser("user", help="manage web users (operator, qa, admin)")
    u.add_argument("action", choices=["add", "passwd", "role", "disable", "enable", "list"])
    u.add_argument("name", nargs="?", default="", help="user name (not for list)")
    u.add_argument("--role", choices=["operator", "qa", "admin"], default="operator")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    u.add_argument("-c", "--config", help="station config (for store.db_path)")
    u.set_defaults(func=cmd_user)

    s = sub.add_parser("config-schema", help="print the config JSON schema with every field's description")
    s.set_defaults(func=cmd_config_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``station`` command."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
