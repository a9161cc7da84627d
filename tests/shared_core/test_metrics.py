"""Routing metrics on small cases computed by hand, and against RouteLLM's loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared_core.errors import ConfigError
from shared_core.evaluation.metrics import (
    apgr,
    auc,
    cpt,
    curve_metrics,
    fraction_to_reach,
    mean_metrics,
    oracle_curve,
    quantile_thresholds,
    routing_curve,
)

# Four prompts; the weak model fails the two with the highest scores, the strong
# model answers all. With 4 bins the thresholds are 0.1, 0.175, 0.25, 0.325, 0.4 and
# the curve is (0, .5), (.25, .75), (.5, 1), (.75, 1), (1, 1).
SCORES = [0.1, 0.2, 0.3, 0.4]
STRONG = [1.0, 1.0, 1.0, 1.0]
WEAK = [1.0, 1.0, 0.0, 0.0]


def test_curve_by_hand():
    curve = routing_curve(SCORES, STRONG, WEAK, n_bins=4)
    assert curve.thresholds == pytest.approx([0.4, 0.325, 0.25, 0.175, 0.1])
    assert curve.strong_fraction == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert curve.quality == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])
    assert list(curve.inclusive) == [False, True, True, True, True]


def test_auc_apgr_cpt_by_hand():
    curve = routing_curve(SCORES, STRONG, WEAK, n_bins=4)
    # trapezoids: .25*(.5+.75)/2 + .25*(.75+1)/2 + .25 + .25 = .875
    assert auc(curve.strong_fraction, curve.quality) == pytest.approx(0.875)
    assert apgr(curve, 1.0, 0.5) == pytest.approx(0.75)  # (.875 - .5) / (1 - .5)
    assert cpt(curve, 1.0, 0.5, 0.2) == pytest.approx(0.10)  # .6 is 40% of the way from .5 to .75
    assert cpt(curve, 1.0, 0.5, 0.5) == pytest.approx(0.25)  # exactly a point
    assert cpt(curve, 1.0, 0.5, 0.8) == pytest.approx(0.40)  # .9 is 60% of the way from .75 to 1
    m = curve_metrics(curve, 1.0, 0.5)
    assert m.to_dict() == pytest.approx({"auc": 0.875, "apgr": 0.75, "cpt20": 0.1, "cpt50": 0.25, "cpt80": 0.4})


def test_worst_ranking_gives_apgr_below_half():
    curve = routing_curve([0.4, 0.3, 0.2, 0.1], STRONG, WEAK, n_bins=4)
    # strong calls go to prompts the weak model already solves: (0,.5),(.25,.5),(.5,.5),(.75,.75),(1,1)
    assert curve.quality == pytest.approx([0.5, 0.5, 0.5, 0.75, 1.0])
    assert apgr(curve, 1.0, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 1.0, 0.5, 0.5) == pytest.approx(0.75)


def test_thresholds_equal_pandas_qcut_without_ties():
    scores = np.random.default_rng(0).random(103)
    _, edges = pd.qcut(scores, 10, retbins=True)
    assert quantile_thresholds(scores) == pytest.approx(edges)


def test_ties_drop_duplicate_edges_as_qcut_duplicates_drop():
    scores = np.r_[np.zeros(50), np.ones(50)]
    with pytest.raises(ValueError, match="unique"):
        pd.qcut(scores, 10, retbins=True)  # what RouteLLM would do
    _, edges = pd.qcut(scores, 10, retbins=True, duplicates="drop")
    assert quantile_thresholds(scores) == pytest.approx(edges)
    assert quantile_thresholds(scores) == pytest.approx([0.0, 0.5, 1.0])
    strong = np.r_[np.zeros(50), np.ones(50)]
    weak = np.zeros(100)
    curve = routing_curve(scores, strong, weak)
    assert curve.strong_fraction == pytest.approx([0.0, 0.5, 1.0])
    assert curve.quality == pytest.approx([0.0, 0.5, 0.5])
    assert apgr(curve, 0.5, 0.0) == pytest.approx(0.75)  # (.125 + .25 - 0) / .5


def test_all_scores_equal_gives_the_two_end_points():
    curve = routing_curve([0.3] * 5, [1, 1, 1, 0, 0], [0, 0, 0, 0, 0])
    assert curve.strong_fraction == pytest.approx([0.0, 1.0])
    assert curve.quality == pytest.approx([0.0, 0.6])
    assert apgr(curve, 0.6, 0.0) == pytest.approx(0.5)


def test_matches_routellm_loop_on_random_data():
    rng = np.random.default_rng(1)
    n = 500
    scores = rng.random(n)
    strong = (rng.random(n) < 0.8).astype(float) * 100
    weak = (rng.random(n) < 0.6).astype(float) * 100
    # RouteLLM's evaluate.py / benchmarks.py, restated
    _, thresholds = pd.qcut(scores, 10, retbins=True)
    points = []
    for i, t in enumerate(thresholds):
        sel = scores >= t if i != len(thresholds) - 1 else scores > t
        points.append((sel.mean() * 100, np.where(sel, strong, weak).mean()))
    points.sort()
    pct, acc = np.array(points).T
    ref_auc = np.trapezoid(acc, pct / 100)
    weak_auc = np.trapezoid(np.full(len(pct), weak.mean()), pct / 100)
    strong_auc = np.trapezoid(np.full(len(pct), strong.mean()), pct / 100)
    ref_apgr = (ref_auc - weak_auc) / (strong_auc - weak_auc)

    curve = routing_curve(scores, strong, weak)
    m = curve_metrics(curve, strong.mean(), weak.mean())
    assert m.auc == pytest.approx(ref_auc, rel=1e-12)
    assert m.apgr == pytest.approx(ref_apgr, rel=1e-12)
    if np.all(np.diff(acc) > 0):  # np.interp is only defined for an increasing curve
        target = weak.mean() + 0.5 * (strong.mean() - weak.mean())
        assert m.cpt[0.5] * 100 == pytest.approx(np.interp(target, acc, pct))


def test_cpt_takes_the_first_crossing_of_a_non_monotone_curve():
    from shared_core.evaluation.metrics import RoutingCurve

    curve = RoutingCurve(
        thresholds=np.array([1.0, 0.6, 0.3, 0.0]),
        inclusive=np.array([False, True, True, True]),
        strong_fraction=np.array([0.0, 0.3, 0.6, 1.0]),
        quality=np.array([0.0, 0.8, 0.4, 1.0]),
    )
    assert cpt(curve, 1.0, 0.0, 0.5) == pytest.approx(0.3 * 0.5 / 0.8)
    assert fraction_to_reach(curve, 2.0) != fraction_to_reach(curve, 2.0)  # NaN: never reached


def test_oracle_is_exact_and_above_a_perfect_decile_router():
    oracle = oracle_curve(STRONG, WEAK)
    assert oracle.strong_fraction == pytest.approx([0.0, 0.5, 1.0])
    assert oracle.quality == pytest.approx([0.5, 1.0, 1.0])
    assert auc(oracle.strong_fraction, oracle.quality) == pytest.approx(0.875)
    rng = np.random.default_rng(2)
    strong = rng.integers(1, 11, 300).astype(float)
    weak = rng.integers(1, 11, 300).astype(float)
    o = curve_metrics(oracle_curve(strong, weak), strong.mean(), weak.mean())
    for seed in range(5):
        noisy = (strong - weak) + rng.normal(0, 0.5 + seed, 300)
        r = curve_metrics(routing_curve(noisy, strong, weak), strong.mean(), weak.mean())
        assert r.apgr < o.apgr


def test_mean_metrics():
    a = curve_metrics(routing_curve(SCORES, STRONG, WEAK, n_bins=4), 1.0, 0.5)
    b = curve_metrics(routing_curve([0.4, 0.3, 0.2, 0.1], STRONG, WEAK, n_bins=4), 1.0, 0.5)
    m = mean_metrics([a, b])
    assert m.apgr == pytest.approx(0.5)
    assert m.cpt[0.5] == pytest.approx(0.5)


def test_bad_inputs_raise_naming_the_problem():
    with pytest.raises(ConfigError, match="lengths differ"):
        routing_curve([0.1, 0.2], [1, 1, 1], [0, 0, 0])
    with pytest.raises(ConfigError, match=r"scores\[1\]"):
        routing_curve([0.1, float("nan")], [1, 1], [0, 0])
    with pytest.raises(ConfigError, match="n_bins"):
        quantile_thresholds([0.1], 0)
    with pytest.raises(ConfigError, match="strong model to beat"):
        apgr(routing_curve(SCORES, WEAK, STRONG, n_bins=4), 0.5, 1.0)
