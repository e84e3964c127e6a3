"""The web app: operator screen, REST API (OpenAPI at /openapi.json), live events, /health, /metrics.

- :func:`create_app` builds the FastAPI app for a :class:`~station.app.Station`.
- :func:`~station.web.server.serve` runs it with uvicorn; :func:`~station.web.server.start_in_thread` for tests.
- :mod:`station.web.auth` holds users, roles, sessions and CSRF (also used by the CLI).
"""

from .app import create_app

__all__ = ["create_app"]
