"""HTML pages from station/web/templates, rendered by Jinja2 through Starlette's ``Jinja2Templates``.

Autoescape is on for every template (whatever its file name), and a name the template uses but the
route does not pass is an error (``StrictUndefined``), so a typo cannot ship an empty hole.
Templates build on two layouts with ``{% extends %}`` and ``{% block %}``: ``doc.html`` is the HTML
document (blocks ``title``, ``head``, ``body_attrs``, ``body``); ``desk.html`` puts the QA desk's header
and navigation on it (a desk page fills ``page_title``, ``page_head``, ``body_attrs``, ``content``).
No template has inline script: the CSP allows scripts from 'self' only (station/web/security.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from .auth import Session, session_of
from .state import web_state

TEMPLATES = Path(__file__).parent / "templates"
DESK_ROLE = "qa"

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
)


def _who(request: Request, s: Session) -> dict[str, str]:
    """The values every page with a logged-in user shows: the station's name, the user and their role."""
    return {"station": web_state(request).station.cfg.name, "user": s.user.username, "role": s.user.role}


def denied(request: Request, s: Session, *, area: str, needed: str, why: str = "") -> Response:
    """403 with templates/denied.html: ``area`` needs the role ``needed`` (and ``why``, when given)."""
    return templates.TemplateResponse(
        request,
        "denied.html",
        {
            **_who(request, s),
            "area": area,
            "needed": needed,
            "why": why,
            "next": request.url.path,
        },
        status_code=status.HTTP_403_FORBIDDEN,
    )


def desk_page(request: Request, template: str, *, nav: str, area: str, why: str = "", **values: Any) -> Response:
    """A page of the QA desk (review queue, editor, dataset, statistics, models) in the layout templates/desk.html.

    Not logged in: 303 to the login page, back here after. Logged in below role qa: 403 with
    templates/denied.html, which says that ``area`` needs the role (and ``why``, when given).
    ``nav`` is the header link marked as the current page (models, review, dataset or stats).
    """
    s = session_of(request)
    if s is None:
        return RedirectResponse(f"/login?next={request.url.path}", status.HTTP_303_SEE_OTHER)
    if not s.user.has(DESK_ROLE):
        return denied(request, s, area=area, needed=DESK_ROLE, why=why)
    return templates.TemplateResponse(request, template, {**_who(request, s), "nav": nav, **values})
