"""Security by default, for every route including those added later.

:class:`SecurityMiddleware` (pure ASGI, so it does not buffer the event stream):

- every non-GET request (except the login itself, which checks its own
  double-submit token) must come with a valid session cookie (else 401) and
  that session's CSRF token in ``X-CSRF-Token`` (else 403), before any route
  code runs. Routes then add their role with ``Depends(require(role))``;
- every response gets a strict Content-Security-Policy (no inline script, no
  third-party origin: nothing is fetched from the internet), no framing,
  no MIME sniffing, no referrer, and ``Cache-Control: no-store`` unless the
  route set its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, Session, csrf_ok, get_session

if TYPE_CHECKING:
    from .state import WebState

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
CSRF_EXEMPT = frozenset({"/api/login"})  # checks a double-submit token itself (there is no session yet)


class SecurityMiddleware:
    """Login + CSRF on every write, security headers on every response."""

    def __init__(self, app: ASGIApp, state: WebState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    if k not in headers:
                        headers[k] = v
                if "cache-control" not in headers:
                    # assets may be kept but revalidated (ETag); everything else is live data
                    asset = scope["path"].startswith(("/static/", "/vendor/"))
                    headers["cache-control"] = "no-cache" if asset else "no-store"
            await send(message)

        if scope["method"] not in SAFE_METHODS and scope["path"] not in CSRF_EXEMPT:
            headers = Headers(scope=scope)
            token = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
            session = None
            if token:
                session = await anyio.to_thread.run_sync(self._lookup, token)
            if session is None:
                await JSONResponse({"detail": "login required (POST /api/login)"}, 401)(
                    scope, receive, send_with_headers
                )
                return
            if not csrf_ok(session.csrf, headers.get(CSRF_HEADER)):
                log.warning(
                    "refused %s %s by %s: missing or wrong CSRF token",
                    scope["method"],
                    scope["path"],
                    session.user.username,
                )
                await JSONResponse(
                    {"detail": f"missing or wrong {CSRF_HEADER} header (read the token from GET /api/me)"}, 403
                )(scope, receive, send_with_headers)
                return
            scope.setdefault("state", {})["session"] = session  # the route's require() reuses it
        await self.app(scope, receive, send_with_headers)

    def _lookup(self, token: str) -> Session | None:
        with self.state.db.use() as db:
            return get_session(db, token)
