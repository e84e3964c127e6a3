"""Model lifecycle: dataset -> train -> export ONNX -> evaluate -> register -> promote / rollback.

Modules (each one job):

- :mod:`models.dataset`  synthetic training data with ground truth (YOLO format) and golden sets;
- :mod:`models.golden`   frozen golden sets (images + labels + a manifest of sha256 sums);
- :mod:`models.train`    Ultralytics training with progress callbacks and cancellation;
- :mod:`models.export`   ONNX export keeping Ultralytics' metadata, plus lineage metadata;
- :mod:`models.evaluate` evaluation through the station's production path;
- :mod:`models.eval_compare` / :mod:`models.eval_tuning` candidate vs current model, the report table; threshold tuning;
- :mod:`models.registry` the ``models`` table: register, list, promote (gated), rollback;
- :mod:`models.jobs`     the one job runner: one job at a time in a subprocess, with live progress (training,
evaluation);
- :mod:`models.eval_worker` / :mod:`models.eval_jobs` the evaluation worker and its jobs on that runner;
- :mod:`models.service`  the model lifecycle of a running station (the web models page's domain work);
- :mod:`models.default_model` the recipe of the shipped default model (``models build-default``);
- :mod:`models.cli`      the ``models`` command (its parser; the sub-commands are in :mod:`models.commands`).

Only :mod:`models.train` and :mod:`models.export` need torch/ultralytics/onnx, and they import them
inside functions: evaluating or registering works on a station without the ``train`` extra.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
"""Where the shipped default model (``model.onnx`` + ``model.json``) lives."""

SHIPPED_DIRS = {"machined": DEFAULT_DIR, "pcb": Path(__file__).resolve().parent / "pcb"}
"""The shipped model of each product of the synthetic line (``models build-default --product``)."""
