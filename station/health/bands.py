"""Bands learned from setup frames, the consecutive-frames rule, and the Kolmogorov-Smirnov distance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Band:
    """What a figure looked like at setup, and the range it may take before it counts as out."""

    mean: float
    std: float
    low: float  # -inf: no lower limit
    high: float  # +inf: no upper limit

    def outside(self, v: float) -> bool:
        """True when ``v`` lies outside [low, high]."""
        return v < self.low or v > self.high

    def as_dict(self) -> dict[str, float | None]:
        """JSON-able (None for an open side)."""
        return {
            k: (None if math.isinf(x) else round(x, 6))
            for k, x in (("mean", self.mean), ("std", self.std), ("low", self.low), ("high", self.high))
        }


def learn_band(
    values: list[float], *, rel_low: float | None, rel_high: float | None, abs_high: float | None = None, sigma: float
) -> Band:
    """The band around the mean of ``values`` (see :func:`band`)."""
    a = np.asarray(values, np.float64)
    return band(float(a.mean()), float(a.std()), rel_low=rel_low, rel_high=rel_high, abs_high=abs_high, sigma=sigma)


def band(
    mean: float,
    std: float,
    *,
    rel_low: float | None,
    rel_high: float | None,
    abs_high: float | None = None,
    sigma: float,
) -> Band:
    """The band around ``mean``: the wider of the relative (or absolute) tolerance and ``sigma`` standard deviations.

    ``rel_low`` / ``rel_high``: allowed fall / rise as a fraction of the mean (None: that side open);
    ``abs_high``: allowed rise in the figure's own units (clipped share).
    """
    low = -math.inf if rel_low is None else min(mean * (1 - rel_low), mean - sigma * std)
    high = math.inf
    if rel_high is not None:
        high = max(mean * (1 + rel_high), mean + sigma * std)
    if abs_high is not None:
        high = max(mean + abs_high, mean + sigma * std)
    return Band(mean, std, low, high)


class Streak:
    """Raises after ``n_out`` consecutive frames out of band, clears after ``n_in`` consecutive frames back in."""

    __slots__ = ("n_out", "n_in", "out", "back", "active")

    def __init__(self, n_out: int, n_in: int):
        self.n_out, self.n_in = n_out, n_in
        self.out = self.back = 0
        self.active = False

    def update(self, outside: bool) -> str | None:
        """Count one frame; "raise" or "clear" when the state changes, else None."""
        if outside:
            self.out += 1
            self.back = 0
            if not self.active and self.out >= self.n_out:
                self.active = True
                return "raise"
        else:
            self.back += 1
            self.out = 0
            if self.active and self.back >= self.n_in:
                self.active = False
                return "clear"
        return None


def ks_distance(base_sorted: np.ndarray, sample: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (0 = same distribution, 1 = disjoint); ``base_sorted`` ascending."""
    if base_sorted.size == 0 or sample.size == 0:
        return 0.0
    s = np.sort(sample)
    at = np.concatenate([base_sorted, s])
    fa = np.searchsorted(base_sorted, at, side="right") / base_sorted.size
    fb = np.searchsorted(s, at, side="right") / s.size
    return float(np.max(np.abs(fa - fb)))
