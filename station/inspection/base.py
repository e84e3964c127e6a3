"""The inspector (model backend) contract and its registry."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..config.inspection import InspectorConfig
from ..contracts import Detections, Frame
from ..drivers import Registry


class InspectorError(RuntimeError):
    """The inspector could not inspect a frame. The part is FAILSAFE."""


class ModelLoadError(ValueError):
    """A model file was refused (corrupt, wrong inputs/outputs, not an Ultralytics export)."""


@runtime_checkable
class Inspector(Protocol):
    """A model backend.

    ``ready`` is False while the backend still needs to learn (reference
    backend learning its template); frames inspected then are passed to
    :meth:`learn` by the pipeline and the part is decided as FAILSAFE with the
    reason "learning".
    """

    @property
    def model_id(self) -> str:
        """Identifies the model (sha256 of the file for ONNX models); read-only to the pipeline."""

    @property
    def names(self) -> tuple[str, ...]:
        """The class names, by class id."""

    @property
    def ready(self) -> bool:
        """True when :meth:`inspect` can be called."""

    def learn(self, frame: Frame) -> None:
        """Offer one frame for learning (no-op for trained models)."""

    def inspect(self, frame: Frame) -> Detections:
        """Find defects on one frame; boxes in frame pixels."""

    def warmup(self) -> None:
        """Run once on a dummy input so the first part is not slow."""

    def close(self) -> None:
        """Release resources."""


INSPECTORS: Registry[Inspector] = Registry.from_union("inspector", InspectorConfig)
