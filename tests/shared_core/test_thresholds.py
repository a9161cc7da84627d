import numpy as np
import pytest

from shared_core.errors import ConfigError
from shared_core.routers import check_threshold
from shared_core.thresholds import NEVER_STRONG, calibrate, format_threshold, threshold_from_quantiles


def test_calibrate_distinct_scores_known_threshold():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    cal = calibrate(scores, 0.3)
    assert cal.threshold == pytest.approx(0.8)
    assert cal.achieved_fraction == pytest.approx(0.3)
    assert cal.n_prompts == 10


def test_calibrate_ties_reports_achieved_fraction():
    # Half the scores tie at 0.5: a 30% target can give 20% or 70%; 20% is nearer.
    scores = [0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.8, 0.9]
    cal = calibrate(scores, 0.3)
    assert cal.threshold == pytest.approx(0.8)
    assert cal.achieved_fraction == pytest.approx(0.2)
    cal = calibrate(scores, 0.6)  # 0.7 (thr 0.5) is 0.1 away, 0.2 is 0.4 away
    assert cal.threshold == pytest.approx(0.5)
    assert cal.achieved_fraction == pytest.approx(0.7)


def test_calibrate_equidistant_tie_prefers_fewer_strong_calls():
    cal = calibrate([0.2, 0.2, 0.7, 0.7], 0.75)  # 0.5 and 1.0 are both 0.25 away
    assert cal.achieved_fraction == pytest.approx(0.5)
    assert cal.threshold == pytest.approx(0.7)


def test_calibrate_extremes():
    scores = np.linspace(0, 0.9, 10)
    all_strong = calibrate(scores, 1.0)
    assert all_strong.threshold == pytest.approx(0.0) and all_strong.achieved_fraction == 1.0
    none = calibrate(scores, 0.0)
    assert none.achieved_fraction == 0.0
    assert none.threshold == NEVER_STRONG
    assert not (scores >= none.threshold).any()


def test_fraction_one_is_always_and_zero_is_never_for_every_score():
    """1 sends every possible score (0.0 included) strong, 0 none (1.0 included),
    not only the calibration scores: a later prompt may score outside their range."""
    every_score = np.array([0.0, 1e-9, 0.5, 1.0 - 1e-9, 1.0])
    some = [0.3, 0.4, 0.6]
    for threshold in (calibrate(some, 1.0).threshold, threshold_from_quantiles([0.3, 0.5, 0.6], 1.0)):
        assert (every_score >= threshold).all(), threshold
    for threshold in (calibrate(some, 0.0).threshold, calibrate([0.2, 1.0], 0.0).threshold,
                      threshold_from_quantiles([0.3, 0.5, 0.6], 0.0), threshold_from_quantiles([0.3, 1.0], 0.0)):
        assert not (every_score >= threshold).any(), threshold
    assert calibrate([0.2, 1.0], 0.0).achieved_fraction == 0.0
    assert calibrate(some, 1.0).achieved_fraction == 1.0


def test_none_strong_among_scores_up_to_one_is_never():
    # A 10% target on 4 scores is nearest to sending none (0%): above the top score, 1.0.
    cal = calibrate([0.1, 0.2, 0.3, 1.0], 0.1)
    assert cal.achieved_fraction == 0.0 and cal.threshold == NEVER_STRONG


def test_never_strong_is_the_only_threshold_above_one():
    assert NEVER_STRONG > 1.0 and check_threshold(NEVER_STRONG) == NEVER_STRONG
    with pytest.raises(ConfigError, match="threshold must be in"):
        check_threshold(1.0 + 1e-9)
    assert format_threshold(NEVER_STRONG) == "never" and format_threshold(1.0) == "1.0000"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.3", None, True])
def test_calibrate_rejects_bad_fraction(bad):
    with pytest.raises(ConfigError, match="strong_fraction"):
        calibrate([0.1, 0.2], bad)


def test_calibrate_rejects_empty_scores():
    with pytest.raises(ConfigError, match="empty"):
        calibrate([], 0.5)


def test_threshold_from_quantiles_interpolates():
    q = np.linspace(0.0, 1.0, 101)  # uniform scores
    assert threshold_from_quantiles(q, 0.3) == pytest.approx(0.7)
    assert threshold_from_quantiles(q, 0.0) == NEVER_STRONG
    assert threshold_from_quantiles(q, 1.0) == 0.0
    with pytest.raises(ConfigError, match="non-decreasing"):
        threshold_from_quantiles([0.5, 0.2], 0.3)
