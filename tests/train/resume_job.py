"""Run by test_fit.py in a subprocess: train on digits, optionally SIGKILL ourselves at a global step."""
import os
import signal
import sys

import torch

from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.train import Callback, FitConfig, fit


class KillAt(Callback):
    def __init__(self, step):
        self.step = step

    def after_step(self, model, step):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    out, kill_at = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights in every process
    data = get_data("digits", batch_size=32)
    model = create_model("digits_cnn", width=8)
    cfg = FitConfig(epochs=3, lr=0.05, max_steps_per_epoch=8, checkpoint_every_steps=3, progress=False, seed=7)
    fit(model, data.train, val_loader=data.val, config=cfg, checkpoint_dir=out,
        callbacks=[KillAt(kill_at)] if kill_at >= 0 else [])
    torch.save(model.state_dict(), os.path.join(out, "final.pt"))
