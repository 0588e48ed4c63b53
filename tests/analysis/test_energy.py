import pytest
from torch import nn

from torchslim.analysis import EnergyCosts, estimate_energy, profile


def _conv_model(zero_fraction: float = 0.0):
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    if zero_fraction:
        w = conv.weight.data.view(-1)
        w[: int(zero_fraction * w.numel())] = 0
    return nn.Sequential(conv, nn.ReLU())


def test_compute_energy_is_macs_times_mac_cost():
    rows = estimate_energy(profile(_conv_model(), (16, 8, 8)), EnergyCosts(mac_pj=2.0))
    conv = rows[0]
    assert conv.effective_macs == 32 * 64 * 16 * 9
    assert conv.compute_pj == pytest.approx(2.0 * conv.effective_macs)
    assert conv.rf_pj == pytest.approx(3 * conv.effective_macs)  # 3 RF accesses per MAC at 1 pJ
    assert rows[1].effective_macs == 0 and rows[1].total_pj > 0  # ReLU: data movement only


def test_zero_weights_save_energy_and_dram_dominates_when_weights_spill():
    dense = estimate_energy(profile(_conv_model(), (16, 8, 8)))[0]
    sparse = estimate_energy(profile(_conv_model(0.75), (16, 8, 8)))[0]
    assert sparse.compute_pj == pytest.approx(dense.compute_pj * 0.25, rel=0.01)
    assert sparse.total_pj < dense.total_pj
    small_buffer = estimate_energy(profile(_conv_model(), (16, 8, 8)), EnergyCosts(buffer_bytes=1024))[0]
    assert small_buffer.dram_pj > dense.dram_pj


def test_int8_costs_scale_with_bits():
    a = estimate_energy(profile(_conv_model(), (16, 8, 8)))[0]
    b = estimate_energy(profile(_conv_model(), (16, 8, 8)), EnergyCosts(bits=8))[0]
    assert b.data_pj == pytest.approx(a.data_pj / 4, rel=0.05)
