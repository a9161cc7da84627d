"""Threshold calibration, pure numpy.

RouteLLM's ``calibrate_threshold`` takes the ``1 - strong_fraction`` quantile of
a router's scores on a prompt set, so that about ``strong_fraction`` of those
prompts score at or above it. With ties the fraction cannot always be hit; we
return the threshold and the fraction it actually sends to the strong model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared_core.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    threshold: float
    target_fraction: float
    achieved_fraction: float
    n_prompts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "target_fraction": self.target_fraction,
            "achieved_fraction": self.achieved_fraction,
            "n_prompts": self.n_prompts,
        }


def check_fraction(strong_fraction: Any) -> float:
    if isinstance(strong_fraction, bool) or not isinstance(strong_fraction, (int, float, np.floating)):
        raise ConfigError(f"strong_fraction must be a number in [0, 1], got {strong_fraction!r}")
    value = float(strong_fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"strong_fraction must be in [0, 1], got {strong_fraction!r}")
    return value


def calibrate(scores: Any, strong_fraction: float) -> Calibration:
    """Threshold sending as close as possible to ``strong_fraction`` of ``scores`` to strong.

    Among the thresholds that are one of the scores (plus 1.0 for "none"), pick the
    one whose achieved fraction (share of scores >= threshold) is nearest the
    target; on a tie between two, the smaller fraction (fewer strong calls) wins.
    Without ties this equals RouteLLM's ``quantile(scores, 1 - fraction)`` rounded
    to a score.
    """
    target = check_fraction(strong_fraction)
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ConfigError("cannot calibrate a threshold on an empty set of scores")
    if np.isnan(arr).any():
        raise ConfigError("scores contain NaN; cannot calibrate a threshold")
    n = arr.size
    uniq = np.unique(arr)  # ascending
    # fraction of scores >= each unique value
    achieved = (n - np.searchsorted(np.sort(arr), uniq, side="left")) / n
    candidates = np.append(uniq, np.inf)
    fractions = np.append(achieved, 0.0)
    dist = np.abs(fractions - target)
    best = np.flatnonzero(np.isclose(dist, dist.min(), rtol=0, atol=1e-12))
    idx = best[np.argmin(fractions[best])]
    thr = float(candidates[idx])
    if math.isinf(thr):
        # Send nothing to strong: a threshold above every score, within [0, 1].
        thr = float(np.nextafter(arr.max(), np.inf)) if arr.max() < 1.0 else 1.0
        achieved_frac = float((arr >= thr).mean())
    else:
        achieved_frac = float(fractions[idx])
    return Calibration(thr, target, achieved_frac, n)


def threshold_from_quantiles(quantiles: Any, strong_fraction: float) -> float:
    """Threshold for ``strong_fraction`` from evenly spaced score quantiles.

    ``quantiles[i]`` is the ``i / (len - 1)`` quantile of scores on a reference
    prompt set; the threshold is the interpolated ``1 - strong_fraction`` quantile.
    """
    target = check_fraction(strong_fraction)
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    if q.size < 2 or np.isnan(q).any() or np.any(np.diff(q) < 0):
        raise ConfigError("reference quantiles must be at least two non-decreasing numbers")
    levels = np.linspace(0.0, 1.0, q.size)
    return float(np.clip(np.interp(1.0 - target, levels, q), 0.0, 1.0))
