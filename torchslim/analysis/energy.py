"""Per-layer energy estimate in the style of Yang et al. (CVPR 2017) and Eyeriss (Chen et al. 2016).

Energy = computation + data movement. Computation is the number of MACs actually performed (zero
weights are skipped, as in Yang et al.) times the energy of a MAC. Data movement counts, for each data
type (input feature map, weights, output partial sums), the accesses at each memory level times the
energy of an access there:

- register file (RF): every MAC reads its two operands and updates a partial sum there (3 accesses);
- on-chip buffer: a datum used R times (R = MACs / number of such data) is fetched from the buffer
  ceil(R / rf_reuse) times, the rest of its reuse being served by the RF;
- DRAM: every datum once, and the input feature map once more per buffer-full of weights when a
  layer's weights do not fit the buffer (the input must then be streamed again per weight tile).

The default costs are Horowitz's 45 nm figures (ISSCC 2014) for 32-bit data: fp32 MAC 4.6 pJ
(3.7 mult + 0.9 add), 8 KB SRAM 5 pJ per 32-bit read, DRAM 640 pJ per 32-bit access; the RF at 1 pJ
matches Eyeriss's normalised 1x. Replace them with `EnergyCosts(...)` for another chip. The model is an
estimate for ranking layers and comparing designs, not a measurement.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torchslim.analysis.profile import LayerProfile, ModelProfile


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in picojoules, for `bits`-bit data (scaled linearly for other widths)."""

    mac_pj: float = 4.6
    rf_pj: float = 1.0
    buffer_pj: float = 5.0
    dram_pj: float = 640.0
    bits: int = 32
    rf_reuse: int = 16  # reuse a datum enjoys in the RF before it must be fetched from the buffer again
    buffer_bytes: int = 108 * 1024  # Eyeriss's global buffer


@dataclass
class LayerEnergy:
    name: str
    type: str
    effective_macs: int
    compute_pj: float
    rf_pj: float
    buffer_pj: float
    dram_pj: float

    @property
    def data_pj(self) -> float:
        return self.rf_pj + self.buffer_pj + self.dram_pj

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.data_pj

    def to_dict(self) -> dict:
        return asdict(self) | {"data_pj": self.data_pj, "total_pj": self.total_pj}


def _per_image(shape: tuple) -> int:
    return math.prod(shape[1:]) if len(shape) > 1 else math.prod(shape)


def layer_energy(layer: LayerProfile, costs: EnergyCosts = EnergyCosts()) -> LayerEnergy:
    n_in, n_out = _per_image(layer.input_shape), _per_image(layer.output_shape)
    word = costs.bits / 32
    if layer.macs:
        density = layer.density
        macs = int(layer.macs * density)
        n_w = max(layer.nonzero_params, 1)
        rf = 3 * macs
        buffer = sum(n * math.ceil(macs / max(n, 1) / costs.rf_reuse) for n in (n_in, n_w, n_out))
        weight_bytes = n_w * costs.bits / 8
        dram = n_w + n_out + n_in * max(1, math.ceil(weight_bytes / costs.buffer_bytes))
    else:  # element-wise work: read the input and write the output through the buffer
        macs, rf, buffer = 0, 0, n_in + n_out
        dram = 0
    return LayerEnergy(
        layer.name, layer.type, macs, compute_pj=macs * costs.mac_pj * word,
        rf_pj=rf * costs.rf_pj * word, buffer_pj=buffer * costs.buffer_pj * word,
        dram_pj=dram * costs.dram_pj * word,
    )


def estimate_energy(profile: ModelProfile, costs: EnergyCosts = EnergyCosts()) -> list[LayerEnergy]:
    """Energy of each layer of a profiled model (one image), in the order of the profile's layers.

    Example:
        >>> rows = estimate_energy(profile(model, (3, 32, 32)))
        >>> sum(r.total_pj for r in rows) / 1e6  # microjoules per image
    """
    return [layer_energy(l, costs) for l in profile.layers]
