"""Users, roles, login sessions, CSRF and the failed-login limit.

Storage is the station database (tables ``users`` and ``sessions``, created by
:mod:`station.store.migrations`). Passwords are hashed with argon2id
(argon2-cffi). A session is a random token held by the browser in an HttpOnly
cookie; only its SHA-256 is stored, so a copy of the database does not let
anyone log in. Each session has its own CSRF token, which the browser reads
from ``GET /api/me`` and sends back in the ``X-CSRF-Token`` header of every
non-GET request.

Roles are ordered: operator < qa < admin; a route that needs ``operator``
accepts every role above it.

The functions taking a ``db`` (``create_user``, ``set_password``, ...) are also
what the ``station user`` CLI calls.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request, status

from ..store import users as user_rows

if TYPE_CHECKING:
    from .state import WebState

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("operator", "qa", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
SESSION_COOKIE = "station_session"
LOGIN_CSRF_COOKIE = "station_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 1024
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_hasher = PasswordHasher()
_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


class AuthError(ValueError):
    """A user operation was refused; the message says why and what to do."""


class UserExists(AuthError):
    """The user name is taken."""


@dataclass(frozen=True)
class User:
    """A user as the web app sees it (never carries the password hash)."""

    username: str
    role: str

    def has(self, role: str) -> bool:
        """True when this user's role is ``role`` or above."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class Session:
    """A valid login session."""

    user: User
    csrf: str
    expires_at: float
    token_hash: str


# -- passwords and users -----------------------------------------------------
def hash_password(password: str) -> str:
    """argon2id hash of ``password`` (checked for length first)."""
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    """Raise AuthError when ``password`` is too short or too long."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LEN:
        raise AuthError(f"password too short: use at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise AuthError(f"password too long: at most {MAX_PASSWORD_LEN} characters")


def _check_username(name: str) -> str:
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise AuthError(f"invalid username {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    return name


def _check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise AuthError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def create_user(db: sqlite_utils.Database, name: str, password: str, role: str) -> User:
    """Add a user with ``role`` (operator, qa or admin); AuthError if the name is taken or invalid."""
    _check_username(name)
    _check_role(role)
    pw_hash = hash_password(password)
    if not user_rows.add_user(db, name, pw_hash, role, time.time()):
        raise UserExists(f"user {name!r} already exists: use set_password (station user passwd) to change its password")
    log.info("user %s created with role %s", name, role)
    return User(name, role)


def set_password(db: sqlite_utils.Database, name: str, password: str) -> None:
    """Change a user's password and end all of that user's sessions; AuthError if unknown."""
    pw_hash = hash_password(password)
    if not user_rows.update_user(db, name, password_hash=pw_hash, end_sessions=True):
        raise AuthError(f"no user {name!r}: create it first (station user add)")
    log.info("password of %s changed; its sessions ended", name)


def set_role(db: sqlite_utils.Database, name: str, role: str) -> None:
    """Change a user's role and end that user's sessions; AuthError if unknown."""
    _check_role(role)
    if not user_rows.update_user(db, name, role=role, end_sessions=True):
        raise AuthError(f"no user {name!r}")


def set_disabled(db: sqlite_utils.Database, name: str, disabled: bool = True) -> None:
    """Disable (or re-enable) a user; disabling ends the user's sessions."""
    if not user_rows.update_user(db, name, disabled=1 if disabled else 0, end_sessions=disabled):
        raise AuthError(f"no user {name!r}")


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every user: username, role, created_at, disabled (no hashes)."""
    return user_rows.list_users(db)


def _dummy() -> str:
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        return _dummy_hash


def fetch_credentials(db: sqlite_utils.Database, name: str) -> tuple[str, str, bool] | None:
    """(password_hash, role, disabled) of user ``name``, or None. Quick: no hashing."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    return user_rows.credentials(db, name)


def check_password(creds: tuple[str, str, bool] | None, name: str, password: str) -> tuple[User | None, bool]:
    """Verify ``password`` against ``creds`` from :func:`fetch_credentials`: (user or None, needs rehash).

    Slow on purpose (argon2), so call it without holding a database lock. An
    unknown user costs the same verification as a known one, so the response
    time does not tell which usernames exist.
    """
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LEN:
        return None, False
    stored = creds[0] if creds else _dummy()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None, False
    if creds is None or creds[2] or creds[1] not in ROLE_RANK:
        return None, False
    return User(name, creds[1]), _hasher.check_needs_rehash(stored)


def rehash(db: sqlite_utils.Database, name: str, password: str) -> None:
    """Store a fresh hash of a verified password (after the hashing parameters changed)."""
    user_rows.update_user(db, name, password_hash=_hasher.hash(password))


def verify_user(db: sqlite_utils.Database, name: str, password: str) -> User | None:
    """The user if ``password`` is right and the user is enabled, else None (rehashes old hashes)."""
    user, needs_rehash = check_password(fetch_credentials(db, name), name, password)
    if user is not None and needs_rehash:
        rehash(db, name, password)
    return user


