"""DDP fine-tuning under torchrun equals the single-process run (same seed, same global batch)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from torchslim.train import distributed as D
from torchslim.train.fit import ShardSampler

ROOT = Path(__file__).resolve().parent.parent.parent


def test_shards_of_every_global_batch_are_the_single_process_batch():
    from torchslim.data import get_data

    data = get_data("digits", batch_size=64, limit_train=512, augment=False)
    loader, epoch, seed = data.train, 3, 7
    loader.generator.manual_seed(seed * 100_003 + epoch)  # what fit does each epoch
    single = [y.tolist() for _, y in loader]
    per_rank = []
    for r in range(2):
        s = ShardSampler(loader.dataset, num_replicas=2, rank=r, shuffle=True, seed=seed * 100_003)
        s.set_epoch(epoch)
        per_rank.append([y.tolist() for _, y in DataLoader(loader.dataset, batch_size=32, sampler=s)])
    assert len(per_rank[0]) == len(single) == 8
    for k, batch in enumerate(single):  # same samples (labels here, in the interleaved order)
        merged = [v for pair in zip(per_rank[0][k], per_rank[1][k]) for v in pair]
        assert merged == batch


def test_map_over_ranks_without_a_process_group_is_a_loop():
    assert not D.is_distributed() and D.is_main() and D.world_size() == 1
    assert D.map_over_ranks(lambda j: j * 2, [1, 2, 3]) == [2, 4, 6]
    assert D.init_from_env() is False


def test_two_gloo_processes_train_like_one(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "tests/train/ddp_job.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(ROOT / "tests/train"))
    try:
        import ddp_job
    finally:
        sys.path.pop(0)
    torch.set_num_threads(1)
    model, history = ddp_job.train()
    ddp = load_file(tmp_path / "ddp.safetensors")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = ddp_job.tiny_model().state_dict()
    assert max((ddp[k] - init[k]).abs().max().item() for k in init) > 0.05  # it did train
    result = json.loads((tmp_path / "result.json").read_text())
    for a, b in zip(result["history"], history):  # epoch figures are summed over both ranks
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and a["train_top1"] == b["train_top1"]
        assert a["val_top1"] == b["val_top1"]
    assert [j["square"] for j in result["jobs"]] == [0, 1, 4, 9, 16]
    assert [j["rank"] for j in result["jobs"]] == [0, 1, 0, 1, 0]  # the jobs really were split
    single = ddp_job.sensitivity_curves()  # the scan split over 2 ranks equals the single-process scan
    assert result["sensitivity"] == single and len(single) >= 2
    # only rank 0 wrote the fit checkpoint and the recipe run; the run is complete and reported
    assert (tmp_path / "ckpt/checkpoint.pt").is_file() and not list(tmp_path.glob("ckpt/*.tmp"))
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["complete"] and [s["stage"] for s in report["stages"]] == ["00-input", "01-finetune", "02-evaluate"]
