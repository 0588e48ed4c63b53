"""Run reports: report.json (every figure), report.md (tables + PNG files), report.html (one file, plots inline).

Everything is read back from the run folder (`stages/*/metrics.json`), so `torchslim report RUN_DIR`
regenerates the same report at any time, and `compare_runs` puts several runs side by side.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from pathlib import Path

from torchslim.errors import InvalidInputError
from torchslim.report.format import human
from torchslim.runtimes import RUNTIMES


def _write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def load_run(run_dir: str | os.PathLike) -> dict:
    """The run's figures, stage by stage, from its folder."""
    run_dir = Path(run_dir)
    stages_dir = run_dir / "stages"
    if not stages_dir.is_dir():
        if (run_dir / "report.json").is_file():  # a run's report on its own (copied, or its stages removed)
            run = json.loads((run_dir / "report.json").read_text())
            if isinstance(run, dict) and run.get("stages"):
                for st in run["stages"]:  # the stage folders' images are gone with the folders
                    st["images"] = [i for i in st.get("images", []) if (stages_dir / st["stage"] / i).is_file()]
                return run | {"run_dir": str(run_dir)}
        found = sorted(p.name for p in run_dir.glob("*.json")) if run_dir.is_dir() else []
        raise InvalidInputError(
            f"{run_dir} is not a torchslim run folder: compare and report read the stages/ folder (or the "
            "report.json) that `torchslim compress RECIPE -o DIR` writes"
            + (f"; this folder holds {', '.join(found)} from a single command: `torchslim evaluate` / "
               "`analyze` measure its model.safetensors" if found else ""))
    recipe = json.loads((run_dir / "recipe.json").read_text()) if (run_dir / "recipe.json").is_file() else {}
    stages, machine, pending = [], {}, []
    for d in sorted(p for p in stages_dir.iterdir() if p.is_dir()):
        f = d / "metrics.json"
        if not f.is_file():
            pending.append(d.name)
            continue
        info = json.loads(f.read_text())
        m = info.get("measure", {})
        machine = machine or m.get("machine", {})
        stages.append({
            "stage": d.name, "method": info.get("method"), "params": info.get("params", {}),
            "accuracy": m.get("accuracy", {}), "before_recovery": info.get("before_recovery"),
            "params_count": m.get("params"), "nonzero_params": m.get("nonzero_params"), "macs": m.get("macs"),
            "size_bytes": m.get("size_bytes"),
            "latency": {rt: v for rt, v in m.get("latency", {}).items()},
            "metrics": info.get("metrics", {}), "artifacts": info.get("artifacts", {}),
            "history": info.get("history", []), "policy": info.get("policy"), "time_s": info.get("time_s"),
            "images": sorted(p.name for p in d.glob("*.png")),
            "layers": m.get("layers", []),
        })
    if not stages:
        raise InvalidInputError(f"{run_dir}: no finished stage yet")
    data = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").is_file() else {}
    return {"name": recipe.get("name", run_dir.name), "run_dir": str(run_dir), "recipe": recipe, "data": data,
            "machine": machine, "stages": stages, "pending": pending,
            "complete": not pending and len(stages) == len(recipe.get("stages", [])) + 1}


def _lat(stage: dict, runtime: str) -> float | None:
    return (stage["latency"].get(runtime) or {}).get("median_ms")


def _top1(stage: dict) -> float | None:
    return stage["accuracy"].get("top1")


def stage_rows(run: dict) -> list[list[str]]:
    base = run["stages"][0]
    rows = []
    for s in run["stages"]:
        def ratio(key):
            return f" ({base[key] / s[key]:.1f}x)" if s.get(key) and base.get(key) and s is not base else ""

        lat = []
        for rt in RUNTIMES:
            v = _lat(s, rt)
            err = (s["latency"].get(rt) or {}).get("error")
            lat.append(f"{v:.3f}" if v is not None else ("error" if err else "-"))
        before = s.get("before_recovery") or {}
        rows.append([
            s["stage"], s["method"] or "",
            f"{_top1(s):.2f}" if _top1(s) is not None else "-",
            f"{before['top1']:.2f}" if before.get("top1") is not None else "",
            f"{human(s['params_count'])}{ratio('params_count')}" if s["params_count"] is not None else "-",
            f"{human(s['nonzero_params'])}" if s["nonzero_params"] is not None else "-",
            f"{human(s['macs'])}{ratio('macs')}" if s["macs"] is not None else "-",
            f"{human(s['size_bytes'], 'B')}{ratio('size_bytes')}" if s["size_bytes"] else "-",
            *lat,
        ])
    return rows


