"""Routing metrics as RouteLLM defines them, pure numpy.

A router is measured by its *routing curve*: for a set of thresholds, the share
of prompts sent to the strong model (``score >= threshold``) against the quality
of the routed answers (the strong model's quality on prompts sent to it, the weak
model's on the rest, averaged over prompts). From the curve:

* **AUC**: area under quality against strong-call fraction, trapezoid rule;
* **APGR** (average performance gap recovered):
  ``(AUC - weak AUC) / (strong AUC - weak AUC)``, where the weak (strong) AUC is
  the area under the constant weak (strong) model quality over the same range;
  a random router scores about 0.5, a perfect one near 1;
* **CPT(x%)** (call-performance threshold): the strong-call percentage at which
  the curve first reaches ``weak + x% * (strong - weak)`` quality.

Thresholds follow RouteLLM's ``evals/benchmarks.py``: the edges of
``pd.qcut(scores, 10)`` (the 0%, 10%, ..., 100% quantiles with linear
interpolation); strong when ``score >= threshold`` for every edge but the last
(the maximum), where it is ``score > threshold`` so the curve always runs from
100% strong calls down to 0%.

Ties. ``pd.qcut`` raises when several edges coincide (many equal scores, e.g. a
router that outputs few distinct values). We keep the *unique* edges (what
``pd.qcut(..., duplicates="drop")`` returns): equal edges would only repeat the
same point, so the curve is unchanged and simply has fewer than 11 points. When
all scores are equal the curve is the two points 100% and 0% strong.

CPT with a non-monotone curve. RouteLLM calls ``np.interp(target, quality,
strong_pct)``, which assumes quality increases with strong calls and is
undefined otherwise. We return the smallest strong-call fraction at which the
piecewise-linear curve reaches the target; on an increasing curve this is
exactly ``np.interp``'s answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from shared_core.errors import ConfigError

#: Quantile bins of RouteLLM's evaluation (``--num-results 10``).
N_BINS = 10
#: The quality-gap fractions CPT is reported at.
CPT_LEVELS = (0.2, 0.5, 0.8)


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------
def _vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ConfigError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ConfigError(f"{name} must be finite numbers, but {name}[{i}] = {arr[i]!r}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"lengths differ: {lengths}")


# ---------------------------------------------------------------------------
# Thresholds and the routing curve
# ---------------------------------------------------------------------------
def quantile_thresholds(scores: Sequence[float], n_bins: int = N_BINS) -> np.ndarray:
    """Unique edges of ``pd.qcut(scores, n_bins)``: the ``0, 1/n_bins, ..., 1`` quantiles.

    Equals ``pd.qcut(scores, n_bins, retbins=True, duplicates="drop")[1]``; see the
    module docstring for why duplicate edges are dropped.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    s = _vector(scores, "scores")
    return np.unique(np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1)))


@dataclass(frozen=True)
class RoutingCurve:
    """Points of quality against strong-call fraction, sorted by strong fraction.

    ``thresholds[i]`` produced ``strong_fraction[i]`` (in [0, 1]) and ``quality[i]``;
    ``inclusive[i]`` says whether strong meant ``score >= threshold`` (else ``>``).
    """

    thresholds: np.ndarray
    inclusive: np.ndarray
    strong_fraction: np.ndarray
    quality: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {
            "thresholds": self.thresholds.tolist(),
            "inclusive": self.inclusive.tolist(),
            "strong_fraction": self.strong_fraction.tolist(),
            "quality": self.quality.tolist(),
        }


def routed_quality(
    strong_mask: Sequence[bool], strong_quality: Sequence[float], weak_quality: Sequence[float]
) -> float:
    """Mean quality when the prompts in ``strong_mask`` go to strong and the rest to weak."""
    mask = np.asarray(strong_mask, dtype=bool)
    sq = _vector(strong_quality, "strong_quality")
    wq = _vector(weak_quality, "weak_quality")
    _same_length(strong_mask=mask, strong_quality=sq, weak_quality=wq)
    return float(np.where(mask, sq, wq).mean())


def routing_curve(
    scores: Sequence[float],
    strong_quality: Sequence[float],
    weak_quality: Sequence[float],
    thresholds: Sequence[float] | None = None,
    n_bins: int = N_BINS,
) -> RoutingCurve:
    """The routing curve of ``scores`` (RouteLLM's evaluation loop).

    ``thresholds`` defaults to :func:`quantile_thresholds`. Each threshold but the
    largest routes ``score >= threshold`` to strong; the largest routes
    ``score > threshold``, so with the default thresholds the curve spans 0%..100%.
    """
    s = _vector(scores, "scores")
    sq = _vector(strong_quality, "strong_quality")
    wq = _vector(weak_quality, "weak_quality")
    _same_length(scores=s, strong_quality=sq, weak_quality=wq)
    thr = quantile_thresholds(s, n_bins) if thresholds is None else np.unique(_vector(thresholds, "thresholds"))
    if thr.size == 1:
        thr = np.array([thr[0], thr[0]])  # one distinct score: all strong, then none
    inclusive = np.ones(thr.size, dtype=bool)
    inclusive[-1] = False
    fractions = np.empty(thr.size)
    quality = np.empty(thr.size)
    for i, (t, inc) in enumerate(zip(thr, inclusive)):
        mask = s >= t if inc else s > t
        fractions[i] = mask.mean()
        quality[i] = np.where(mask, sq, wq).mean()
    order = np.argsort(fractions, kind="stable")
    return RoutingCurve(thr[order], inclusive[order], fractions[order], quality[order])


