"""Running the web app with uvicorn: in the calling thread (``station run``) or in a thread (tests)."""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

import uvicorn

from ..config import WebConfig
from .app import create_app

if TYPE_CHECKING:
    from ..app import Station

log = logging.getLogger(__name__)


def build_server(station: Station, web_cfg: WebConfig) -> uvicorn.Server:
    """A uvicorn server for ``create_app(station)`` (not started)."""
    app = create_app(station, web_cfg)
    tls = web_cfg.ssl_certfile is not None
    config = uvicorn.Config(
        app,
        host=web_cfg.host,
        port=web_cfg.port,
        log_level="info",
        access_log=web_cfg.access_log,
        proxy_headers=True,  # X-Forwarded-* only from forwarded_allow_ips (default: 127.0.0.1)
        server_header=False,
        timeout_graceful_shutdown=2,  # live event streams never end by themselves
        ssl_certfile=str(web_cfg.ssl_certfile) if tls else None,
        ssl_keyfile=str(web_cfg.ssl_keyfile) if tls else None,
    )
    return uvicorn.Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"web: cannot listen on {host}:{port} ({exc}); change web.port or stop the other server"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(station: Station, web_cfg: WebConfig, stop_event: threading.Event | None = None) -> None:
    """Serve the web app in the calling thread until Ctrl-C, SIGTERM or ``stop_event`` is set."""
    server = build_server(station, web_cfg)
    sock = bind(web_cfg.host, web_cfg.port)
    scheme = "https" if web_cfg.ssl_certfile else "http"
    log.info("operator screen on %s://%s:%d/", scheme, web_cfg.host, sock.getsockname()[1])
    watcher = None
    if stop_event is not None:

        def watch() -> None:
            stop_event.wait()
            server.should_exit = True

        watcher = threading.Thread(target=watch, name="web-stop", daemon=True)
        watcher.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if stop_event is not None:
            stop_event.set()  # also ends the watcher when uvicorn stopped on its own (Ctrl-C)


def start_in_thread(
    station: Station, web_cfg: WebConfig, timeout_s: float = 10.0
) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Start the server in a daemon thread; returns (server, thread, port) once it accepts connections.

    Stop it with ``server.should_exit = True; thread.join()``.
    """
    server = build_server(station, web_cfg)
    server.config.log_level = "warning"
    sock = bind(web_cfg.host, web_cfg.port)
    port = int(sock.getsockname()[1])

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"web-{port}", daemon=True)
    thread.start()
    ready = threading.Event()
    deadline = timeout_s
    while not server.started and thread.is_alive() and deadline > 0:
        ready.wait(0.02)
        deadline -= 0.02
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"web server did not start on {web_cfg.host}:{port} within {timeout_s} s (see the log)")
    return server, thread, port
