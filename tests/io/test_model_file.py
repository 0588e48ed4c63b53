import json

import pytest
import torch
from torch import nn

from torchslim.errors import FileFormatError, InvalidInputError
from torchslim.io import load_model, model_info, save_model
from torchslim.models import create_model
from torchslim.models.cifar_resnet import ChannelPadShortcut


def test_round_trip_of_a_reshaped_model(tmp_path):
    m = create_model("resnet20").eval()
    blk = m.layer2[0]
    blk.conv1 = nn.Conv2d(16, 10, 3, 2, 1, bias=False)
    blk.bn1 = nn.BatchNorm2d(10)
    blk.conv2 = nn.Conv2d(10, 32, 3, 1, 1, bias=False)
    blk.shortcut = ChannelPadShortcut(16, 32, 2, index=list(range(0, 32, 2)))
    m.layer3[1].conv1 = nn.Sequential(nn.Conv2d(64, 8, 1, bias=False), nn.Conv2d(8, 64, 3, 1, 1, bias=False))
    m.eval()
    path = save_model(m, tmp_path / "m.safetensors", metadata={"note": "pruned"})
    info = model_info(path)
    assert info["arch"]["name"] == "resnet20" and info["metadata"] == {"note": "pruned"}
    assert set(info["replaced"]) == {"layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2", "layer2.0.shortcut",
                                     "layer3.1.conv1"}
    m2 = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m(x), m2(x))


def test_plain_sequential_without_arch(tmp_path):
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    m2 = load_model(save_model(m, tmp_path / "s.safetensors"))
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(m(x), m2(x))


def test_foreign_module_types_are_refused(tmp_path):
    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(InvalidInputError, match="register_module"):
        save_model(nn.Sequential(Mine()), tmp_path / "x.safetensors")
    # A crafted file naming any other importable callable is refused, never executed.
    from safetensors.torch import save_file

    manifest = {"format": "torchslim-model", "version": 1, "arch": None,
                "replaced": {"": {"type": "os.system", "args": {"command": "echo hi"}}}}
    save_file({}, str(tmp_path / "evil.safetensors"), metadata={"torchslim": json.dumps(manifest)})
    with pytest.raises(FileFormatError, match="not allowed"):
        load_model(tmp_path / "evil.safetensors")


def test_damaged_files_give_clear_errors(tmp_path):
    path = save_model(create_model("lenet300"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.safetensors"):
        load_model(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FileFormatError, match="--weights"):
        load_model(tmp_path / "plain.safetensors")


def test_flipped_bits_in_tensor_data_are_detected(tmp_path):
    path = save_model(create_model("lenet300"), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10  # a bit in the last tensor's bytes; the header is untouched
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="flipped.safetensors.*sha256"):
        load_model(tmp_path / "flipped.safetensors")


def test_files_without_a_digest_still_load(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    m = create_model("lenet300").eval()
    path = save_model(m, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        manifest = json.loads(f.metadata()["torchslim"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert len(manifest.pop("sha256")) == 64
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"torchslim": json.dumps(manifest)})
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(load_model(tmp_path / "old.safetensors")(x), m(x))


def test_model_files_get_the_users_usual_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_model(create_model("lenet300"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_files_that_name_a_class_by_its_old_module_still_load():
    # OnnxRuntimeModule moved from torchslim.quant.int8_ptq to torchslim.onnx_runtime: files written
    # before name it by the old path, which keeps it importable
    from torchslim.io.model_file import _resolve
    from torchslim.onnx_runtime import OnnxRuntimeModule

    assert _resolve("torchslim.quant.int8_ptq.OnnxRuntimeModule") is OnnxRuntimeModule


def test_read_state_dict_unpacks_the_masks_a_model_file_stores_as_bits(tmp_path):
    """Masks are stored 8 to a byte; reading the file as plain weights gives them back as bool tensors."""
    from torchslim.models.registry import read_state_dict
    from torchslim.sparsity import attach_masks, set_mask

    torch.manual_seed(0)
    model = create_model("digits_cnn", width=8)
    layer = attach_masks(model)["0"]
    set_mask(layer, torch.rand_like(layer.weight) > 0.5)
    save_model(model, tmp_path / "m.safetensors", input_size=(1, 8, 8))
    state = read_state_dict(tmp_path / "m.safetensors")
    want = model.state_dict()
    masks = [k for k, v in want.items() if v.dtype == torch.bool]
    assert masks and all(state[k].dtype == torch.bool and torch.equal(state[k], want[k]) for k in masks)
    assert set(state) == set(want)