HEADER = ["stage", "method", "top-1 %", "top-1 before recovery", "params", "nonzero", "MACs", "file size",
          *[f"{rt} ms" for rt in RUNTIMES]]


def _plots(run: dict) -> dict[str, bytes]:
    from torchslim.report import plots

    st = run["stages"]
    labels = [s["stage"] for s in st]
    out = {}
    for rt in RUNTIMES:
        pts = [(s["stage"].split("-", 1)[-1], _lat(s, rt), _top1(s)) for s in st]
        if any(p[1] is not None for p in pts):
            out[f"accuracy_vs_latency_{rt}.png"] = plots.tradeoff(
                {run["name"]: pts}, f"latency, {rt}, batch 1 (ms, median)", f"Accuracy vs latency ({rt})")
    out["accuracy_vs_size.png"] = plots.tradeoff(
        {run["name"]: [(s["stage"].split("-", 1)[-1], (s["size_bytes"] or 0) / 1024, _top1(s)) for s in st]},
        "model file size (KiB)", "Accuracy vs size on disk")
    out["stages.png"] = plots.stage_bars(labels, {
        "params": [s["params_count"] for s in st], "nonzero params": [s["nonzero_params"] for s in st],
        "MACs": [s["macs"] for s in st], "file size": [s["size_bytes"] for s in st],
        **({"torch latency": [_lat(s, "torch") for s in st]} if all(_lat(s, "torch") for s in st) else {}),
    }, "What each stage changed")
    first, stage = st[0]["layers"], _last_per_layer(st)
    if first and stage:
        last = stage["layers"]
        rows = [l for l in first if l["params"]]

        def final_nonzero(name):  # a replaced layer (e.g. decomposed into name.0, name.1) counts as a whole
            hits = [l["nonzero_params"] for l in last if l["name"] == name or l["name"].startswith(name + ".")]
            return sum(hits) if hits else 0

        out["layers.png"] = plots.layer_params([f"{l['name']} {l['type']}" for l in rows],
                                               [l["nonzero_params"] for l in rows],
                                               [final_nonzero(l["name"]) for l in rows], "Nonzero parameters per layer",
                                               after_label=stage["stage"])
    return out


def _last_per_layer(stages: list[dict]) -> dict | None:
    """The last stage whose layer table still names the input model's layers. A stage that runs as one
    opaque graph (an int8 ONNX Runtime model) lists a single module, so per-layer figures stop before it."""
    names = {l["name"] for l in stages[0]["layers"]} if stages and stages[0]["layers"] else set()
    for s in reversed(stages[1:]):
        if any(l["name"] in names or l["name"].split(".")[0] in names for l in s["layers"] or []):
            return s
    return None


def _md_table(header, rows) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


LAYER_HEADER = ["layer", "type", "output", "params", "nonzero", "density", "MACs"]


def _layer_rows(layers: list[dict]) -> list[list[str]]:
    return [[l["name"], l["type"], "x".join(str(d) for d in l["output_shape"][1:]), human(l["params"]),
             human(l["nonzero_params"]), f"{l.get('density', 1.0):.2f}", human(l["macs"])] for l in layers]


def _machine_line(machine: dict) -> str:
    if not machine:
        return "latency not measured"
    return (f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} thread(s), torch {machine.get('torch', '?')}, "
            f"onnxruntime {machine.get('onnxruntime', '-')}, openvino {machine.get('openvino', '-')}; "
            f"CPU flags {' '.join(machine.get('cpu_flags', [])) or '-'}; peak GEMM {machine.get('peak_gemm_gflops', '?')} GFLOP/s")


