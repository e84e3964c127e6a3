"""Login, logout, the current user, password change and user administration."""

from __future__ import annotations

import logging
import math
import re
import secrets
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..store import audit
from . import auth
from .auth import (
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AdminSession,
    AuthError,
    OperatorSession,
    Session,
    client_address,
    csrf_ok,
    session_of,
)
from .pages import templates
from .state import StateDep, web_state

log = logging.getLogger(__name__)
router = APIRouter()
_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9/_.-]*$")
MAX_LOGIN_BODY = 16 * 1024


class LoginBody(BaseModel):
    """JSON login."""

    username: str = Field(..., min_length=1, max_length=64, description="User name.")
    password: str = Field(..., min_length=1, max_length=auth.MAX_PASSWORD_LEN, description="Password.")


class PasswordChange(BaseModel):
    """Change one's own password."""

    old_password: str = Field(..., min_length=1, max_length=auth.MAX_PASSWORD_LEN, description="Current password.")
    new_password: str = Field(
        ..., min_length=auth.MIN_PASSWORD_LEN, max_length=auth.MAX_PASSWORD_LEN, description="New password."
    )


class NewUser(BaseModel):
    """A user to create (admin only)."""

    username: str = Field(
        ..., min_length=1, max_length=64, description="User name: letters, digits, '_', '.', '@', '-'."
    )
    password: str = Field(
        ..., min_length=auth.MIN_PASSWORD_LEN, max_length=auth.MAX_PASSWORD_LEN, description="Initial password."
    )
    role: Literal["operator", "qa", "admin"] = Field(..., description="operator < qa < admin.")


def secure_cookie(request: Request) -> bool:
    """Whether cookies get the Secure flag (web.cookie_secure; auto = the request came over https)."""
    mode = web_state(request).cfg.cookie_secure
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def _cookie(request: Request) -> dict[str, Any]:
    """What every station cookie is: for the whole site, out of scripts' reach, same site only, Secure over HTTPS."""
    return {"path": "/", "httponly": True, "samesite": "strict", "secure": secure_cookie(request)}


def _set_session_cookie(request: Request, response: Response, token: str, ttl_s: float) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ttl_s), **_cookie(request))


