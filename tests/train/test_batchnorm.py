import torch
from torch import nn

from torchslim.train import recalibrate_batchnorm


def test_recalibration_re_estimates_running_statistics_and_touches_nothing_else():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6, momentum=0.3), nn.Dropout(0.5), nn.ReLU()).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0), bn.running_var.fill_(100.0)  # statistics of a network that is gone
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(16, 3, 8, 8) * 2 + 1 for _ in range(4)]
    assert recalibrate_batchnorm(model, [(b, None) for b in batches]) == 1
    with torch.no_grad():
        y = model[0](torch.cat(batches))  # the conv outputs over all batches: a cumulative average
    torch.testing.assert_close(bn.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_var, y.var((0, 2, 3)), rtol=2e-2, atol=1e-3)
    assert bn.momentum == 0.3 and not model.training and not bn.training
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v)
    assert recalibrate_batchnorm(nn.Linear(3, 3), batches) == 0