def _smoke_line(run: dict) -> str | None:
    s = run["recipe"].get("smoke")
    if not s:
        return None
    steps = f", at most {s['steps']} steps per epoch" if s.get("steps") else ""
    return (f"Smoke run: {s.get('images')} train / {s.get('images')} eval images, at most {s.get('epochs')} "
            f"epoch(s) per budget{steps}. It shows that the recipe runs end to end; its accuracies and "
            "ratios are not the recipe's results (run it without --smoke for those).")


def _markdown(run: dict, plot_files: list[str]) -> str:
    lines = [f"# Compression report: {run['name']}", ""]
    if _smoke_line(run):
        lines += [f"> **{_smoke_line(run)}**", ""]
    if run["recipe"].get("description"):
        lines += [run["recipe"]["description"], ""]
    lines += [f"Accuracy on the `{run['recipe'].get('data', {}).get('eval_split', 'test')}` "
              f"split; latency: median of repeated batch-1 forward passes on {_machine_line(run['machine'])}. "
              "Ratios are relative to the input model.", ""]
    if run.get("data"):
        d = run["data"]
        lines += [f"Data: `{d['data']}`, {d['classes']} classes"
                  + (f", {d['layout']}" if d.get("layout") else "") + f"; preprocessing: {d['preprocessing']}", ""]
    if run["pending"]:
        lines += [f"**Unfinished stages:** {', '.join(run['pending'])} (rerun the same command to resume).", ""]
    lines += ["## Stages", "", _md_table(HEADER, stage_rows(run)), ""]
    for s in run["stages"]:
        extra = {k: v for k, v in s["metrics"].items()}
        if s["params"] or extra or s["history"]:
            lines += [f"### {s['stage']}", ""]
            if s["params"]:
                lines += [f"params: `{json.dumps(s['params'])}`", ""]
            if extra:
                lines += [f"figures: `{json.dumps(extra, default=str)}`", ""]
            if s["history"]:
                h = s["history"]
                lines += [f"fine-tuning: {len(h)} epoch(s), last: " + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in h[-1].items()), ""]
        for img in s["images"]:
            lines += [f"![{img}](stages/{s['stage']}/{img})", ""]
    lines += ["## Plots", ""] + [f"![{p}](plots/{p})\n" for p in plot_files]
    last = _last_per_layer(run["stages"]) or run["stages"][-1]
    if last["layers"]:
        later = "" if last is run["stages"][-1] else "; the later stages run as one graph"
        lines += [f"## Layers of the final model ({last['stage']}{later})", "",
                  _md_table(LAYER_HEADER, _layer_rows(last["layers"])), ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,td:nth-child(2),th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.plots{display:flex;flex-wrap:wrap;gap:1em}
.plots figure{margin:0;flex:1 1 480px}code{background:#f5f5f5;padding:1px 4px}.warn{color:#a40}"""


def _html_table(header, rows, cls="") -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _html(run: dict, plots: dict[str, bytes], run_dir: Path) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>torchslim report: {esc(run['name'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Compression report: {esc(run['name'])}</h1>"]
    if _smoke_line(run):
        parts.append(f"<p class='warn'><strong>{esc(_smoke_line(run))}</strong></p>")
    if run["recipe"].get("description"):
        parts.append(f"<p>{esc(run['recipe']['description'])}</p>")
    parts.append(f"<p>Accuracy on the <code>{esc(run['recipe'].get('data', {}).get('eval_split', 'test'))}</code> split. "
                 f"Latency: {esc(_machine_line(run['machine']))}. Ratios are relative to the input model.</p>")
    if run["pending"]:
        parts.append(f"<p class='warn'>Unfinished stages: {esc(', '.join(run['pending']))} "
                     "(rerun the same command to resume).</p>")
    parts += ["<h2>Stages</h2>", _html_table(HEADER, stage_rows(run), "stages")]
    parts += ["<h2>Plots</h2><div class='plots'>"]
    parts += [f"<figure>{_img(data, name)}<figcaption>{esc(name)}</figcaption></figure>" for name, data in plots.items()]
    parts.append("</div>")
    for s in run["stages"]:
        for img in s["images"]:
            parts += [f"<h3>{esc(s['stage'])}: {esc(img)}</h3>", _img((run_dir / 'stages' / s['stage'] / img).read_bytes(), img)]
    parts.append("<h2>Stage details</h2>")
    for s in run["stages"]:
        body = []
        if s["params"]:
            body.append(f"<p>params: <code>{esc(json.dumps(s['params']))}</code></p>")
        if s["metrics"]:
            body.append(f"<p>figures: <code>{esc(json.dumps(s['metrics'], default=str))}</code></p>")
        if s["history"]:
            keys = list(s["history"][0])
            body.append(_html_table(keys, [[f"{h.get(k):.4g}" if isinstance(h.get(k), float) else h.get(k, "")
                                            for k in keys] for h in s["history"]]))
        if s["layers"]:
            body.append(_html_table(LAYER_HEADER, _layer_rows(s["layers"]), "layers"))
        parts.append(f"<details><summary>{esc(s['stage'])} ({esc(s['method'] or '')})</summary>{''.join(body)}</details>")
    parts.append(f"<p><small>generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} "
                 "by torchslim</small></p></body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | os.PathLike) -> dict:
    """Write report.json, report.md (+ plots/*.png) and the single-file report.html into `run_dir`.

    Example:
        >>> write_report("runs/demo")["stages"][-1]["accuracy"]["top1"]
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    plots = _plots(run)
    (run_dir / "plots").mkdir(exist_ok=True)
    for name, data in plots.items():
        _write(run_dir / "plots" / name, data)
    _write(run_dir / "report.json", json.dumps(run, indent=2, default=str))
    _write(run_dir / "report.md", _markdown(run, list(plots)))
    _write(run_dir / "report.html", _html(run, plots, run_dir))
    return run


COMPARE_HEADER = ["run", "final stage", "top-1 %", "params", "MACs", "file size", *[f"{rt} ms" for rt in RUNTIMES]]


def compare_runs(run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None) -> dict:
    """Final figures of several runs side by side; with `out`, also compare.md / compare.html there.

    Returns {"rows": [...], "runs": [run summaries]}.
    """
    from torchslim.report import plots

    runs = [load_run(d) for d in run_dirs]
    rows = []
    for r in runs:
        s = r["stages"][-1]
        rows.append([r["name"] + ("" if r["complete"] else " (unfinished)"), s["stage"],
                     f"{_top1(s):.2f}" if _top1(s) is not None else "-", human(s["params_count"]), human(s["macs"]),
                     human(s["size_bytes"], "B"),
                     *[f"{_lat(s, rt):.3f}" if _lat(s, rt) is not None else "-" for rt in RUNTIMES]])
    result = {"header": COMPARE_HEADER, "rows": rows, "runs": runs}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        names = [f"{r['name']} [{Path(r['run_dir']).name}]" for r in runs]
        figs = {"compare_accuracy_vs_size.png": plots.tradeoff(
            {n: [(s["stage"].split("-", 1)[-1], (s["size_bytes"] or 0) / 1024, _top1(s)) for s in r["stages"]]
             for n, r in zip(names, runs)}, "model file size (KiB)", "Accuracy vs size on disk")}
        if all(_lat(s, "torch") is not None for r in runs for s in r["stages"]):
            figs["compare_accuracy_vs_latency.png"] = plots.tradeoff(
                {n: [(s["stage"].split("-", 1)[-1], _lat(s, "torch"), _top1(s)) for s in r["stages"]]
                 for n, r in zip(names, runs)}, "latency, torch, batch 1 (ms)", "Accuracy vs latency")
        for name, data in figs.items():
            _write(out / name, data)
        _write(out / "compare.md", "# Runs compared\n\n" + _md_table(COMPARE_HEADER, rows) + "\n\n"
               + "\n".join(f"![{n}]({n})\n" for n in figs))
        _write(out / "compare.html", f"<!doctype html><html><head><meta charset='utf-8'><title>torchslim compare</title>"
               f"<style>{CSS}</style></head><body><h1>Runs compared</h1>{_html_table(COMPARE_HEADER, rows)}"
               + "".join(f"<figure>{_img(d, n)}</figure>" for n, d in figs.items()) + "</body></html>")
        result["files"] = [str(out / "compare.md"), str(out / "compare.html")]
    return result
