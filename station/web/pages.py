"""HTML pages from station/web/templates: plain files with a few ``{{name}}`` slots, HTML-escaped.

A template may build on a layout: its first line is ``{{#extends layout.html}}`` and the rest is
``{{#block name}}...{{/block}}`` sections, each put where the layout has the hole ``{{>name}}``
(a layout may itself extend another layout and pass a hole on by writing it inside its block). The
pieces are joined first and the ``{{name}}`` slots filled after, so a block's slots are escaped like
any other. A hole no block fills stays empty; a block with no hole is an error, like a slot with no value.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from fastapi import Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .auth import session_of

TEMPLATES = Path(__file__).parent / "templates"
_SLOT = re.compile(r"\{\{(\w+)\}\}")
_EXTENDS = re.compile(r"\A\{\{#extends ([\w.-]+)\}\}\n")
_BLOCK = re.compile(r"\{\{#block (\w+)\}\}\n?(.*?)\n?\{\{/block\}\}", re.S)
_HOLE = re.compile(r"\{\{>(\w+)\}\}")

DESK_ROLE = "qa"
DESK_NAV = ("models", "review", "dataset", "stats")  # the links of the desk header (templates/desk.html), slots nav_<key>


@lru_cache(maxsize=32)
def _template(name: str) -> str:
    """The template ``name`` with its layouts joined in (slots still unfilled)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    m = _EXTENDS.match(text)
    if m is None:
        return text
    rest = text[m.end():]
    blocks = dict(_BLOCK.findall(rest))
    stray = _BLOCK.sub("", rest).strip()
    if stray:
        raise ValueError(f"templates/{name}: text outside a {{{{#block}}}}: {stray[:60]!r}; put it inside a block")
    layout = _template(m.group(1))
    unknown = set(blocks) - set(_HOLE.findall(layout))
    if unknown:
        raise ValueError(f"templates/{name}: block(s) {sorted(unknown)} have no {{{{>hole}}}} in {m.group(1)}")
    return _HOLE.sub(lambda h: blocks.get(h.group(1), h.group(0)), layout)


@lru_cache(maxsize=32)
def _page(name: str) -> str:
    """The template ready to fill: layouts joined, holes no block filled removed."""
    return _HOLE.sub("", _template(name))


def render(name: str, status_code: int = 200, **values: str) -> HTMLResponse:
    """The template ``name`` with every ``{{key}}`` replaced by ``html.escape(values[key])``.

    A slot without a value is an error (KeyError), so a typo cannot ship.
    """
    text = _SLOT.sub(lambda m: html.escape(str(values[m.group(1)]), quote=True), _page(name))
    return HTMLResponse(text, status_code=status_code)


def desk_page(request: Request, template: str, *, nav: str, area: str, why: str = "", **values: str) -> Response:
    """A page of the QA desk (review queue, editor, dataset, statistics, models) in the layout templates/desk.html.

    Not logged in: 303 to the login page, back here after. Logged in below role qa: 403 with
    templates/denied.html, which says that ``area`` needs the role (and ``why``, when given).
    ``nav`` is the header link marked as the current page (one of :data:`DESK_NAV`).
    """
    s = session_of(request)
    if s is None:
        return RedirectResponse(f"/login?next={request.url.path}", status.HTTP_303_SEE_OTHER)
    common = {"station": request.app.state.web.station.cfg.name, "user": s.user.username, "role": s.user.role}
    if not s.user.has(DESK_ROLE):
        return render("denied.html", status_code=403, area=area, needed=DESK_ROLE, why=why, next=request.url.path, **common)
    current = {f"nav_{key}": "page" if key == nav else "false" for key in DESK_NAV}
    return render(template, **common, **current, **values)
