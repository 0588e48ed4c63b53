import numpy as np
import pytest

from torchslim.quant.observers import OBSERVERS, Histogram, qparams


def _hist(x):
    h = Histogram()
    h.update_range(x)
    h.update_hist(x)
    return h


@pytest.mark.parametrize("name", OBSERVERS.names())
def test_every_observer_gives_a_range_containing_zero(name):
    x = np.random.default_rng(0).normal(1.0, 1.0, 10000).astype(np.float32)
    lo, hi = OBSERVERS.get(name)(_hist(x))
    assert lo <= 0 <= hi and hi > lo
    assert hi <= x.max() + 1e-3 and lo >= min(x.min(), 0) - 1e-3


def test_percentile_and_mse_clip_a_single_outlier_minmax_keeps_it():
    x = np.concatenate([np.random.default_rng(0).normal(0, 1, 100000), [1000.0]]).astype(np.float32)
    h = _hist(x)
    assert OBSERVERS.get("minmax")(h)[1] == pytest.approx(1000.0)
    assert OBSERVERS.get("percentile")(h)[1] < 100
    assert OBSERVERS.get("mse")(h)[1] < 1000.0


def test_qparams_asymmetric_uint8():
    scale, zp = qparams(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == round(1 / (4 / 255))
