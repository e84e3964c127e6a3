"""HTML pages from station/web/templates: plain files with a few ``{{name}}`` slots, HTML-escaped."""

from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from fastapi.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"
_SLOT = re.compile(r"\{\{(\w+)\}\}")


@lru_cache(maxsize=16)
def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render(name: str, status_code: int = 200, **values: str) -> HTMLResponse:
    """The template ``name`` with every ``{{key}}`` replaced by ``html.escape(values[key])``.

    A slot without a value is an error (KeyError), so a typo cannot ship.
    """
    text = _SLOT.sub(lambda m: html.escape(str(values[m.group(1)]), quote=True), _template(name))
    return HTMLResponse(text, status_code=status_code)
