"""One set of plant engines (NATS JetStream, PostgreSQL, SeaweedFS S3) per test session, on loopback.

Each test gets its own slice (subject prefix, database, bucket): ``plant`` fixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats", reason="the plant tier needs the `plant` extra: pip install -e .[plant]")
pytest.importorskip("psycopg", reason="the plant tier needs the `plant` extra: pip install -e .[plant]")
pytest.importorskip("boto3", reason="the plant tier needs the `plant` extra: pip install -e .[plant]")

from station.plant.engines import Engines  # noqa: E402
from tests.fixtures_plant import Plant, new_plant  # noqa: E402


@pytest.fixture(scope="session")
def plant_engines() -> Iterator[Engines]:
    # PostgreSQL runs as user postgres when we are root: its folder must be reachable (not pytest's 0700 tmp)
    root = Path(tempfile.mkdtemp(prefix="plant-engines-"))
    os.chmod(root, 0o755)
    engines = Engines(root, pg_fsync=False).start()
    try:
        yield engines
    finally:
        engines.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def plant(plant_engines: Engines, tmp_path: Path) -> Plant:
    return new_plant(plant_engines, tmp_path)
