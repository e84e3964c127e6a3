"""station.web.pages: the HTML pages rendered by Jinja2 (Starlette's Jinja2Templates) with autoescape on."""

from __future__ import annotations

from html.parser import HTMLParser

import jinja2
import pytest
from starlette.requests import Request

from station.web import pages

DESK = {
    "review.html": "review",
    "review_image.html": "review",
    "review_dataset.html": "dataset",
    "stats.html": "stats",
    "models.html": "models",
}
LAYOUTS = {"doc.html", "desk.html"}
STATIC_PAGES = {"plant.html"}  # the plant dashboard: every value comes from its JSON API, none from the server
HOSTILE = "\"><script>alert(1)</script>&'"
VALUES = {
    "station": "line <7>",
    "user": "qa",
    "role": "qa",
    "image_id": "3",
    "max_upload_mb": "500",
    "csrf": "t",
    "error": "",
    "next": "/",
    "area": "QA review",
    "needed": "qa",
    "why": "",
    "nav": "review",
}


def _request(path: str = "/") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""})


def _render(name: str, status_code: int = 200, **values: str) -> str:
    resp = pages.templates.TemplateResponse(_request(), name, values, status_code=status_code)
    assert resp.status_code == status_code and resp.media_type == "text/html"
    return bytes(resp.body).decode()


class _Attrs(HTMLParser):
    """Every element's attributes by id, and the text of the page, as a browser would read them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.tags: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if a.get("id"):
            self.by_id[str(a["id"])] = a


def test_every_template_is_a_page_or_a_layout() -> None:
    names = {p.name for p in pages.TEMPLATES.glob("*.html")}
    assert names == LAYOUTS | set(DESK) | {"index.html", "login.html", "setup.html", "denied.html"} | STATIC_PAGES


@pytest.mark.parametrize("name", sorted({p.name for p in pages.TEMPLATES.glob("*.html")} - LAYOUTS))
def test_each_page_renders_a_whole_document_with_its_values_escaped(name: str) -> None:
    text = _render(name, 200, **{**VALUES, "station": HOSTILE})
    assert text.startswith("<!doctype html>\n") and text.endswith("</html>\n")
    assert "{{" not in text and "{%" not in text and "{#" not in text
    assert "<script>" not in text  # the hostile value is escaped; no inline script either (CSP script-src 'self')
    if name not in STATIC_PAGES:
        assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#39;" in text
    parsed = _Attrs(text)
    assert (
        parsed.tags.count("html")
        == parsed.tags.count("head")
        == parsed.tags.count("body")
        == parsed.tags.count("title")
        == 1
    )


@pytest.mark.parametrize("name", sorted(DESK))
def test_desk_pages_share_one_header_and_mark_their_link(name: str) -> None:
    text = _render(name, 200, **{**VALUES, "nav": DESK[name]})
    for once in ('id="user-name"', 'id="logout"', 'id="toast"', "<header", "/static/common.css", "/static/common.js"):
        assert text.count(once) == 1, (name, once)
    assert text.index("/static/common.js") < text.index(
        "/static/" + ("models" if name == "models.html" else "review") + ".js"
    )
    assert text.count('aria-current="page"') == 1 and text.count('aria-current="false"') == 3
    href = {"review": "/review", "dataset": "/review/dataset", "stats": "/review/stats", "models": "/models"}[
        DESK[name]
    ]
    assert f'<a href="{href}" aria-current="page">' in text
    assert (
        "<title>"
        + {
            "review.html": "Review queue",
            "review_image.html": "Image 3 - review",
            "review_dataset.html": "Dataset - review",
            "stats.html": "Statistics",
            "models.html": "Models",
        }[name]
        + " - line &lt;7&gt;</title>"
        in text
    )


def test_login_form_carries_hostile_values_back_unchanged() -> None:
    """The CSRF token and the next path sit in attributes: a browser reads back exactly what the route passed."""
    text = _render("login.html", status_code=401, station="s", csrf=HOSTILE, next=HOSTILE, error=HOSTILE)
    parsed = _Attrs(text)
    assert parsed.by_id["csrf_token"]["value"] == HOSTILE and parsed.by_id["next"]["value"] == HOSTILE
    assert parsed.tags.count("script") == 1  # only /static/login.js
    assert 'id="login-error" role="alert">&#34;&gt;&lt;script&gt;' in text


def test_denied_page_names_the_area_and_the_role() -> None:
    text = _render(
        "denied.html",
        403,
        station="s",
        user="op",
        role="operator",
        area="The models page",
        needed="qa",
        why="",
        next="/models",
    )
    assert "The models page needs the qa role" in text and 'href="/login?next=/models"' in text


def test_a_value_the_route_forgets_is_an_error() -> None:
    with pytest.raises(jinja2.UndefinedError, match="station"):
        _render("index.html")


def test_autoescape_is_on_for_every_template_name() -> None:
    """Autoescape does not depend on the file extension (Starlette's default only escapes .html/.htm/.xml)."""
    assert pages.templates.env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
