"""What the project's command-line tools share: their logging, a refusal (exit status 2), a JSON result and time
arguments.

Used by ``station`` (:mod:`station.cli`), ``plant`` (:mod:`station.plant.cli`) and ``labeling`` (:mod:`labeling.cli`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from . import serialize


def setup_logging(verbose: bool) -> None:
    """Log to stderr: DEBUG with ``--verbose``, else INFO."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def refuse(message: object) -> int:
    """A command that cannot do what it was asked: ``message`` on stderr, exit status 2."""
    print(message, file=sys.stderr)
    return 2


def print_json(value: object) -> int:
    """A command's result: one line of JSON on stdout, exit status 0."""
    print(serialize.dumps(value), flush=True)
    return 0


def iso_time(text: str, refusal: str) -> dt.datetime:
    """An ISO 8601 time argument (``type=`` of an option); argparse says ``refusal`` when ``text`` is not one."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(refusal) from None
