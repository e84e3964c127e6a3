"""station.web.pages: templates built on layouts ({{#extends}}, {{#block}}, {{>hole}}) with escaped {{slots}}."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from station.web import pages

DESK = {"review.html": "review", "review_image.html": "review", "review_dataset.html": "dataset", "stats.html": "stats", "models.html": "models"}
VALUES = {"station": "line <7>", "user": "qa", "role": "qa", "image_id": "3", "max_upload_mb": "500"}


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty template folder in place of station/web/templates (the cache cleared before and after)."""
    monkeypatch.setattr(pages, "TEMPLATES", tmp_path)
    pages._template.cache_clear()
    yield tmp_path
    pages._template.cache_clear()


@pytest.mark.parametrize("name", sorted(DESK))
def test_desk_pages_share_one_header_and_mark_their_link(name: str) -> None:
    nav = {f"nav_{k}": "page" if k == DESK[name] else "false" for k in pages.DESK_NAV}
    text = pages.render(name, **VALUES, **nav).body.decode()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    for once in ('id="user-name"', 'id="logout"', 'id="toast"', "<header", "/static/common.css", "/static/common.js"):
        assert text.count(once) == 1, (name, once)
    assert text.index("/static/common.js") < text.index("/static/" + ("models" if name == "models.html" else "review") + ".js")
    assert text.count('aria-current="page"') == 1
    assert "line &lt;7&gt;" in text and "line <7>" not in text  # slots inside blocks are escaped too
    assert "{{" not in text and "<script>" not in text  # nothing left unfilled; no inline script (CSP script-src 'self')


def test_denied_page_names_the_area_and_the_role() -> None:
    text = pages.render("denied.html", station="s", user="op", role="operator", area="The models page", needed="qa", why="", next="/models").body.decode()
    assert "The models page needs the qa role" in text and 'href="/login?next=/models"' in text and "{{" not in text


def test_nested_layouts_fill_holes_and_empty_the_rest(templates: Path) -> None:
    (templates / "outer.html").write_text("<t>{{>title}}</t><h>{{>head}}</h><b>{{>body}}</b>")
    (templates / "mid.html").write_text("{{#extends outer.html}}\n{{#block title}}{{>title}} - {{site}}{{/block}}\n{{#block body}}\n[{{>body}}]\n{{/block}}\n")
    (templates / "page.html").write_text("{{#extends mid.html}}\n{{#block title}}Page{{/block}}\n{{#block body}}\n<p>{{x}}</p>\n{{/block}}\n")
    assert pages.render("page.html", site="S", x="a&b").body.decode() == "<t>Page - S</t><h></h><b>[<p>a&amp;b</p>]</b>"


def test_a_block_without_a_hole_or_text_outside_blocks_is_an_error(templates: Path) -> None:
    (templates / "outer.html").write_text("<b>{{>body}}</b>")
    (templates / "typo.html").write_text("{{#extends outer.html}}\n{{#block bdy}}x{{/block}}\n")
    with pytest.raises(ValueError, match=r"typo.html.*\['bdy'\].*outer.html"):
        pages.render("typo.html")
    (templates / "stray.html").write_text("{{#extends outer.html}}\nlost text\n{{#block body}}x{{/block}}\n")
    with pytest.raises(ValueError, match="stray.html.*lost text"):
        pages.render("stray.html")
    with pytest.raises(KeyError):
        (templates / "slot.html").write_text("{{#extends outer.html}}\n{{#block body}}{{missing}}{{/block}}\n")
        pages.render("slot.html")
