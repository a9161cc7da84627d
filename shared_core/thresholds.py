"""Threshold calibration, pure numpy.

RouteLLM's ``calibrate_threshold`` takes the ``1 - strong_fraction`` quantile of
a router's scores on a prompt set, so that about ``strong_fraction`` of those
prompts score at or above it. With ties the fraction cannot always be hit; we
return the threshold and the fraction it actually sends to the strong model.

The two ends are exact, whatever the scores: a call is strong when
``score >= threshold`` and scores are clipped to [0, 1], so ``strong_fraction=1``
is threshold ``0.0`` (every score reaches it) and ``strong_fraction=0`` is
:data:`NEVER_STRONG`, the float just above 1.0, which no score reaches. That
value is the only threshold above 1 that :func:`shared_core.routers.check_threshold`
accepts; it means "never strong" wherever a threshold is used (the engine, the
``routellm calibrate`` and ``route`` commands, a decision's metadata).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared_core.errors import ConfigError
from shared_core.routers.base import ALWAYS_STRONG, NEVER_STRONG

__all__ = [
    "ALWAYS_STRONG", "NEVER_STRONG", "Calibration", "calibrate", "check_fraction", "end_threshold", "format_threshold",
    "threshold_from_quantiles",
]


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


def end_threshold(strong_fraction: float) -> float | None:
    """The threshold of a strong fraction at an end of the range, which needs no scores:
    :data:`ALWAYS_STRONG` for 1, :data:`NEVER_STRONG` for 0, ``None`` in between."""
    return {1.0: ALWAYS_STRONG, 0.0: NEVER_STRONG}.get(float(strong_fraction))


def calibrate(scores: Any, strong_fraction: float) -> Calibration:
    """Threshold sending as close as possible to ``strong_fraction`` of ``scores`` to strong.

    Among the thresholds that are one of the scores (plus one just above the
    highest score for "none"), pick the one whose achieved fraction (share of
    scores >= threshold) is nearest the target; on a tie between two, the smaller
    fraction (fewer strong calls) wins. Without ties this equals RouteLLM's
    ``quantile(scores, 1 - fraction)`` rounded to a score.

    ``strong_fraction`` 1 and 0 are not estimated from the scores: they give
    :data:`ALWAYS_STRONG` (0.0) and :data:`NEVER_STRONG`, so that they hold for
    every later prompt too, not only for these.

    >>> calibrate([0.2, 0.4, 0.6, 0.8], 0.5).threshold
    0.6
    >>> calibrate([0.2, 0.4], 1.0).threshold, calibrate([0.2, 0.4], 0.0).threshold > 1.0
    (0.0, True)
    """
    target = check_fraction(strong_fraction)
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ConfigError("cannot calibrate a threshold on an empty set of scores")
    if np.isnan(arr).any():
        raise ConfigError("scores contain NaN; cannot calibrate a threshold")
    n = arr.size
    end = end_threshold(target)
    if end is not None:
        return Calibration(end, target, target, n)
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
        # Send none of these to strong: the float just above the highest score
        # (NEVER_STRONG when that score is 1.0).
        thr = float(np.nextafter(min(float(arr.max()), 1.0), np.inf))
    return Calibration(thr, target, float((arr >= thr).mean()), n)


def threshold_from_quantiles(quantiles: Any, strong_fraction: float) -> float:
    """Threshold for ``strong_fraction`` from evenly spaced score quantiles.

    ``quantiles[i]`` is the ``i / (len - 1)`` quantile of scores on a reference
    prompt set; the threshold is the interpolated ``1 - strong_fraction`` quantile.
    ``strong_fraction`` 1 and 0 give :data:`ALWAYS_STRONG` and :data:`NEVER_STRONG`
    (not the reference set's lowest and highest score, which other prompts pass
    or miss).

    >>> threshold_from_quantiles([0.2, 0.5, 0.8], 0.5)
    0.5
    >>> threshold_from_quantiles([0.2, 0.5, 0.8], 1.0)
    0.0
    """
    target = check_fraction(strong_fraction)
    q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    if q.size < 2 or np.isnan(q).any() or np.any(np.diff(q) < 0):
        raise ConfigError("reference quantiles must be at least two non-decreasing numbers")
    end = end_threshold(target)
    if end is not None:
        return end
    levels = np.linspace(0.0, 1.0, q.size)
    return float(np.clip(np.interp(1.0 - target, levels, q), 0.0, 1.0))


def format_threshold(threshold: float, digits: int = 4) -> str:
    """A threshold for people: ``digits`` decimals, or ``never`` for :data:`NEVER_STRONG`
    (which would print as 1.0000 and read as "strong for a score of 1")."""
    if threshold == NEVER_STRONG:
        return "never"
    return f"{threshold:.{digits}f}"