def _login_token(request: Request) -> str:
    """The pre-login double-submit token: the cookie's if it has one, else a new one."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    return token if token and len(token) <= 128 else secrets.token_urlsafe(24)


def _set_login_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie(request))


def _safe_next(nxt: str | None) -> str:
    return nxt if nxt and _LOCAL_PATH.match(nxt) and not nxt.startswith("//") else "/"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, state: StateDep, next: str = "/") -> Response:  # noqa: A002 - the query parameter is called next
    """The login form (works without JavaScript too)."""
    token = _login_token(request)
    resp = templates.TemplateResponse(
        request,
        "login.html",
        {"station": state.station.cfg.name, "csrf": token, "error": "", "next": _safe_next(next)},
    )
    _set_login_cookie(request, resp, token)
    return resp


@router.get("/api/login", summary="Get the login CSRF token")
def login_token(request: Request) -> JSONResponse:
    """Sets the pre-login cookie and returns its token: send it back as X-CSRF-Token with POST /api/login."""
    token = _login_token(request)
    resp = JSONResponse({"csrf": token})
    _set_login_cookie(request, resp, token)
    return resp


@router.post("/api/login", summary="Log in (JSON or form)")
async def login(request: Request, state: StateDep) -> Response:
    """JSON ``{username, password}`` with the X-CSRF-Token header, or a form with ``csrf_token``.

    Success: a session cookie (HttpOnly, SameSite=Strict) and ``{username, role, csrf}``
    (the form gets a 303 redirect instead). 401 wrong credentials, 403 missing
    login token, 429 too many failures (Retry-After says when to retry).
    """
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > MAX_LOGIN_BODY:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"send a login body with Content-Length of at most {MAX_LOGIN_BODY} bytes",
        )
    ctype = request.headers.get("content-type", "")
    is_form = ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data")
    if is_form:
        form = await request.form(max_files=0, max_fields=8)
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        given, nxt = (
            str(form.get("csrf_token", "")) or request.headers.get(CSRF_HEADER),
            _safe_next(str(form.get("next", "/"))),
        )
    else:
        try:
            body = LoginBody.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY, f"send JSON {{username, password}} or a form ({problems})"
            ) from None
        username, password, given, nxt = body.username, body.password, request.headers.get(CSRF_HEADER), "/"
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), given):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "missing or wrong login token: GET /login or /api/login first, send it as X-CSRF-Token",
        )
    username = username[:64]
    client = client_address(request)
    wait = state.limiter.retry_after(username, client)
    if wait > 0:
        log.warning("login of %r from %s refused: too many failures", username, client)
        return JSONResponse(
            {"detail": f"too many failed logins; retry in {math.ceil(wait)} s"},
            429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    result = await run_in_threadpool(_check_login, state, username, password)
    if result is None:
        state.limiter.failed(username, client)
        await run_in_threadpool(_audit, state, username, "login_failed", f"from {client}")
        if is_form:
            return templates.TemplateResponse(
                request,
                "login.html",
                {
                    "station": state.station.cfg.name,
                    "csrf": given or "",
                    "next": nxt,
                    "error": "Wrong username or password.",
                },
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        return JSONResponse({"detail": "wrong username or password"}, 401)
    state.limiter.succeeded(username, client)
    token, session = result
    await run_in_threadpool(_audit, state, username, "login", f"from {client}")
    ttl_s = state.cfg.session_hours * 3600
    resp = RedirectResponse(nxt, status.HTTP_303_SEE_OTHER) if is_form else JSONResponse(_me(session))
    _set_session_cookie(request, resp, token, ttl_s)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, **_cookie(request))
    return resp


def _check_login(state: Any, username: str, password: str) -> tuple[str, Session] | None:
    with state.db.use() as db:
        creds = auth.fetch_credentials(db, username)
    user, needs_rehash = auth.check_password(creds, username, password)  # slow: outside the DB lock
    if user is None:
        return None
    with state.db.use() as db:
        if needs_rehash:
            auth.rehash(db, username, password)
        return auth.new_session(db, user, state.cfg.session_hours * 3600)


def _audit(state: Any, user: str, action: str, reason: str | None) -> None:
    with state.db.use() as db:
        audit.record(db, user, action, "session", reason=reason)


def _me(s: Session) -> dict[str, Any]:
    return {"username": s.user.username, "role": s.user.role, "csrf": s.csrf, "expires_at": s.expires_at}


@router.post("/api/logout", summary="Log out")
def logout(request: Request, state: StateDep, session: OperatorSession) -> JSONResponse:
    """End the current session and clear its cookie."""
    with state.db.use() as db:
        auth.end_session(db, session)
        audit.record(db, session.user.username, "logout", "session")
    resp = JSONResponse({"ok": True})
    resp.delete_cookie(SESSION_COOKIE, **_cookie(request))
    return resp


@router.get("/api/me", summary="The logged-in user and the CSRF token")
def me(request: Request) -> dict[str, Any]:
    """``{username, role, csrf, expires_at}``; 401 when not logged in. Send ``csrf`` as X-CSRF-Token on every write."""
    s = session_of(request)
    if s is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not logged in")
    return _me(s)


@router.post("/api/me/password", summary="Change your own password")
def change_password(request: Request, state: StateDep, session: OperatorSession, body: PasswordChange) -> JSONResponse:
    """Needs the current password; every session of the user ends and a new one is returned."""
    name, client = session.user.username, client_address(request)
    wait = state.limiter.retry_after(name, client)
    if wait > 0:
        return JSONResponse(
            {"detail": f"too many failed attempts; retry in {math.ceil(wait)} s"},
            429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    with state.db.use() as db:
        creds = auth.fetch_credentials(db, name)
    user, _ = auth.check_password(creds, name, body.old_password)
    if user is None:
        state.limiter.failed(name, client)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
    try:
        with state.db.use() as db:
            auth.set_password(db, name, body.new_password)
            token, new = auth.new_session(db, user, state.cfg.session_hours * 3600)
            audit.record(db, name, "password_change", "user", name)
    except AuthError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    resp = JSONResponse(_me(new))
    _set_session_cookie(request, resp, token, state.cfg.session_hours * 3600)
    return resp


@router.get("/api/users", summary="List users (admin)")
def users(state: StateDep, session: AdminSession) -> list[dict[str, Any]]:
    """Every user with role and state; never a password hash."""
    with state.db.use() as db:
        return auth.list_users(db)


@router.post("/api/users", status_code=201, summary="Create a user (admin)")
def add_user(state: StateDep, session: AdminSession, body: NewUser) -> dict[str, Any]:
    """409 if the name is taken, 400 if the name or password is refused."""
    with state.db.use() as db:
        try:
            user = auth.create_user(db, body.username, body.password, body.role)
        except auth.UserExists as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except AuthError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        audit.record(db, session.user.username, "user_create", "user", user.username, after={"role": user.role})
    return {"username": user.username, "role": user.role}
