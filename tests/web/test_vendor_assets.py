"""Third-party browser libraries (station/web/vendor/): the file named in their README, served from the station itself,
with nothing fetched from another origin; and the QA desk's scripts are ES modules whose imports all resolve."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi.testclient import TestClient

from station.web import auth

WEB = Path(auth.__file__).parent
VENDOR = WEB / "vendor"
STATIC = WEB / "static"


def test_vendored_chartjs_is_the_published_file_and_is_served(client: TestClient) -> None:
    lib = VENDOR / "chartjs"
    readme = (lib / "README.md").read_text()
    assert "MIT" in (lib / "LICENSE.md").read_text()
    body = (lib / "chart.umd.js").read_bytes()
    assert f"sha256 {hashlib.sha256(body).hexdigest()}" in readme, "chart.umd.js differs from the file the README names"
    r = client.get("/vendor/chartjs/chart.umd.js")
    assert r.status_code == 200 and r.content == body
    assert "javascript" in r.headers["content-type"] and r.headers["cache-control"] == "no-cache"
    # other origins only in the library's banner comments (/*! ... */), never in code it runs
    code = re.sub(rb"/\*!.*?\*/", b"", body, flags=re.S)
    assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", code)


def test_desk_modules_import_only_files_that_exist() -> None:
    modules = [*STATIC.glob("review*.js"), STATIC / "stats.js", STATIC / "common.js"]
    seen = 0
    for m in modules:
        for spec in re.findall(r"""(?:from|import\()\s*["'](\.[^"']+)["']""", m.read_text()):
            assert (m.parent / spec).resolve().is_file(), f"{m.name} imports {spec}, which does not exist"
            seen += 1
        assert "window.Review" not in m.read_text()  # the review pages share through imports, not globals
    assert seen >= 10
