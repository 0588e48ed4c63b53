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


def _qdq_mse(x, lo, hi):
    scale, zp = qparams(lo, hi)
    return float(np.mean(((np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale - x) ** 2))


def test_kl_clips_a_heavy_tail_and_beats_minmax_on_the_bulk():
    x = np.random.default_rng(1).standard_t(3, 200000).astype(np.float32)  # Student t, 3 dof: rare huge values
    lo, hi = OBSERVERS.get("kl")(_hist(x))
    assert hi < 0.5 * x.max() and lo > 0.5 * x.min()
    bulk = x[np.abs(x) < np.quantile(np.abs(x), 0.99)]
    assert _qdq_mse(bulk, lo, hi) < 0.3 * _qdq_mse(bulk, *OBSERVERS.get("minmax")(_hist(x)))


@pytest.mark.parametrize("low, high", [(-1.0, 3.0), (0.0, 1.0)])
def test_kl_keeps_about_the_full_range_of_a_uniform_distribution(low, high):
    x = np.random.default_rng(2).uniform(low, high, 200000).astype(np.float32)
    lo, hi = OBSERVERS.get("kl")(_hist(x))
    assert hi >= high - 0.03 * (high - low) and lo <= low + 0.03 * (high - low) + 1e-6


def test_kl_is_not_fooled_by_the_relu_spike_at_zero():
    """Half the values exactly 0 (a ReLU output): any range quantizes them exactly, so they must not
    pull the range in (without flattening the zero bin, KL picked ~0.45 of the max here)."""
    x = np.maximum(np.random.default_rng(3).normal(0, 1, 200000), 0).astype(np.float32)
    lo, hi = OBSERVERS.get("kl")(_hist(x))
    assert lo == 0.0 and hi > 0.8 * x.max()


def test_kl_divergence_is_zero_for_a_lossless_range_and_grows_with_clipping():
    from torchslim.quant.observers import kl_divergence

    flat = np.full(2048, 10.0)  # uniform: 256 levels of 8 equal bins lose nothing
    assert kl_divergence(flat, 0, 2048) == pytest.approx(0.0, abs=1e-9)
    assert 0 < kl_divergence(flat, 256, 1792) < kl_divergence(flat, 512, 1536)
