"""``plant demo``: the engines, the ingest, the dashboard and two synthetic stations, on this machine.

Everything on 127.0.0.1, in a temporary folder (or ``--dir``); stopped by
process id at the end. Prints the dashboard's URL (user ``admin``, password
printed once by the bootstrap) and the plant's counts while it runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from station import serialize

log = logging.getLogger("plant.demo")


def station_config(root: Path, name: str, line: str, group: str, engines: Any, ppm: float, seed: int) -> Any:
    """A synthetic-line station (reference inspector, no web) linked to the local plant."""
    from ..config import parse_config

    return parse_config(
        {
            "name": name,
            "cameras": [
                {"type": "synthetic", "id": "cam0", "width": 640, "height": 400, "defect_rate": 0.2, "seed": seed}
            ],
            "trigger": {"type": "timer", "parts_per_minute": ppm},
            "inspector": {"type": "reference", "learn_parts": 10},
            "store": {"db_path": str(root / name / "station.db"), "images_dir": str(root / name / "images")},
            "web": {"enabled": False},
            "plant": {
                "nats_url": engines.nats.url,
                "s3_endpoint": engines.s3.endpoint,
                "line": line,
                "group": group,
                "outbox_path": str(root / name / "plant_outbox.db"),
            },
        }
    )


def run_demo(*, parts: int = 200, seconds: float = 60.0, root: Path | None = None, ppm: float = 600.0) -> int:
    """Run the demo until each station decided ``parts`` parts or ``seconds`` passed; 0 when every result arrived.

    A temporary folder (no ``root``) is removed at the end.
    """
    temporary = root is None
    root = root or Path(tempfile.mkdtemp(prefix="plant-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    try:
        return _run(root, parts, seconds, ppm)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, parts: int, seconds: float, ppm: float) -> int:
    import psycopg

    from ..app import Station
    from ..config import WebConfig
    from ..store import plant_db
    from . import wire
    from .engines import Engines
    from .ingest import Ingest
    from .web import build_server
    from .web_state import PlantWebState

    with Engines(root / "engines") as e:
        ing = Ingest(e.pg.dsn, e.nats.url).start()
        state = PlantWebState(
            dsn=e.pg.dsn,
            users_db=root / "plant_users.db",
            s3=wire.s3_client(e.s3.endpoint, "plant", "plant"),
            bucket="plant",
            nats_url=e.nats.url,
            prefix="plant",
            cfg=WebConfig(port=0),
        )
        server, sock = build_server(state, "127.0.0.1", 0)
        web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        web.start()
        print(f"plant dashboard: http://127.0.0.1:{sock.getsockname()[1]}/  (user admin, password above)", flush=True)
        stations = [
            Station(station_config(root, n, line, g, e, ppm, seed), max_parts=parts)
            for n, line, g, seed in (("station-a", "line-1", "canary", 1), ("station-b", "line-2", "wave-1", 2))
        ]
        for st in stations:
            st.start()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end and not all(st.trigger_source_done() for st in stations):
                time.sleep(2.0)
                print(
                    serialize.dumps(
                        {
                            "decided": {st.cfg.name: st.counters.snapshot().verdicts for st in stations},
                            "ingested": ing.stats.written,
                        }
                    ),
                    flush=True,
                )
        finally:
            for st in stations:
                st.stop()
        decided = sum(st.counters.snapshot().verdicts for st in stations)
        sent_by = time.monotonic() + 30
        while ing.stats.written < decided and time.monotonic() < sent_by:
            time.sleep(0.2)
        ing.stop()
        with psycopg.connect(e.pg.dsn) as conn:
            summary = {
                "decided": decided,
                "ingested": ing.stats.written,
                "yield_by_line": plant_db.yield_by(conn, "line", *_all_time()),
            }
        print(serialize.dumps(summary, indent=2), flush=True)
        server.should_exit = True
        web.join(10)
        sock.close()
        state.close()
        return 0 if summary["ingested"] == decided else 1


def _all_time() -> tuple[Any, Any]:
    import datetime as dt

    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
