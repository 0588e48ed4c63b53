"""Run by test_distributed.py under `torch.distributed.run --nproc-per-node 2` (gloo on CPU)."""
import json
import sys
from pathlib import Path

import torch
from torch import nn

from torchslim.data import get_data
from torchslim.train import FitConfig, fit
from torchslim.train import distributed as D

SEED, EPOCHS, BATCH, LIMIT = 5, 2, 64, 512


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(checkpoint_dir=None) -> tuple[nn.Module, list]:
    data = get_data("digits", batch_size=BATCH, limit_train=LIMIT, augment=False)
    model = tiny_model()
    res = fit(model, data.train, val_loader=data.val, checkpoint_dir=checkpoint_dir,
              config=FitConfig(epochs=EPOCHS, lr=0.1, seed=SEED, progress=False))
    return model, res.history


def sensitivity_curves() -> dict:
    """A sensitivity scan of a small CNN: split across the ranks under torchrun, a loop without."""
    from torchslim.models import create_model
    from torchslim.prune.sensitivity import sensitivity

    torch.manual_seed(0)
    model = create_model("digits_cnn", width=4)
    data = get_data("digits", batch_size=64, limit_train=256, limit_eval=128, augment=False)
    return sensitivity(model, torch.randn(1, 1, 8, 8), data, ratios=(0.25, 0.5, 0.75), max_batches=2).curves


RECIPE = """\
name: ddp-recipe
model: {name: digits_cnn, kwargs: {width: 4}}
data: {name: digits, batch_size: 64, limit_train: 256, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: finetune
    finetune: {epochs: 1, lr: 0.1}
  - method: evaluate
"""

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    assert D.init_from_env() and D.world_size() == 2
    model, history = train(out / "ckpt")
    gathered = D.map_over_ranks(lambda j: {"job": j, "rank": D.rank(), "square": j * j}, list(range(5)))
    curves = sensitivity_curves()
    from torchslim.recipe import parse_recipe, run_recipe

    run_recipe(parse_recipe(RECIPE, "ddp.yaml"), out / "run", progress=False, log=lambda *a: None)
    if D.is_main():
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "ddp.safetensors"))
        (out / "result.json").write_text(json.dumps({"history": history, "jobs": gathered, "sensitivity": curves}))
    D.shutdown()
