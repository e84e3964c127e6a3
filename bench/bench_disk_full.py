"""The disk-full run of issue 12, repeated: the default station on a small tmpfs data disk.

Mounts a tmpfs of ``--size-mb`` (needs root), writes a config that is the embedded
default except: database and images on that disk, ``keep_pass_every: 1``, a timer
trigger at ``--rate`` parts/min, web off, and (``--spill DIR``) ``store.spill_path``
on another disk. Runs ``station run -c cfg.yaml`` for ``--seconds``, stops it with
SIGTERM (``--fill-at S``: from S seconds on another program keeps the disk full to
the last byte, taking whatever the image sweeps give back), and reads its stop summary (the last stdout line) and the
database. With a
spill file it then restarts the station on the same disk for ``--restart-parts``
parts and counts the records replayed from the spill file. Unmounts at the end.

Prints: verdicts, rejects fired, records written / dropped / spilled / pending at
stop, the rows in the database, whether the counters reconcile, what the stop
summary and the recorder's stop line say, and, after the restart, how many records
were replayed and whether every verdict of the first run is then in the database.

Usage: sudo python bench/bench_disk_full.py [--size-mb 25] [--rate 600] [--seconds 75]
       [--spill /tmp/spill-dir] [--mount /mnt/soakdisk] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

STATION = [sys.executable, "-m", "station"]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def fill(path: Path) -> int:
    """Another program fills the disk: write ``path`` until the disk is full; bytes written."""
    n = 0
    block = b"\0" * (1 << 16)
    try:
        with open(path, "ab", buffering=0) as f:
            while True:
                n += f.write(block)
    except OSError:
        pass
    return n


def run_station(
    cfg_path: Path, seconds: float | None, parts: int | None, log_path: Path, filler: tuple[float, Path] | None = None
) -> dict[str, Any]:
    """``station run`` for ``seconds`` (then SIGTERM) or ``parts``; its stop summary and log."""
    cmd = [*STATION, "run", "-c", str(cfg_path), "--no-web"] + (["--parts", str(parts)] if parts else [])
    filled = 0
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        t0 = time.monotonic()
        if filler is not None and seconds is not None:
            try:
                p.wait(filler[0])
            except subprocess.TimeoutExpired:
                end = t0 + (seconds or 0)
                while time.monotonic() < end and p.poll() is None:  # takes every byte the image sweeps give back
                    filled += fill(filler[1])
                    time.sleep(0.05)
        if seconds is not None:
            seconds = max(0.0, seconds - (time.monotonic() - t0))
            try:
                p.wait(seconds)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=300)
        ran = time.monotonic() - t0
    summary: dict[str, Any] = {}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    text = log_path.read_text()
    stop_lines = [
        ln.split(": ", 1)[-1] for ln in text.splitlines() if "recorder stopped" in ln or "station stopped itself" in ln
    ]
    replay = [ln.split(": ", 1)[-1] for ln in text.splitlines() if "spill file" in ln]
    m = re.findall(r"replayed: (\d+) records written", text)
    return {
        "rc": p.returncode,
        "filler_mb": round(filled / 1e6, 2),
        "ran_s": round(ran, 1),
        "summary": summary,
        "stop_log": stop_lines,
        "replay_log": replay,
        "replayed": sum(int(x) for x in m),
        "log": str(log_path),
    }


def db_rows(db: Path) -> int | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM inspections").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def failsafe_reasons(db: Path) -> dict[str, int]:
    """FAILSAFE rows per first reason (numbers replaced by N)."""
    out: dict[str, int] = {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for reasons, n in con.execute(
                "SELECT reasons, count(*) FROM inspections WHERE outcome = 'FAILSAFE' GROUP BY reasons"
            ):
                k = re.sub(r"\d+(\.\d+)?", "N", str((json.loads(reasons) or [""])[0]))
                out[k] = out.get(k, 0) + n
        finally:
            con.close()
    except sqlite3.Error:
        pass
    return out


def one_run(args: argparse.Namespace, spill: Path | None, work: Path) -> dict[str, Any]:
    """Mount the disk, run, (restart with the spill file), unmount."""
    mnt = Path(args.mount)
    mnt.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={args.size_mb:g}m", "tmpfs", str(mnt))
    try:
        db = mnt / "data" / "station.db"
        cfg: dict[str, Any] = {
            "trigger": {"type": "timer", "parts_per_minute": args.rate},
            "store": {"db_path": str(db), "images_dir": str(mnt / "data" / "images"), "keep_pass_every": 1},
            "web": {"enabled": False},
        }
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)
            (spill / "spill.jsonl").unlink(missing_ok=True)
            cfg["store"]["spill_path"] = str(spill / "spill.jsonl")
        tag = "spill" if spill is not None else "nospill"
        cfg_path = work / f"disk_full_{tag}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        filler = (args.fill_at, mnt / "filler.bin") if args.fill_at is not None else None
        if filler is not None:
            tag += "_filled"
        first = run_station(cfg_path, args.seconds, None, work / f"disk_full_{tag}.log", filler)
        st = os.statvfs(mnt)
        first["disk_free_mb_after"] = round(st.f_bavail * st.f_frsize / 1e6, 2)
        first["db_rows"] = db_rows(db)
        first["failsafe_reasons"] = failsafe_reasons(db)
        first["spill_lines"] = (
            len((spill / "spill.jsonl").read_bytes().splitlines())
            if spill is not None and (spill / "spill.jsonl").exists()
            else 0
        )
        res: dict[str, Any] = {"spill_path": cfg["store"].get("spill_path"), "run": first}
        if spill is not None:
            if filler is not None:
                filler[1].unlink()  # the operator frees the disk, then restarts
            again = run_station(cfg_path, None, args.restart_parts, work / f"disk_full_{tag}_restart.log")
            again["db_rows"] = db_rows(db)
            again["spill_left"] = (spill / "spill.jsonl").exists()
            res["restart"] = again
        return res
    finally:
        sh("umount", str(mnt))


def brief(r: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run's stop summary."""
    s = r["summary"]
    c = s.get("counters", {})
    rec = s.get("records") or {}
    return {
        "verdicts": c.get("verdicts"),
        "PASS": c.get("PASS"),
        "FAIL": c.get("FAIL"),
        "UNCERTAIN": c.get("UNCERTAIN"),
        "FAILSAFE": c.get("FAILSAFE"),
        "dropped_parts": c.get("dropped"),
        "rejects_scheduled": c.get("rejects_scheduled"),
        "rejects_fired": c.get("rejects_fired"),
        "records_written": c.get("records_written"),
        "records_dropped": c.get("records_dropped"),
        "spilled": rec.get("spilled"),
        "pending": rec.get("pending"),
        "lost_at_stop": rec.get("lost_at_stop"),
        "db_rows": r.get("db_rows"),
        "reconcile": s.get("reconcile"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=25)
    ap.add_argument("--rate", type=float, default=600, help="parts per minute")
    ap.add_argument("--seconds", type=float, default=75)
    ap.add_argument("--mount", default="/mnt/soakdisk")
    ap.add_argument(
        "--spill", type=Path, default=None, help="also run with store.spill_path in this folder (another disk)"
    )
    ap.add_argument("--only-spill", action="store_true", help="skip the run without a spill file")
    ap.add_argument(
        "--fill-at",
        type=float,
        default=None,
        help="from this many seconds on another program keeps the disk full (its file is removed before the restart)",
    )
    ap.add_argument("--restart-parts", type=int, default=20, help="parts of the restart that replays the spill file")
    ap.add_argument("--work", type=Path, default=None, help="configs and logs go here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="disk-full-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "size_mb": a.size_mb,
        "rate_per_min": a.rate,
        "seconds": a.seconds,
        "work": str(work),
        "runs": {},
    }
    if not a.only_spill:
        out["runs"]["without_spill"] = one_run(a, None, work)
    if a.spill is not None:
        out["runs"]["with_spill"] = one_run(a, a.spill, work)
    if a.json:
        print(json.dumps(out))
        return
    for name, r in out["runs"].items():
        b = brief(r["run"])
        print(f"{name}: {json.dumps(b)}")
        print(f"  stop log: {r['run']['stop_log']}")
        print(
            f"  disk free after: {r['run']['disk_free_mb_after']} MB (filler {r['run']['filler_mb']} MB); "
            f"spill lines: {r['run']['spill_lines']}; FAILSAFE rows: {r['run']['failsafe_reasons']}"
        )
        if "restart" in r:
            rr = r["restart"]
            print(
                f"  restart: replayed {rr['replayed']}, rows now {rr['db_rows']}, spill file left: {rr['spill_left']}; "
                f"{rr['replay_log']}"
            )
            print(f"  restart summary: {json.dumps(brief(rr))}")


if __name__ == "__main__":
    main()
