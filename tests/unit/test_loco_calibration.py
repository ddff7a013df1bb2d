"""bench/loco_calibration.py's measures against hand computations."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("loco_calibration",
                                              Path(__file__).resolve().parents[2] / "bench" / "loco_calibration.py")
cal = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cal)


def test_brier_and_ece_by_hand():
    y = np.array([1, 1, 0, 1, 0, 0])
    p = np.array([0.95, 0.95, 0.95, 0.15, 0.15, 0.15])
    got = cal.calibration(y, p)
    # bins: 0.95 -> bin 9 (rate 2/3), 0.15 -> bin 1 (rate 1/3); each half of the rows
    assert got["ece"] == pytest.approx(0.5 * abs(0.95 - 2 / 3) + 0.5 * abs(0.15 - 1 / 3))
    assert got["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert got["mean_p"] == pytest.approx(0.55) and got["positive_rate"] == pytest.approx(0.5)


def test_calibrated_scores_have_no_ece_and_p_of_one_lands_in_the_last_bin():
    y = np.array([1, 0, 1, 0, 1, 1, 1, 1])
    p = np.array([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert cal.calibration(y, p)["ece"] == pytest.approx(0.0)


def test_threshold_headroom_by_hand():
    y = np.array([0, 1, 1, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.7, 0.9])
    got = cal.threshold_headroom(y, p, 0.5)
    # at 0.5 only 0.7 and 0.9 are positive: negatives tp 2 fp 3 fn 0 (F1 4/7), positives tp 2 fp 0 fn 3 (4/7)
    assert got["macro_f1"] == pytest.approx(4 / 7)
    # the best cut (0.15) leaves only 0.1 negative: negatives tp 1 fp 0 fn 1 (2/3), positives tp 5 fp 1 fn 0
    # (10/11); every other cut scores lower (checked by hand: 0.25 -> 0.65, 0.35 -> 0.53, 0.425 -> 0.39)
    assert got["best_macro_f1"] == pytest.approx((2 / 3 + 10 / 11) / 2)
