"""training.train._Beside: the all-data refit's numpy side runs on a daemon thread; its value or its error
comes back through result()."""
import threading

import pytest

pytest.importorskip("tensorflow", reason="the training extra (tensorflow, tensorflow-transform) is not installed")

from training.train import _Beside  # noqa: E402


def test_result_returns_the_value_from_a_daemon_thread():
    seen = {}

    def work():
        seen["thread"] = threading.current_thread()
        return 41 + 1

    side = _Beside(work, "t")
    assert side.result() == 42
    assert seen["thread"] is not threading.main_thread() and seen["thread"].daemon


def test_result_raises_the_error_of_the_thread():
    def broken():
        raise ValueError("no categories")

    with pytest.raises(ValueError, match="no categories"):
        _Beside(broken, "t").result()
