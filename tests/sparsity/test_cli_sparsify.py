import json

from torch import nn

from torchslim.cli.main import main
from torchslim.io import load_model
from torchslim.sparsity import MaskedConv2d, density_summary


def test_cli_sparsify_dns_writes_model_table_and_json(capsys, tmp_path):
    assert main(["train", "digits_cnn", "--data", "digits", "--epochs", "2", "--max-steps", "12", "--lr", "0.1",
                 "-o", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    code = main(["sparsify", str(tmp_path / "base" / "model.safetensors"), "--data", "digits", "--method", "dns",
                 "--epochs", "1", "--max-steps", "5", "--sparsity", "0.7", "--lr", "0.02", "-o", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "density" in out and "total" in out
    res = json.loads((tmp_path / "s" / "sparsify.json").read_text())
    assert res["method"] == "dns" and 0.29 < res["density"]["density"] <= 0.31
    assert res["test_before"]["top1"] > 50 and res["test_after"]["top1"] > 15  # chance is 10 %
    m = load_model(tmp_path / "s" / "model.safetensors")
    assert type(m[0]) is nn.Conv2d  # baked by default: plain layers, pruned weights at zero
    assert abs(density_summary(m)["density"] - res["density"]["density"]) < 1e-9
    size = (tmp_path / "s" / "model.safetensors").stat().st_size
    assert size <= (tmp_path / "base" / "model.safetensors").stat().st_size + 1024  # the manifest may grow
    assert main(["sparsify", str(tmp_path / "base" / "model.safetensors"), "--data", "digits", "--method",
                 "magnitude", "--sparsity", "0.7", "--keep-masks", "-o", str(tmp_path / "k")]) == 0
    assert isinstance(load_model(tmp_path / "k" / "model.safetensors")[0], MaskedConv2d)


def test_cli_bad_layer_sparsity_is_one_line(capsys, tmp_path):
    code = main(["sparsify", "digits_cnn", "--data", "digits", "--layer-sparsity", "{nope", "-o", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "--layer-sparsity" in err and len(err.strip().splitlines()) == 1


def test_every_registered_method_names_the_epochs_field_the_cli_sets():
    import dataclasses

    from torchslim.sparsity import METHODS
    from torchslim.sparsity.api import epochs_field

    for name in METHODS.names():
        config_cls, _ = METHODS.get(name)
        assert epochs_field(name) in {f.name for f in dataclasses.fields(config_cls)}, name


def test_cli_sparsify_energy_aware_runs(capsys, tmp_path):
    code = main(["sparsify", "digits_cnn", "--data", "digits", "--method", "energy-aware", "--epochs", "1",
                 "--max-steps", "2", "--limit", "256", "-o", str(tmp_path / "e")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads((tmp_path / "e" / "sparsify.json").read_text())["method"] == "energy-aware"
