"""Run by test_runner.py in a subprocess: run a recipe with a test-only stage; optionally SIGKILL ourselves
at a global fine-tuning step of stage 2 (once: a marker file records that the kill happened)."""
import os
import signal
import sys
from pathlib import Path

import torch

from torchslim.recipe import StageParams, register_stage, run_recipe
from torchslim.train import Callback


class KillOnce(Callback):
    def __init__(self, step: int, marker: Path):
        self.step, self.marker = step, marker

    def after_step(self, model, step):
        if step == self.step and not self.marker.exists():
            self.marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)


class JitterParams(StageParams):
    scale: float = 0.01


@register_stage("jitter", params=JitterParams)
def jitter(model, params, ctx):
    """Test stage: add seeded noise to every weight (random: shows the stage seeding is reproducible)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * params.get("scale", 0.01))
    kill_at = int(os.environ.get("KILL_AT", "-1"))
    if kill_at >= 0:
        ctx.callbacks.append(KillOnce(kill_at, ctx.stage_dir.parent.parent / "killed.marker"))
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_recipe(sys.argv[1], sys.argv[2], progress=False, report=False)  # the report is tested elsewhere