def ensure_admin(db: sqlite_utils.Database, announce: Any = print) -> str | None:
    """First start: when no enabled admin exists, create ``admin`` with a random password.

    The password is given ONCE to ``announce`` (stdout by default) and logged
    as a warning without the password; it is never stored in clear. Returns
    the password, or None when an admin already exists.
    """
    if user_rows.has_enabled_admin(db):
        return None
    if user_rows.user_exists(db, "admin"):
        log.error(
            "no enabled admin user, and user 'admin' exists with another role or disabled: "
            "add one with `station user add NAME --role admin`"
        )
        return None
    password = secrets.token_urlsafe(15)
    try:
        create_user(db, "admin", password, "admin")
    except AuthError:  # another process created it between the check and the insert
        return None
    announce(
        "\n*** First start: created web user 'admin' with password: " + password + "\n"
        "*** It is shown only this once. Log in and change it (or: station user passwd admin).\n",
    )
    log.warning("created the first admin user 'admin'; its password was printed once on stdout")
    return password


# -- sessions -----------------------------------------------------------------
def token_hash(token: str) -> str:
    """What is stored for a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(db: sqlite_utils.Database, user: User, ttl_s: float) -> tuple[str, Session]:
    """Start a session; returns (the token for the cookie, the session). Expired sessions are purged."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    s = Session(user, secrets.token_urlsafe(32), now + ttl_s, token_hash(token))
    user_rows.start_session(db, s.token_hash, user.username, now, s.expires_at, s.csrf)
    return token, s


def get_session(db: sqlite_utils.Database, token: str | None) -> Session | None:
    """The live session of ``token`` (None if unknown, expired or the user is disabled)."""
    if not token or len(token) > 256:
        return None
    th = token_hash(token)
    row = user_rows.live_session(db, th, time.time())
    if row is None or row[1] not in ROLE_RANK:
        return None
    return Session(User(row[0], row[1]), row[2], row[3], th)


def end_session(db: sqlite_utils.Database, session: Session) -> None:
    """Log out: delete the session."""
    user_rows.end_session(db, session.token_hash)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens (False if either is missing)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# -- failed-login limit ---------------------------------------------------------
class LoginLimiter:
    """At most ``max_failures`` failed logins per key within ``window_s`` (sliding window).

    Keys are (username, client address) and, with a higher limit, the client
    address alone (one client trying many usernames). Memory stays bounded:
    old keys are pruned.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, max_keys: int = 10000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._fails: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, username: str, client: str) -> Iterable[tuple[tuple[str, ...], int]]:
        yield ("u", username.lower()[:64], client), self.max_failures
        yield ("c", client), self.max_failures * 4

    def retry_after(self, username: str, client: str, now: float | None = None) -> float:
        """Seconds until this username+client may try again (0 = allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key, limit in self._keys(username, client):
                q = self._fails.get(key)
                if not q:
                    continue
                while q and q[0] <= now - self.window_s:
                    q.popleft()
                if len(q) >= limit:
                    wait = max(wait, q[0] + self.window_s - now)
        return wait

    def failed(self, username: str, client: str, now: float | None = None) -> None:
        """Record one failed login."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._fails) >= self.max_keys:
                self._prune(now)
            for key, _ in self._keys(username, client):
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, client: str) -> None:
        """A good login clears that username+client's failures (not the client-wide ones)."""
        with self._lock:
            self._fails.pop(next(iter(self._keys(username, client)))[0], None)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
            del self._fails[key]
        while len(self._fails) >= self.max_keys:  # still full of live keys: forget the oldest
            del self._fails[next(iter(self._fails))]


# -- FastAPI dependencies ----------------------------------------------------------
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _web(request: Request) -> WebState:
    from .state import web_state  # here, not at the top: state.py imports this module

    return web_state(request)


def session_of(request: Request) -> Session | None:
    """The request's login session, looked up once per request (None when not logged in)."""
    st = request.scope.setdefault("state", {})
    if "session" not in st:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            st["session"] = None
        else:
            with _web(request).db.use() as db:
                st["session"] = get_session(db, token)
    session: Session | None = st["session"]
    return session


def check_csrf(request: Request, session: Session) -> None:
    """403 unless a non-GET request carries the session's CSRF token in X-CSRF-Token."""
    if request.method not in SAFE_METHODS and not csrf_ok(session.csrf, request.headers.get(CSRF_HEADER)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header (read the token from GET /api/me)"
        )


def require(role: str) -> Callable[[Request], Session]:
    """A route dependency: a logged-in user with ``role`` or above, and the CSRF token on writes.

    401 without a valid session, 403 with a wrong/missing CSRF token or a lower role.
    """
    _check_role(role)

    def dependency(request: Request) -> Session:
        s = session_of(request)
        if s is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required (POST /api/login)")
        check_csrf(request, s)
        if not s.user.has(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs role {role} or above; you are {s.user.role}")
        return s

    dependency.required_role = role  # type: ignore[attr-defined]  # read by tests that audit every write route
    dependency.__name__ = f"require_{role}"
    return dependency


def viewer(request: Request) -> Session | None:
    """A route dependency for read-only live views: anyone when ``web.anonymous_view``, else a login."""
    if _web(request).cfg.anonymous_view:
        return None
    s = session_of(request)
    if s is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required (web.anonymous_view is off)")
    return s


# The routes' typed dependencies (``session: QaSession``): who is asking, checked as above.
ViewerSession = Annotated[Session | None, Depends(viewer)]
OperatorSession = Annotated[Session, Depends(require("operator"))]
QaSession = Annotated[Session, Depends(require("qa"))]
AdminSession = Annotated[Session, Depends(require("admin"))]


def client_address(request: Request) -> str:
    """The client's address for rate limiting (set by uvicorn; proxies only when trusted)."""
    return request.client.host if request.client else "unknown"
