import argparse
import contextlib

import pytest

from torchslim.cli.main import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("argv", [[], ["-h"], ["--help"]])
def test_top_level_help_renders(capsys, argv):
    with pytest.raises(SystemExit) if argv else contextlib.nullcontext():
        main(argv)
    out, err = capsys.readouterr()
    assert "COMMAND" in out and "sensitivity" in out and "Traceback" not in err


def test_every_subcommand_help_renders():
    subcommands = _subcommands()
    assert {"prune", "sparsify", "decompose", "quantize", "auto", "sensitivity"} <= set(subcommands)
    for name, sub in subcommands.items():
        assert f"torchslim {name}" in sub.format_help(), name

