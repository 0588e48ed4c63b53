"""Coverage: every torchvision classification model, built directly (no torchslim constructor recorded),
plain and pruned (L1, 25 % channels), saved with `torchslim.io.save_model` and loaded back with
`load_model`; the loaded model's output must equal the original's bit for bit.

    python -m benchmarks.bench_model_file_zoo [--models a,b] [--budget-min 12] [--max-params 150e6]

Random initialisation (no downloads), batch 1, small inputs (64x64; 96 for Inception-v3, 224 where a model
needs it: ViT, Swin, MaxViT). One process on one core; models run cheapest family member first, and the run
stops at the time budget (the remaining models are listed as not run). Models above --max-params are
skipped (memory of this shared machine). Status per variant: `ok`, `MISMATCH`, `refused: ...` (a clear
error at save time) or `BUG: ...`.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch
import torchvision

from benchmarks.bench_prune_coverage import build_torchvision, ordered
from benchmarks.common import command_line, md_table, write_result


def _size(name: str) -> int:
    if name.startswith(("vit", "swin", "maxvit")):
        return 256 if name.startswith("swin_v2") else 224
    return 96 if name == "inception_v3" else 64


def check(model, x, folder) -> str:
    from torchslim.errors import TorchslimError
    from torchslim.io import load_model, save_model

    try:
        with torch.no_grad():
            y = model(x)
            loaded = load_model(save_model(model, f"{folder}/m.safetensors"))
            return "ok" if torch.equal(y, loaded(x)) else "MISMATCH"
    except TorchslimError as e:
        return f"refused: {type(e).__name__}: {str(e)[:160]}"
    except Exception as e:
        return f"BUG: {type(e).__name__}: {str(e)[:160]}"


def main(argv=None):
    import torchslim

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", help="comma-separated names (default: the whole zoo)")
    ap.add_argument("--budget-min", type=float, default=12)
    ap.add_argument("--max-params", type=float, default=150e6)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    names = args.models.split(",") if args.models else ordered(torchvision.models.list_models(module=torchvision.models))
    t_start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if time.perf_counter() - t_start > args.budget_min * 60:
                rows.append({"model": name, "plain": "not run (budget)", "pruned": "not run (budget)"})
                continue
            t0 = time.perf_counter()
            with torch.device("meta"):
                try:
                    params = sum(p.numel() for p in build_torchvision(name).parameters())
                except Exception:  # RegNet's constructor computes widths from real tensors
                    params = 0
            if params > args.max_params:
                rows.append({"model": name, "plain": f"skipped ({params / 1e6:.0f}M params)", "pruned": "skipped"})
                continue
            model = build_torchvision(name)
            x = torch.randn(1, 3, _size(name), _size(name))
            row = {"model": name, "input": x.shape[-1], "plain": check(model, x, folder)}
            try:
                pruned = torchslim.prune(model, "l1", example_input=x, ratio=0.25, inplace=True).eval()
                row["pruned"] = check(pruned, x, folder)
            except Exception as e:
                row["pruned"] = f"not pruned ({type(e).__name__})"
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(row, flush=True)
            del model
    wall = (time.perf_counter() - t_start) / 60
    n = {k: sum(r.get(k) == "ok" for r in rows) for k in ("plain", "pruned")}
    bad = [r["model"] for r in rows if "MISMATCH" in (r["plain"], r.get("pruned")) or "BUG" in r["plain"] + r.get("pruned", "")]
    md = ("## Model files across the torchvision zoo\n\n"
          f"Command: `{command_line()}` ({platform.processor() or platform.machine()}, one thread, budget "
          f"{args.budget_min:.0f} min, {wall:.1f} min used). Each model built directly with torchvision (random "
          "init), saved with `torchslim.io.save_model`, loaded with `load_model`, output compared with "
          f"`torch.equal`; then the same after `torchslim.prune(..., 'l1', ratio=0.25)`. **{n['plain']} / {len(rows)} "
          f"plain and {n['pruned']} pruned models load back with identical outputs**; mismatches or crashes: "
          f"{', '.join(bad) or 'none'}.\n\n"
          + md_table(["model", "input", "plain", "pruned", "wall (s)"],
                     [[r["model"], r.get("input", "-"), r["plain"], r.get("pruned", "-"), r.get("wall_s", "-")]
                      for r in rows]) + "\n")
    write_result("model_file_zoo", {"command": command_line(), "budget_min": args.budget_min, "wall_min": wall,
                                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                                    "rows": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
