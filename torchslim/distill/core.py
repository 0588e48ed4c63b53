"""What every distillation method shares: feature capture by forward hooks, layer pairing, the
combined loss that plugs into `torchslim.train.fit` as its `loss_fn`.

A method is a `Term`: it names the teacher/student layers it reads, turns the teacher's outputs into
per-image targets (`teacher_targets`, cacheable), and scores the student against them (`loss`).
`DistillLoss` runs the frozen teacher once per batch for all terms, the student once, and adds the
hard-label cross entropy weighted by what the terms leave for it (KD: 1 - alpha).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.train import Callback


@contextmanager
def capture(model: nn.Module, names, feats: dict[str, torch.Tensor]):
    """Record the outputs of the named submodules of `model` into `feats` during the `with` block.

    The hook hands a copy downstream, so a later in-place op (ReLU(inplace=True)) cannot change
    or break the gradient of the tensor we keep.
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        some = [n for n in modules if n][:12]
        raise InvalidInputError(f"{type(model).__name__} has no layer {missing[0]!r}; layers are named like "
                                f"{', '.join(some)}, ...")

    def hook(name):
        def fn(_m, _args, out):
            if not isinstance(out, torch.Tensor):
                raise InvalidInputError(f"layer {name!r} returns {type(out).__name__}, not a tensor")
            feats[name] = out
            return out.clone()

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in dict.fromkeys(names)]
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def stage_ends(model: nn.Module, x: torch.Tensor) -> dict[tuple[int, int], tuple[str, int]]:
    """{(H, W): (layer name, channels)}: for each spatial size, the last module to output it.

    Forward hooks of containers fire after their children, so for a CIFAR ResNet this is
    `layer1`, `layer2`, `layer3` (the ends of the stages); 1x1 maps are left out (nothing to attend).
    """
    ends: dict[tuple[int, int], tuple[str, int]] = {}
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue

        def fn(_m, _a, out, name=name):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                key = (int(out.shape[2]), int(out.shape[3]))
                ends.pop(key, None)  # re-insert: dict order = order in which resolutions end
                ends[key] = (name, int(out.shape[1]))

        handles.append(m.register_forward_hook(fn))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return ends


def match_pairs(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """Pair student and teacher layers by spatial size of their outputs (stage ends), shallow first."""
    s, t = stage_ends(student, x), stage_ends(teacher, x)
    common = [k for k in s if k in t]
    if not common:
        raise InvalidInputError(
            f"no spatial size is shared by student ({sorted(s)}) and teacher ({sorted(t)}) feature maps; "
            "give the layer pairs by name, e.g. pairs=[('layer1', 'layer1')]")
    return [(s[k][0], t[k][0]) for k in common]


def feature_shapes(model: nn.Module, names, x: torch.Tensor) -> dict[str, tuple]:
    feats: dict[str, torch.Tensor] = {}
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, names, feats):
            model(x)
    finally:
        model.train(was)
    return {n: tuple(f.shape[1:]) for n, f in feats.items()}


@dataclass
class Batch:
    """What a term sees of one batch: inputs, labels, logits and captured features."""

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    feats: dict[str, torch.Tensor] = field(default_factory=dict)
    model: nn.Module | None = None


