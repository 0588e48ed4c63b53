"""The measuring stick: per-layer parameters, MACs, bytes, activation memory; latency; size on disk."""
from torchslim.analysis.profile import LayerProfile, ModelProfile, profile
from torchslim.analysis.latency import LatencyResult, machine_info, measure_latency, peak_gemm_flops
from torchslim.analysis.side_by_side import latency_side_by_side
from torchslim.analysis.size import saved_size_bytes
from torchslim.analysis.energy import EnergyCosts, LayerEnergy, estimate_energy

__all__ = [
    "LayerProfile", "ModelProfile", "profile", "LatencyResult", "machine_info", "measure_latency",
    "latency_side_by_side", "peak_gemm_flops", "saved_size_bytes", "EnergyCosts", "LayerEnergy", "estimate_energy",
]
