"""A user's own images and network through every command: a class-folder tree made from CIFAR-10 test images
(JPEG/PNG/WebP, grayscale/RGBA/CMYK/palette, 32-64 px) and a CNN from a user's .py file, on tiny budgets."""
import json

import pytest

from tests.cli.test_cli import run
from tests.conftest import needs_cifar
from tests.data.image_folders import cifar_test_images, write_class_folders
from torchslim.models import user

NET = '''
from torch import nn

def build(num_classes=10, width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
'''


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    from tests.conftest import shared_data_available

    if not shared_data_available("cifar10/test.npz"):
        pytest.skip("needs ../shared/data/cifar10")
    root = tmp_path_factory.mktemp("own")
    x, y, _ = cifar_test_images(8)
    write_class_folders(root / "photos", x, y, mixed=True)
    (root / "net.py").write_text(NET)
    return root


def _reports_data(err: str, root) -> None:
    line = next(ln for ln in err.splitlines() if ln.startswith("data: "))
    assert str(root / "photos") in line and "10 classes" in line and "centre-crop 32" in line and "mean" in line


@needs_cifar
def test_every_command_on_a_class_folder_with_a_network_from_a_user_file(capsys, own, monkeypatch, tmp_path):
    monkeypatch.setattr(user, "_TRUSTED", set())
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "cache"))
    photos, net = str(own / "photos"), f"{own / 'net.py'}:build"
    common = ["--data", photos, "--input-size", "3,32,32", "--batch-size", "16", "--workers", "0"]

    code, out, err = run(capsys, "analyze", net, "--model-kwargs", '{"width": 4}', "--input-size", "3,32,32")
    assert code == 0 and "parameters" in out, err

    code, out, err = run(capsys, "train", net, *common, "--epochs", "1", "--max-steps", "3", "-o", str(own / "t"))
    assert code == 0, err
    _reports_data(err, own)
    from torchslim.io import model_info

    info = model_info(own / "t" / "model.safetensors")
    assert info["classes"][:2] == ["airplane", "automobile"] and info["preprocess"]["input_size"] == [3, 32, 32]
    assert info["arch"]["name"] == net
    trained = str(own / "t" / "model.safetensors")

    user._TRUSTED.clear()  # as in a new process: the file alone must not import net.py
    code, out, err = run(capsys, "evaluate", trained, "--data", photos, "--workers", "0")
    assert code == 2 and "--code" in err
    code, out, err = run(capsys, "evaluate", trained, "--code", net, "--data", photos)  # default workers
    assert code == 0 and "top-1" in out, err
    _reports_data(err, own)  # preprocessing read back from the model file, not given again

    saved = ["--code", net, "--data", photos, "--batch-size", "16", "--workers", "0"]
    steps = [
        ("prune", ["--ratio", "0.25", "--cache", "-o", str(own / "p")]),
        ("decompose", ["--rank", "0.9", "--no-latency", "--calibration", "16", "-o", str(own / "d")]),
        ("quantize", ["--method", "int8-ptq", "--calib-images", "16", "--threads", "1",
                      "-o", str(own / "q")]),
        ("sparsify", ["--sparsity", "0.5", "--prune-schedule", "oneshot", "-o", str(own / "s")]),
    ]
    for command, extra in steps:
        code, out, err = run(capsys, command, trained, *saved, *extra)
        assert code == 0, f"{command}: {err[-2000:]}"
        _reports_data(err, own)
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 1  # prune's --cache

    code, out, err = run(capsys, "distill", "--teacher", trained, "--student", net, "--code", net, "--data", photos,
                         "--epochs", "1", "--max-steps", "2", "--batch-size", "16", "-o", str(own / "kd"))
    assert code == 0, err
    _reports_data(err, own)

    recipe = own / "recipe.yaml"
    recipe.write_text(f"""
name: own-data
model: {{name: "net.py:build", kwargs: {{width: 8}}, input_size: [3, 32, 32]}}
data: {{path: photos, batch_size: 16, workers: 0}}
measure: {{runtimes: [torch], repeats: 2, min_time_s: 0.0}}
stages:
  - method: prune
    params: {{ratio: 0.25}}
    finetune: {{epochs: 1, max_steps_per_epoch: 2}}
  - method: evaluate
""")
    code, out, err = run(capsys, "compress", str(recipe), "-o", str(own / "c"), "--no-progress")
    assert code == 0, out[-3000:] + err[-3000:]
    assert str(own / "photos") in out and "10 classes" in out
    report = json.loads((own / "c" / "report.json").read_text())
    assert report["data"]["classes"] == 10 and "centre-crop 32" in report["data"]["preprocessing"]
    assert "photos" in (own / "c" / "report.md").read_text()

    code, out, err = run(capsys, "auto", net, *common, "--target", "macs=0.9x", "--actions", "prune",
                         "--max-drop", "100", "--epochs", "0", "--eval-images", "16", "-o", str(own / "a"))
    assert code == 0, err[-3000:]
    _reports_data(err, own)


