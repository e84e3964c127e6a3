"""Image health and model drift on every part (issue 13 section 3): see docs/health.md."""

from .monitor import HealthEvent, HealthMonitor

__all__ = ["HealthEvent", "HealthMonitor"]