def oracle_curve(strong_quality: Sequence[float], weak_quality: Sequence[float]) -> RoutingCurve:
    """The best achievable curve: route by the true gain ``strong - weak``, at every distinct gain.

    At each of its points no set of prompts of that size does better, and between
    points quality is linear in the strong fraction (prompts of equal gain), so
    its AUC bounds every router's AUC from above.
    """
    sq = _vector(strong_quality, "strong_quality")
    wq = _vector(weak_quality, "weak_quality")
    _same_length(strong_quality=sq, weak_quality=wq)
    gain = sq - wq
    # ">= g" for every distinct gain g, then "> max + 1" (nobody) as the strict last edge
    return routing_curve(gain, sq, wq, thresholds=np.append(np.unique(gain), gain.max() + 1.0))


# ---------------------------------------------------------------------------
# Metrics of a curve
# ---------------------------------------------------------------------------
def auc(strong_fraction: Sequence[float], quality: Sequence[float]) -> float:
    """Area under ``quality`` over ``strong_fraction`` (in [0, 1]) by the trapezoid rule."""
    x = _vector(strong_fraction, "strong_fraction")
    y = _vector(quality, "quality")
    _same_length(strong_fraction=x, quality=y)
    order = np.argsort(x, kind="stable")
    return float(np.trapezoid(y[order], x[order]))


def apgr(curve: RoutingCurve, strong_mean: float, weak_mean: float) -> float:
    """Average performance gap recovered: ``(AUC - weak AUC) / (strong AUC - weak AUC)``.

    The weak and strong AUCs integrate the constant model qualities over the
    curve's own strong-fraction range, as RouteLLM does.
    """
    if not strong_mean > weak_mean:
        raise ConfigError(
            f"APGR needs the strong model to beat the weak one, got strong {strong_mean!r} <= weak {weak_mean!r}"
        )
    x = curve.strong_fraction
    span = float(x.max() - x.min())
    if span <= 0:
        raise ConfigError("APGR needs a curve spanning more than one strong fraction")
    area = auc(x, curve.quality)
    return (area - weak_mean * span) / ((strong_mean - weak_mean) * span)


def cpt(curve: RoutingCurve, strong_mean: float, weak_mean: float, level: float) -> float:
    """Strong-call fraction (in [0, 1]) at which quality first reaches ``weak + level * (strong - weak)``.

    Linear interpolation between curve points; NaN if the curve never reaches it.
    """
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"CPT level must be in [0, 1], got {level!r}")
    return fraction_to_reach(curve, weak_mean + level * (strong_mean - weak_mean))


@dataclass(frozen=True)
class Metrics:
    """AUC, APGR and CPT (strong-call fractions in [0, 1]) of one curve."""

    auc: float
    apgr: float
    cpt: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"auc": self.auc, "apgr": self.apgr}
        for level, value in self.cpt.items():
            out[f"cpt{round(level * 100)}"] = value
        return out


def curve_metrics(
    curve: RoutingCurve, strong_mean: float, weak_mean: float, levels: Sequence[float] = CPT_LEVELS
) -> Metrics:
    """AUC, APGR and CPT at ``levels`` of a routing curve."""
    return Metrics(
        auc=auc(curve.strong_fraction, curve.quality),
        apgr=apgr(curve, strong_mean, weak_mean),
        cpt={float(lv): cpt(curve, strong_mean, weak_mean, lv) for lv in levels},
    )


def mean_metrics(items: Sequence[Metrics]) -> Metrics:
    """Element-wise mean of several metrics (the random row: mean over seeds)."""
    if not items:
        raise ConfigError("mean_metrics needs at least one Metrics")
    levels = list(items[0].cpt)
    return Metrics(
        auc=float(np.mean([m.auc for m in items])),
        apgr=float(np.mean([m.apgr for m in items])),
        cpt={lv: float(np.mean([m.cpt[lv] for m in items])) for lv in levels},
    )


def fraction_to_reach(curve: RoutingCurve, target_quality: float) -> float:
    """Smallest strong-call fraction at which the curve reaches ``target_quality`` (NaN if never).

    Used to compare with a commercial router's score: the share of strong calls
    our router needs for the same quality.
    """
    x, y = curve.strong_fraction, curve.quality
    tol = 1e-12 * max(1.0, abs(target_quality))  # a point exactly at the target counts
    for i in range(len(x)):
        if y[i] >= target_quality - tol:
            if i == 0 or y[i] <= y[i - 1]:
                return float(x[i])
            t = (target_quality - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + min(max(t, 0.0), 1.0) * (x[i] - x[i - 1]))
    return float("nan")