@needs_cifar
def test_number_of_outputs_must_match_the_classes(capsys, own, tmp_path):
    net = f"{own / 'net.py'}:build"
    base = ["--data", str(own / "photos"), "--input-size", "3,32,32", "--workers", "0"]
    code, out, err = run(capsys, "evaluate", net, "--model-kwargs", '{"num_classes": 4}', *base)
    assert code == 2 and "gives 4 outputs but" in err and "--num-classes 10" in err
    code, out, err = run(capsys, "evaluate", "resnet20", "--pretrained", "--num-classes", "10", *base)
    assert code == 0  # already 10: nothing to re-head
    code, out, err = run(capsys, "train", "resnet20", "--pretrained", "--num-classes", "5", *base, "-o", str(tmp_path / "o"))
    assert code == 2 and "gives 5 outputs" in err and not (tmp_path / "o").exists()


def _tree(root, files: dict):
    from PIL import Image

    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir(exist_ok=True)
        elif content == "png":
            Image.new("RGB", (32, 32), (10, 200, 30)).save(p)
        else:
            p.write_bytes(content)
    root.mkdir(parents=True, exist_ok=True)
    return root


GOOD = {f"{c}/{i}.png": "png" for c in ("cat", "dog") for i in range(3)}


@pytest.mark.parametrize("files, model, needle", [
    (None, "resnet20", "does not exist"),
    ({}, "resnet20", "holds no class folders"),
    ({**GOOD, "bird": None}, "resnet20", "bird is empty"),
    ({f"train/{k}": v for k, v in GOOD.items()} | {"val/cat/1.png": "png", "val/emu/1.png": "png"}, "resnet20",
     "class 'emu' is not in"),
    ({**GOOD, "cat/notes.txt": b"x"}, "resnet20", "notes.txt: not an image file"),
    ({**GOOD, "dog/bad.jpg": b"\xff\xd8\xff garbage"}, "resnet20", "bad.jpg: cannot be decoded"),
    (GOOD, "{tmp}/missing.py:build", "file '{tmp}/missing.py' does not exist"),
    (GOOD, "no_such_module_xyz:build", "module 'no_such_module_xyz' cannot be imported"),
    (GOOD, "{net}:nope", "has no 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_output(capsys, own, tmp_path, files, model, needle):
    data = tmp_path / "data"
    if files is not None:
        _tree(data, files)
    fill = dict(tmp=tmp_path, net=own / "net.py")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "train", model.format(**fill), "--data", str(data), "--input-size", "3,32,32",
                         "--workers", "0", "--epochs", "1", "-o", str(out_dir))
    assert code == 2, err
    assert needle.format(**fill) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_skip_bad_images_counts_them(capsys, tmp_path):
    data = _tree(tmp_path / "data", {**GOOD, "dog/bad.jpg": b"\xff\xd8\xff garbage", "cat/x.txt": b"x"})
    code, out, err = run(capsys, "evaluate", "resnet20", "--data", str(data), "--workers", "0", "--num-classes", "2",
                         "--skip-bad-images")
    assert code == 0 and "skipped 2 bad image files" in err and "2 classes" in err


def test_recipe_with_a_missing_data_folder_or_code_file(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {name: \"nonet.py:build\"}\ndata: {path: nowhere}\n"
                      "stages:\n  - method: evaluate\n")
    code, out, err = run(capsys, "compress", str(recipe), "-o", str(tmp_path / "run"))
    assert code == 2 and "data.path: folder" in err and "model.name: file" in err and "nonet.py" in err
    assert not (tmp_path / "run").exists()


def test_published_weights_missing_offline_fail_before_the_data_is_read(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TORCHSLIM_NO_DOWNLOAD", "1")
    data = _tree(tmp_path / "data", GOOD)
    code, out, err = run(capsys, "evaluate", "torchvision:mobilenet_v3_small", "--pretrained", "--data", str(data))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "data:" not in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err and "--weights" in err
