import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.train import Callback, FitConfig, evaluate, fit

JOB = Path(__file__).with_name("resume_job.py")
ROOT = Path(__file__).resolve().parents[2]


def run_job(out: Path, kill_at: int) -> int:
    return subprocess.run([sys.executable, str(JOB), str(out), str(kill_at)], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).returncode


def test_kill_mid_epoch_then_resume_gives_the_same_weights(tmp_path):
    assert run_job(tmp_path / "straight", -1) == 0
    # Killed inside epoch 2 (global step 13 = epoch 1, step 5): the last checkpoint is epoch 1, step 3.
    assert run_job(tmp_path / "killed", 13) != 0
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 3)
    assert run_job(tmp_path / "killed", -1) == 0
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fit_learns_digits_and_reports_history():
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn", width=8)
    before = evaluate(model, data.test)["top1"]
    res = fit(model, data.train, val_loader=data.val, config=FitConfig(epochs=3, lr=0.1, progress=False))
    after = evaluate(model, data.test)["top1"]
    assert after > max(before + 30, 80)
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and "val_top1" in res.history[-1]


def test_same_seed_same_weights_and_callbacks_and_regularizers_are_called():
    data = get_data("digits", batch_size=64)

    class Count(Callback):
        def __init__(self):
            self.backward = self.step = 0

        def after_backward(self, model, step):
            self.backward += 1
            assert all(p.grad is not None for p in model.parameters())

        def after_step(self, model, step):
            self.step += 1

    weights, calls = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("digits_cnn", width=4)
        cb = Count()
        reg_calls = []
        fit(model, data.train, config=FitConfig(epochs=1, max_steps_per_epoch=5, progress=False),
            callbacks=[cb], regularizers=[lambda m: reg_calls.append(1) or torch.zeros(())])
        weights.append(model.state_dict())
        calls.append((cb.backward, cb.step, len(reg_calls)))
    assert calls[0] == (5, 5, 5)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_lr_schedules():
    from torchslim.train.fit import _lr_factor

    cos = FitConfig(epochs=10)
    assert _lr_factor(cos, 0) == pytest.approx(1) and _lr_factor(cos, 5) == pytest.approx(0.5)
    step = FitConfig(epochs=10, schedule="step", step_epochs=3, gamma=0.1)
    assert _lr_factor(step, 6.5) == pytest.approx(0.01)
    warm = FitConfig(epochs=10, warmup_epochs=2)
    assert _lr_factor(warm, 1) == pytest.approx(0.5, rel=1e-3)


def test_bad_config_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="rmsprop"):
        FitConfig(optimizer="rmsprop")
    with pytest.raises(InvalidInputError, match="lr"):
        FitConfig(lr=0)
    with pytest.raises(InvalidInputError, match="fp16"):
        FitConfig(precision="fp16")


def test_bf16_channels_last_training_learns_and_hands_back_fp32_nchw_weights():
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn", width=8)
    seen = []

    class Layout(Callback):
        def after_backward(self, model, step):
            w = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1][0]
            seen.append(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous())

    fit(model, data.train, callbacks=[Layout()],
        config=FitConfig(epochs=3, lr=0.1, precision="bf16", channels_last=True, progress=False))
    assert seen and all(seen)  # trained in NHWC
    assert evaluate(model, data.test)["top1"] > 80  # bf16 autocast still learns
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())


class _StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def after_step(self, model, step):
        if step == self.step:
            raise KeyboardInterrupt


def test_checkpoints_by_time_inside_epochs_and_says_where_it_resumes(tmp_path, capsys):
    data = get_data("digits", batch_size=32)
    cfg = FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=8, checkpoint_every_s=0.0, progress=False)
    with pytest.raises(KeyboardInterrupt):  # a kill at step 5: the time-based checkpoint after step 4 is there
        fit(create_model("digits_cnn", width=8), data.train, config=cfg, checkpoint_dir=tmp_path,
            callbacks=[_StopAt(4)])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 4)
    capsys.readouterr()
    res = fit(create_model("digits_cnn", width=8), data.train, config=cfg, checkpoint_dir=tmp_path)
    assert "resuming from epoch 1 step 4" in capsys.readouterr().err and res.resumed_from == "epoch 0 step 4"
    # A different model or other settings into the same folder: a clear error, not a traceback.
    with pytest.raises(InvalidInputError, match="checkpoint of a different model"):
        fit(create_model("digits_cnn", width=4), data.train, config=cfg, checkpoint_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="lr=0.05 there, 0.1 now"):
        fit(create_model("digits_cnn", width=8), data.train, config=FitConfig(**{**vars(cfg), "lr": 0.1}),
            checkpoint_dir=tmp_path)