class Term(nn.Module):
    """One distillation method. Subclasses set the layer lists in `setup` and implement the two scores."""

    hard_weight: float = 1.0  # how much of the hard-label loss this method keeps (KD: 1 - alpha)
    needs_input_grad: bool = False

    def __init__(self):
        super().__init__()
        self.student_layers: list[str] = []
        self.teacher_layers: list[str] = []

    def setup(self, student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> None:
        """Resolve layers and build any trainable parts (adapters) from one example batch."""

    def teacher_targets(self, t: Batch, teacher: nn.Module) -> dict[str, torch.Tensor]:
        """Per-image targets (first dim = batch) computed from the teacher; they may be cached."""
        raise NotImplementedError

    def loss(self, s: Batch, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class DistillLoss(nn.Module):
    """`loss_fn(student, x, y) -> (loss, logits)` for `torchslim.train.fit`, combining `terms`.

    Its parameters are the terms' trainable parts (FitNets adapters); the teacher is held but not
    registered, so `DistillLoss.parameters()` never hands teacher weights to an optimizer.

    Args:
        teacher: the trained model; frozen (requires_grad False) and always run in eval mode.
        terms: `Term` objects (`KD`, `AttentionTransfer`, `Hint`, ...).
        cache: optional `TeacherCache` holding precomputed teacher targets.

    Example:
        >>> loss = DistillLoss(teacher, [KD(temperature=4, alpha=0.9)])
        >>> fit(student, data.train, loss_fn=loss)
    """

    def __init__(self, teacher: nn.Module, terms, cache=None):
        super().__init__()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: not trained, not saved
        self.terms = nn.ModuleList(terms)
        self.cache = cache
        self._ready = False
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    @property
    def hard_weight(self) -> float:
        return min((t.hard_weight for t in self.terms), default=1.0)

    @property
    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(n for t in self.terms for n in t.student_layers))

    @property
    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(n for t in self.terms for n in t.teacher_layers))

    def setup(self, student: nn.Module, x: torch.Tensor) -> "DistillLoss":
        """Resolve layer pairs and build adapters from an example batch `x`; call before building the optimizer."""
        if student is self.teacher:
            raise InvalidInputError("student and teacher are the same object; distil into a copy (copy.deepcopy)")
        device = next((p.device for p in student.parameters()), x.device)
        self.teacher.to(device)
        x = x[:8].to(device)
        with torch.no_grad():
            was = student.training
            student.eval()
            try:
                s_out, t_out = student(x), self.teacher(x)
            finally:
                student.train(was)
        if s_out.ndim != 2 or t_out.ndim != 2 or s_out.shape[1] != t_out.shape[1]:
            raise InvalidInputError(
                f"student outputs {tuple(s_out.shape[1:])} and teacher outputs {tuple(t_out.shape[1:])}: "
                "distillation needs both to output logits over the same number of classes")
        for term in self.terms:
            term.setup(student, self.teacher, x)
        self.to(device)
        self._ready = True
        return self

    def teacher_targets(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        teacher = self.teacher
        teacher.eval()
        p = next(teacher.parameters(), None)
        if p is not None and p.device != x.device:
            teacher.to(x.device)
        feats: dict[str, torch.Tensor] = {}
        with torch.no_grad(), capture(teacher, self.teacher_layers, feats):
            logits = teacher(x)
        t = Batch(x, y, logits, feats, teacher)
        out: dict[str, torch.Tensor] = {}
        for i, term in enumerate(self.terms):
            out.update({f"{i}.{k}": v for k, v in term.teacher_targets(t, teacher).items()})
        return out

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if not self._ready:
            self.setup(model, x)
        targets = self.cache.lookup(x, y) if self.cache is not None else self.teacher_targets(x, y)
        if any(t.needs_input_grad for t in self.terms):
            x = x.detach().requires_grad_(True)
        feats: dict[str, torch.Tensor] = {}
        with capture(model, self.student_layers, feats):
            logits = model(x)
        s = Batch(x, y, logits, feats, model)
        loss = self.hard_weight * F.cross_entropy(logits, y) if self.hard_weight else logits.new_zeros(())
        for i, term in enumerate(self.terms):
            prefix = f"{i}."
            mine = {k[len(prefix):]: v for k, v in targets.items() if k.startswith(prefix)}
            loss = loss + term.loss(s, mine)
        return loss, logits

    def callback(self) -> Callback:
        """A `fit` callback that checkpoints the adapters with the student (exact resume)."""
        return _StateCallback(self)


class _StateCallback(Callback):
    def __init__(self, loss: DistillLoss):
        self.loss = loss

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.loss.terms.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.loss.terms.load_state_dict(state)
