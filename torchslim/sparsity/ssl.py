"""Structured Sparsity Learning (Wen, Wu, Wang, Chen & Li 2016, "Learning Structured Sparsity in Deep
Neural Networks").

The loss gets group-lasso terms (eq. 1-2): E(W) = E_D(W) + lambda R(W) + lambda_g sum_l R_g(W^(l)),
R_g(w) = sum_g ||w^(g)||_2, over groups that map onto the im2col GEMM of a conv W (N x C x kh x kw):

- filter-wise  W[n, :, :, :]   rows of the GEMM       (eq. 3, first term)
- channel-wise W[:, c, :, :]   input channels         (eq. 3, second term)
- shape-wise   W[:, c, i, j]   columns of the GEMM    (eq. 4)
- depth-wise   all weights of a residual branch        (eq. 5): zero -> the block is its shortcut

lambda R(W) is ordinary weight decay (FitConfig.weight_decay). After training, groups whose L2 norm
(scaled by 1/sqrt(group size)) falls below a threshold are zeroed and removed: filters and channels
through `torchslim.prune.remove_zero_channels`, shape-wise columns by lowering the conv to a GEMM over
the surviving im2col columns (`LoweredConv2d`), residual blocks by replacing them with their shortcut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.lowered_conv import LoweredConv2d
from torchslim.module_swap import replace_modules
from torchslim.sparsity.masks import FilterFn
from torchslim.train import Callback, FitConfig, fit

GROUPS = ("filter", "channel", "shape", "depth")


def _convs(model: nn.Module, filter_fn: FilterFn | None):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 and (filter_fn is None or filter_fn(m, name)):
            yield name, m


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Blocks y = relu(branch(x) + shortcut(x)) that can be dropped: CIFAR BasicBlocks (`shortcut`) and
    torchvision BasicBlock/Bottleneck (`downsample`)."""
    from torchslim.models.cifar_resnet import BasicBlock as CifarBlock

    out = []
    for name, m in model.named_modules():
        if isinstance(m, CifarBlock):
            out.append((name, m))
        elif type(m).__name__ in ("BasicBlock", "Bottleneck") and hasattr(m, "downsample") and hasattr(m, "conv1"):
            out.append((name, m))
    return out


def _branch_params(block: nn.Module) -> list[torch.Tensor]:
    """The residual branch's conv weights and BN scales/shifts: the depth-wise group (all zero -> branch is 0)."""
    out = []
    for n, m in block.named_modules():
        if "shortcut" in n or "downsample" in n:
            continue
        if isinstance(m, nn.Conv2d):
            out.append(m.weight)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            out += [m.weight, m.bias]
    return out


def group_norms(w: torch.Tensor, kind: str) -> torch.Tensor:
    """||w^(g)||_2 of each group of a conv weight (N, C, kh, kw): one value per filter, channel or column."""
    if kind == "filter":
        return w.flatten(1).norm(dim=1)
    if kind == "channel":
        return w.transpose(0, 1).flatten(1).norm(dim=1)
    if kind == "shape":
        return w.flatten(1).norm(dim=0)
    raise InvalidInputError(f"group kind must be one of filter, channel, shape; got {kind!r}")


class GroupLasso:
    """`model -> lambda_g * sum_g ||w^(g)||_2` for one group kind; use in `fit(regularizers=[...])` or
    add to your own loss.

    Args:
        kind: filter, channel, shape or depth.
        lam: lambda_g.
        filter_fn: `(module, fqn) -> bool` selecting convs (filter/channel/shape).
        normalize: scale each group by sqrt(its size) (Wen et al. use plain norms; scaling makes one
            lambda fit layers of different widths).

    Example:
        >>> fit(model, data.train, regularizers=[GroupLasso("filter", 1e-4), GroupLasso("shape", 1e-4)])
    """

    def __init__(self, kind: str, lam: float = 1e-4, filter_fn: FilterFn | None = None, normalize: bool = False):
        if kind not in GROUPS:
            raise InvalidInputError(f"group kind must be one of {', '.join(GROUPS)}; got {kind!r}")
        self.kind, self.lam, self.filter_fn, self.normalize = kind, float(lam), filter_fn, normalize

    def __call__(self, model: nn.Module) -> torch.Tensor:
        terms = []
        if self.kind == "depth":
            for _, block in residual_blocks(model):
                ps = _branch_params(block)
                terms.append(torch.sqrt(sum((p ** 2).sum() for p in ps) + 1e-12))
        else:
            for _, conv in _convs(model, self.filter_fn):
                norms = group_norms(conv.weight, self.kind)
                if self.normalize:
                    norms = norms * math.sqrt(conv.weight.numel() / norms.numel())
                terms.append(norms.sum())
        if not terms:
            raise InvalidInputError(f"{type(model).__name__} has no {'residual block' if self.kind == 'depth' else 'conv'}"
                                    f" for {self.kind}-wise group lasso")
        return self.lam * torch.stack(terms).sum()


