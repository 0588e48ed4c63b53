"""The one `rank` argument, resolved per layer from the spectra of the matrices a method factorises.

- ``"vbmf"``: analytic empirical VBMF on each unfolding (Nakajima et al. 2013; Kim et al. 2016, Sec. 3.1).
- an ``int`` or a ``tuple``: explicit ranks (a tuple gives one rank per mode, in the method's order).
- a ``float`` q in (0, 1]: the smallest ranks keeping a fraction q of the spectral energy
  sum(sigma_i^2) of each unfolding; 1.0 keeps full rank (the layer is reproduced up to float error).
- ``{"compression": x}``: ranks scaled down together until the layer's parameters shrink x-fold;
  ``{"macs": x}`` the same for its MACs (at the layer's input size, so the model's input size or data
  must be known).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from torchslim.errors import InvalidInputError
from torchslim.lowrank.vbmf import evbmf

RankSpec = Union[str, int, float, tuple, list, dict]
BUDGETS = {"compression": "parameters", "macs": "MACs"}  # {name: x}: what shrinks x-fold


def is_budget(rank: RankSpec) -> bool:
    """Whether `rank` is a budget ({"compression": x} or {"macs": x}), not {layer pattern: rank}."""
    return isinstance(rank, dict) and len(rank) == 1 and next(iter(rank)) in BUDGETS


@dataclass
class Budget:
    """What a budget rank allows one layer: a chain of cost `c` (`Method.cost`) fits when size(c) <= limit."""

    size: Callable[[tuple], int]
    limit: float

    def fits(self, cost: tuple) -> bool:
        return self.size(cost) <= self.limit


def parse_rank(text: str) -> RankSpec:
    """A rank written as text (the CLI, a recipe): 'vbmf' | '8' | '0.9' (energy) | '4,8' (per mode) |
    'compression=4' or 'x4' | 'macs=3'."""
    t = text.strip().lower()
    try:
        if t == "vbmf":
            return "vbmf"
        for key in ("compression", "macs"):
            if t.startswith(key + "="):
                return {key: float(t.split("=", 1)[1])}
        if t.startswith("x"):
            return {"compression": float(t[1:])}
        if "," in t:
            return tuple(int(v) for v in t.split(","))
        if "." in t:
            return float(t)
        return int(t)
    except ValueError:
        raise InvalidInputError(f"rank {text!r}: use vbmf, an int, R3,R4, a float in (0,1], compression=X "
                                "or macs=X") from None


def validate_rank(rank: RankSpec) -> RankSpec:
    """Fail early, naming the value, on a rank argument that no method can use."""
    if isinstance(rank, str):
        if rank != "vbmf":
            raise InvalidInputError(f"rank {rank!r}: use 'vbmf', an int, a tuple, a float in (0, 1] "
                                    "{'compression': x} or {'macs': x}")
    elif isinstance(rank, bool):
        raise InvalidInputError(f"rank {rank!r} is a bool; give an int, a float in (0, 1] or 'vbmf'")
    elif isinstance(rank, int):
        if rank < 1:
            raise InvalidInputError(f"rank {rank} must be >= 1")
    elif isinstance(rank, float):
        if not 0 < rank <= 1:
            raise InvalidInputError(f"rank {rank} as a float is the fraction of energy kept: use (0, 1]")
    elif isinstance(rank, (tuple, list)):
        if not rank or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rank):
            raise InvalidInputError(f"rank {rank!r}: a tuple of ranks must hold positive ints")
    elif isinstance(rank, dict):
        x = next(iter(rank.values()), None)
        if not is_budget(rank) or isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 1:
            raise InvalidInputError(f"rank {rank!r}: use {{'compression': x}} (parameters shrink x-fold) or "
                                    "{'macs': x} (MACs shrink x-fold) with x > 1")
    else:
        raise InvalidInputError(f"rank {rank!r} of type {type(rank).__name__} is not understood")
    return rank


def energy_rank(sigma: torch.Tensor, q: float) -> int:
    """Smallest r with sum_{i<r} sigma_i^2 >= q * sum sigma_i^2 (sigma sorted descending)."""
    e = sigma.double() ** 2
    total = float(e.sum())
    if total == 0:
        return 1
    if q >= 1.0:
        return len(sigma)
    c = torch.cumsum(e, 0) / total
    return int(torch.searchsorted(c, torch.tensor(q, dtype=c.dtype)).item()) + 1


def resolve_ranks(rank: RankSpec, spectra: Sequence[tuple[torch.Tensor, tuple[int, int]]],
                  full: Sequence[int], fits: Callable[[tuple], bool] | None = None) -> tuple[int, ...]:
    """Ranks (one per mode) for one layer.

    Args:
        spectra: per mode, the singular values of the unfolding and its shape (for VBMF).
        full: the largest meaningful rank per mode.
        fits: whether the factorised layer at given ranks meets the budget (for {"compression": x} and
            {"macs": x}).
    """
    n = len(full)
    if isinstance(rank, str):  # "vbmf"
        out = [evbmf(gamma=s.double().numpy(), shape=shape).rank for s, shape in spectra]
    elif isinstance(rank, int):
        out = [rank] * n
    elif isinstance(rank, (tuple, list)):
        if len(rank) != n:
            raise InvalidInputError(f"rank {tuple(rank)} has {len(rank)} entries; this method needs {n}")
        out = list(rank)
    elif isinstance(rank, float):
        out = [energy_rank(s, rank) for s, _ in spectra]
    else:
        lo, hi = 0.0, 1.0  # largest common fraction beta of the full ranks meeting the budget
        for _ in range(40):
            mid = (lo + hi) / 2
            if fits(tuple(max(1, math.floor(mid * f)) for f in full)):
                lo = mid
            else:
                hi = mid
        out = [max(1, math.floor(lo * f)) for f in full]
    return tuple(int(min(max(r, 1), f)) for r, f in zip(out, full))
