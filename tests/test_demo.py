from pathlib import Path

from torchslim.demo import RECIPE, run_demo


def test_demo_recipe_exists_and_a_demo_run_writes_its_report(tmp_path):
    assert RECIPE.is_file()
    # The full demo recipe runs in `make demo`; here the shorter demo recipe exercises the same path.
    summary = run_demo(tmp_path / "run", recipe=Path(RECIPE).with_name("demo_digits.yaml"))
    assert summary["complete"] and summary["stages"][-1]["accuracy"]["top1"] > 80
    for name in ("report.html", "report.md", "report.json"):
        assert (tmp_path / "run" / name).is_file()