class GroupLassoProx(Callback):
    """Proximal group lasso during `fit`: after each optimizer step, shrink every group towards zero,
    w_g <- w_g * max(0, 1 - lr * lambda_g * c_g / ||w_g||) (c_g = sqrt(group size) if `normalize`).

    The proximal step of R_g (block soft thresholding) gives exact zeros where plain SGD on the
    subgradient only oscillates around them; the result is the same objective, reached faster.
    """

    def __init__(self, kind: str, lam: float = 1e-4, filter_fn: FilterFn | None = None, normalize: bool = False):
        if kind not in ("filter", "channel", "shape"):
            raise InvalidInputError(f"proximal group lasso supports filter, channel, shape; got {kind!r}")
        self.kind, self.lam, self.filter_fn, self.normalize = kind, float(lam), filter_fn, normalize
        self.optimizer = None

    def on_fit_begin(self, model, optimizer):
        self.optimizer = optimizer

    @torch.no_grad()
    def after_step(self, model, step):
        lr = self.optimizer.param_groups[0]["lr"]
        for _, conv in _convs(model, self.filter_fn):
            w = conv.weight
            norms = group_norms(w, self.kind)
            c = math.sqrt(w.numel() / norms.numel()) if self.normalize else 1.0
            scale = (1 - lr * self.lam * c / norms.clamp_min(1e-12)).clamp_min(0)
            if self.kind == "filter":
                w.mul_(scale.view(-1, 1, 1, 1))
            elif self.kind == "channel":
                w.mul_(scale.view(1, -1, 1, 1))
            else:
                w.view(w.shape[0], -1).mul_(scale.view(1, -1))


# ---------------------------------------------------------------- after training: zero and remove
def _rms(norms: torch.Tensor, size: int) -> torch.Tensor:
    return norms / math.sqrt(size)


@torch.no_grad()
def zero_small_groups(model: nn.Module, kinds: Sequence[str], threshold: float = 1e-3,
                      filter_fn: FilterFn | None = None) -> dict:
    """Zero every group whose root-mean-square weight is below `threshold`; returns counts per kind."""
    counts = {k: 0 for k in kinds}
    for _, conv in _convs(model, filter_fn):
        w = conv.weight
        n, c, kh, kw = w.shape
        for kind in kinds:
            if kind == "depth":
                continue
            size = {"filter": c * kh * kw, "channel": n * kh * kw, "shape": n}[kind]
            small = _rms(group_norms(w, kind), size) < threshold
            counts[kind] += int(small.sum())
            if kind == "filter":
                w[small] = 0
            elif kind == "channel":
                w[:, small] = 0
            else:
                w.view(n, -1)[:, small] = 0
    if "depth" in kinds:
        for _, block in residual_blocks(model):
            ps = _branch_params(block)
            total = sum(p.numel() for p in ps)
            if math.sqrt(sum(float((p ** 2).sum()) for p in ps) / total) < threshold:
                for p in ps:
                    p.zero_()
                counts["depth"] += 1
    return counts


def drop_zero_blocks(model: nn.Module) -> list[str]:
    """Replace every residual block whose branch (conv weights, BN scales and shifts) is all zero by
    relu(shortcut(x)), which is what it computes; returns the dropped blocks' names."""
    dropped = []
    blocks = {id(b) for _, b in residual_blocks(model)}

    def swap(m, fqn):
        if id(m) in blocks and all(float(p.detach().abs().max()) == 0 for p in _branch_params(m)):
            short = getattr(m, "shortcut", None) or getattr(m, "downsample", None) or nn.Identity()
            dropped.append(fqn)
            return nn.Sequential(short, nn.ReLU(inplace=True))
        return None

    replace_modules(model, swap)
    return dropped


def gemm_table(model: nn.Module, example_input: torch.Tensor) -> list[dict]:
    """Per conv: GEMM (filters x im2col rows) x output locations, of a dense Conv2d or a LoweredConv2d."""
    rows = []
    hooks = []

    def hook(name):
        def fn(m, args, out):
            L = out.shape[-1] * out.shape[-2]
            if isinstance(m, LoweredConv2d):
                f, k = m.gemm_shape
            else:
                f, k = m.out_channels, m.in_channels // m.groups * math.prod(m.kernel_size)
            rows.append({"layer": name, "filters": f, "columns": k, "locations": L, "macs": f * k * L})
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, LoweredConv2d)):
            hooks.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return rows


def lower_sparse_convs(model: nn.Module, *, min_saving: float = 0.0, filter_fn: FilterFn | None = None) -> list[str]:
    """Replace each conv with zero im2col columns or zero filters by a `LoweredConv2d` over the rest.

    Args:
        min_saving: lower only when the GEMM shrinks by more than this fraction.
    """
    lowered = []

    def swap(m, fqn):
        if type(m) is nn.Conv2d and m.groups == 1 and (filter_fn is None or filter_fn(m, fqn)):
            w = m.weight.detach().flatten(1)
            keep_r = int((w.abs().sum(1) > 0).sum())
            keep_c = int((w.abs().sum(0) > 0).sum())
            if keep_r == 0 or keep_c == 0:
                return None  # an all-zero conv: structured pruning removes it, not lowering
            if keep_r * keep_c < (1.0 - min_saving) * w.numel() and keep_r * keep_c < w.numel():
                lowered.append(fqn)
                return LoweredConv2d.from_conv(m)
        return None

    replace_modules(model, swap)
    return lowered


