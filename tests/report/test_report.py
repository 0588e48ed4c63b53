"""Reports: json/md/html written per run, plots embedded, rendered by headless Chromium; compare runs."""
import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from torchslim.cli.main import main
from torchslim.errors import InvalidInputError
from torchslim.recipe import STAGES, StageParams, parse_recipe, register_stage, run_recipe
from torchslim.report import compare_runs, load_run, write_report

RECIPE = """\
name: report-test
description: tiny run for the report tests
model: {name: digits_cnn, kwargs: {width: 4}}
data: {name: digits, batch_size: 64, limit_train: 128, limit_eval: 64, augment: false}
measure: {repeats: 3, min_time_s: 0.0, runtimes: [torch, onnxruntime]}
stages:
  - method: finetune
    finetune: {epochs: 1, lr: 0.1}
  - method: scan
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import matplotlib.pyplot as plt

    @register_stage("scan", params=StageParams, overwrite=True)
    def scan(model, params, ctx):
        """Test stage: leaves a sensitivity plot in its folder, as a pruning scan would."""
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0.1, 0.5, 0.9], [99, 95, 40])
        ax.set_title("sensitivity")
        fig.savefig(ctx.stage_dir / "sensitivity.png")
        plt.close(fig)
        return model

    d = tmp_path_factory.mktemp("run") / "run"
    run_recipe(parse_recipe(RECIPE, "report.yaml"), d, progress=False, log=lambda *a: None)
    yield d
    STAGES._entries.pop("scan", None)


def test_report_files_hold_every_figure(run_dir):
    rep = json.loads((run_dir / "report.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == ["00-input", "01-finetune", "02-scan"]
    for s in rep["stages"]:
        assert s["params_count"] > 0 and s["macs"] > 0 and s["size_bytes"] > 0
        assert 0 <= s["accuracy"]["top1"] <= 100
        assert s["latency"]["torch"]["median_ms"] > 0 and s["latency"]["onnxruntime"]["median_ms"] > 0
        assert {l["type"] for l in s["layers"]} >= {"Conv2d", "Linear"}
    assert rep["stages"][2]["images"] == ["sensitivity.png"]
    assert rep["complete"] and rep["machine"]["cpu"]
    md = (run_dir / "report.md").read_text()
    assert "| 01-finetune | finetune |" in md and "![sensitivity.png](stages/02-scan/sensitivity.png)" in md
    for name in re.findall(r"\(plots/([^)]+)\)", md):
        assert (run_dir / "plots" / name).stat().st_size > 1000
    assert {"accuracy_vs_size.png", "accuracy_vs_latency_torch.png", "accuracy_vs_latency_onnxruntime.png"} <= set(
        p.name for p in (run_dir / "plots").iterdir())


def test_html_is_one_file_with_embedded_pngs(run_dir):
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 5  # 4+ plots and the sensitivity plot
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert 'src="http' not in html and "<link" not in html  # nothing fetched from elsewhere


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium(run_dir, tmp_path):
    from matplotlib.image import imread

    flags = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1200,1600", "--user-data-dir=" + str(tmp_path / "profile")]
    url = (run_dir / "report.html").resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    assert '<table class="stages">' in dom and "02-scan" in dom and "Compression report: report-test" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=60)
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # not blank: text, tables and plots
    # the plots are drawn: some rows in the lower half hold colours, not just black text on white
    colour = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.3
    assert colour[600:].sum() > 2000


def test_report_command_regenerates_and_compare_puts_runs_side_by_side(run_dir, tmp_path, capsys):
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    shutil.rmtree(other / "stages/02-scan")  # an unfinished run
    (other / "stages/02-scan").mkdir()
    assert load_run(other)["pending"] == ["02-scan"]
    result = compare_runs([run_dir, other], tmp_path / "cmp")
    assert [r[1] for r in result["rows"]] == ["02-scan", "01-finetune"] and "(unfinished)" in result["rows"][1][0]
    assert (tmp_path / "cmp/compare.html").read_text().count("data:image/png;base64,") >= 1
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(other), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["final stage"] == "02-scan" and float(rows[0]["top-1 %"]) >= 0


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="not a torchslim run folder"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2


def test_per_layer_figures_stop_at_the_last_stage_that_still_has_the_layers():
    from torchslim.report.build import _last_per_layer

    layers = [{"name": "0", "type": "Conv2d"}, {"name": "3", "type": "Conv2d"}]
    stages = [{"stage": "00-input", "layers": layers}, {"stage": "01-tucker", "layers": [{"name": "3.0"}]},
              {"stage": "02-quantize", "layers": [{"name": "OnnxRuntimeModule"}]}]
    assert _last_per_layer(stages)["stage"] == "01-tucker"  # decomposed children count, an opaque int8 graph not
    assert _last_per_layer(stages[:1] + stages[2:]) is None


def test_compare_and_report_read_a_folder_holding_only_report_json(run_dir, tmp_path, capsys):
    only = tmp_path / "copied"
    only.mkdir()
    shutil.copy(run_dir / "report.json", only / "report.json")
    assert main(["report", str(only)]) == 0 and (only / "report.html").is_file()
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(only), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["top-1 %"] == rows[1]["top-1 %"]


def test_a_single_command_folder_is_told_what_compare_needs(tmp_path, capsys):
    (tmp_path / "prune.json").write_text("{}")
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "prune.json" in err and "torchslim compress" in err and len(err.strip().splitlines()) == 1


def test_tradeoff_range_leaves_out_an_untrained_first_point():
    from torchslim.report.plots import tradeoff, y_range

    lo, hi = y_range([10.0, 91.2, 90.1, 91.6])
    assert 85 < lo < 90.1 and 91.6 < hi < 95
    assert y_range([90.0, 91.2, 90.1]) is None  # nothing far off: autoscale
    png = tradeoff({"run": [("input", 1.0, 10.0), ("finetune", 1.0, 91.2), ("prune", 0.5, 90.1),
                            ("int8", 0.2, 91.6)]}, "ms", "t")
    assert png[:4] == b"\x89PNG"
