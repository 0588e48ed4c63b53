"""What a new user meets first: model listing, flag names, help defaults, hints (issue 16.19)."""
import re

import pytest

from torchslim.cli.main import build_parser, main
from torchslim.errors import InvalidInputError


def _subparsers():
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return action.choices


def test_models_has_a_pretrained_column_and_says_when_nothing_matches(capsys):
    assert main(["models", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "pretrained" in out.splitlines()[0]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["resnet56"][3] == "yes" and rows["resnet110"][3] == "no" and rows["torchvision:resnet18"][3] == "no"
    assert main(["models", "nosuchmodel*"]) == 1
    assert "no model matches 'nosuchmodel*'" in capsys.readouterr().err


def test_help_shows_defaults_and_no_none_noise():
    for name, p in _subparsers().items():
        text = p.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
    prune = " ".join(_subparsers()["prune"].format_help().split())  # (help text wraps)
    assert "(default: l1)" in prune and "(default: uniform)" in prune and "(default: oneshot)" in prune


def test_one_name_for_batches_per_epoch_and_the_old_one_still_works(capsys, tmp_path):
    helps = {n: p.format_help() for n, p in _subparsers().items()}
    assert all("--finetune-steps" not in h for h in helps.values())
    assert all("--max-steps" in helps[n] for n in ("train", "prune", "decompose", "distill"))
    code = main(["prune", "digits_cnn", "--ratio", "0.5", "--data", "digits", "--limit", "64", "--finetune-epochs", "1",
                 "--finetune-steps", "1", "-o", str(tmp_path / "p")])
    assert code == 0 and "--finetune-steps is deprecated" in capsys.readouterr().out


def test_limit_means_the_same_everywhere():
    texts = set()
    for p in _subparsers().values():
        for a in p._actions:
            if "--limit" in a.option_strings:
                texts.add(a.help)
    assert len(texts) == 1 and "random subset" in texts.pop()


@pytest.mark.parametrize("kw", [dict(name="torchvision:resnet18", pretrained=True), dict(name="resnet110", pretrained=True)])
def test_weights_hints_name_the_flag(kw):
    from torchslim.models import create_model

    with pytest.raises(InvalidInputError, match=re.escape("--weights FILE")):
        create_model(kw.pop("name"), **kw)