def remove_zero_groups(model: nn.Module, example_input: torch.Tensor, *, channels: bool = True,
                       columns: bool = True, depth: bool = True) -> dict:
    """Physically remove zeroed groups: blocks (depth), filters/channels (structured-pruning engine),
    then im2col columns (lowering). Returns what was done and the GEMM sizes before and after."""
    before = gemm_table(model, example_input)
    done: dict = {"dropped_blocks": [], "channels": None, "lowered": []}
    if depth:
        done["dropped_blocks"] = drop_zero_blocks(model)
    if channels:
        try:
            from torchslim.prune import remove_zero_channels
        except ImportError as e:
            raise UnsupportedModelError(
                "removing zeroed filters/channels needs torchslim.prune.remove_zero_channels (the structured-"
                f"pruning engine), which this installation lacks ({e}); pass channels=False to lower the "
                "convs instead (zero filters then become skipped GEMM rows)") from None
        result = remove_zero_channels(model, example_input)
        if isinstance(result, nn.Module):
            model = result
        done["channels"] = "removed"
    if columns:
        done["lowered"] = lower_sparse_convs(model)
    after = gemm_table(model, example_input)
    done["gemm"] = _pair_tables(before, after)
    done["model"] = model
    return done


def _pair_tables(before: list[dict], after: list[dict]) -> list[dict]:
    a = {r["layer"]: r for r in after}
    out = []
    for r in before:
        n = a.get(r["layer"])
        out.append({"layer": r["layer"], "before": f"{r['filters']}x{r['columns']}",
                    "after": f"{n['filters']}x{n['columns']}" if n else "removed",
                    "locations": r["locations"], "macs_before": r["macs"], "macs_after": n["macs"] if n else 0})
    return out


@dataclass
class SSLConfig:
    """Train with group lasso over `groups` (lam per kind), zero groups whose RMS weight is below
    `threshold`, remove them (`remove`: none, lower, all), fine-tune `finetune_epochs` keeping the zeros."""

    groups: tuple = ("filter", "shape")  # group kinds: filter, channel, shape, depth
    lam: float | dict = 1e-3  # lambda_g, or {kind: lambda_g}
    proximal: bool = False  # proximal steps (exact zeros, faster) instead of the subgradient in the loss
    normalize: bool = True  # scale each group's lambda by the square root of its size
    epochs: int = 2  # epochs of group-lasso training
    threshold: float = 1e-3  # groups whose RMS weight is below this are zeroed
    finetune_epochs: int = 1  # fine-tuning epochs keeping the zeros
    remove: str = "lower"  # none | lower (columns and filters as skipped GEMM rows) | all (+ channel engine)
    input_size: tuple | None = None  # (C, H, W) for the removal pass (default: from the first batch)
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=1e-4, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


class KeepZeroGroups(Callback):
    """Hold the conv weights that are zero when fine-tuning begins at zero (the removed groups)."""

    def on_fit_begin(self, model, optimizer):
        self.zero = {n: p.detach() == 0 for n, p in model.named_parameters() if p.dim() == 4}

    def after_step(self, model, step):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.zero:
                    p.masked_fill_(self.zero[n], 0)


@register_method("ssl", SSLConfig)
def run_ssl(model: nn.Module, cfg: SSLConfig, train, val) -> dict:
    need_data(train, "ssl")
    lam = cfg.lam if isinstance(cfg.lam, dict) else {k: cfg.lam for k in cfg.groups}
    prox_kinds = [k for k in cfg.groups if cfg.proximal and k != "depth"]
    regs = [GroupLasso(k, lam[k], cfg.filter_fn, normalize=cfg.normalize) for k in cfg.groups if k not in prox_kinds]
    prox = [GroupLassoProx(k, lam[k], cfg.filter_fn, normalize=cfg.normalize) for k in prox_kinds]
    history = [{"phase": "group-lasso", **h} for h in
               fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs, label="ssl: group lasso"),
                   regularizers=regs,
                   callbacks=[*prox, *cfg.callbacks]).history]
    counts = zero_small_groups(model, cfg.groups, cfg.threshold, cfg.filter_fn)
    if cfg.finetune_epochs:
        history += [{"phase": "finetune", **h} for h in
                    fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.finetune_epochs,
                                                                         label="ssl: fine-tuning"),
                        callbacks=[KeepZeroGroups(), *cfg.callbacks]).history]
    info = {"zeroed_groups": counts, "history": history}
    if cfg.remove != "none":
        x = next(iter(train))[0][:1] if cfg.input_size is None else torch.zeros(1, *cfg.input_size)
        x = x.to(next(model.parameters()).device)
        done = remove_zero_groups(model, x, channels=cfg.remove == "all", columns=True, depth="depth" in cfg.groups)
        if done["model"] is not model:
            raise UnsupportedModelError("the channel-removal engine returned a new model; call "
                                        "remove_zero_groups yourself and keep its 'model'")
        info.update({k: v for k, v in done.items() if k != "model"})
    return info
