"""Training steps on a machine where another job holds a core: torch's threads against the free cores.

    python -m benchmarks.bench_oversubscription [--quick] [--models digits_cnn resnet20]

torch starts one intra-op thread per core. When another process keeps one core busy, those threads
wait for each other at every parallel op, and a thread that is descheduled holds up the rest. Each
setting runs in a fresh Python process (OpenMP reads its settings once, at start-up): SGD steps of a
model (forward, cross entropy, backward, update), median ms per step, first with the machine as it is,
then with one extra process spinning on a core. Settings: torch's default thread count (one per
core), one thread (`OMP_NUM_THREADS=1`), and the default count with `OMP_WAIT_POLICY=PASSIVE`
(waiting threads sleep instead of spinning).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import command_line, md_table, write_result

SHAPES = {"digits_cnn": (64, (1, 8, 8)), "resnet20": (128, (3, 32, 32))}
SETTINGS = {"default threads": {}, "1 thread": {"OMP_NUM_THREADS": "1"},
            "default threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}

# one setting in its own process: median ms of SGD steps (up to `steps`, or ~`budget_s` seconds)
CHILD = """
import json, statistics, sys, time, torch
from torchslim.models import create_model
name, batch, shape, steps, budget_s = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
torch.manual_seed(0)
m = create_model(name); opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
for _ in range(3):
    step()
times, start = [], time.perf_counter()
while len(times) < steps and (len(times) < 3 or time.perf_counter() - start < budget_s):
    t = time.perf_counter(); step(); times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"ms": statistics.median(times), "steps": len(times), "threads": torch.get_num_threads()}))
"""


def measure(model: str, env: dict, steps: int, budget_s: float) -> dict:
    batch, shape = SHAPES[model]
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(batch), json.dumps(shape), str(steps), str(budget_s)],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--budget-s", type=float, default=15.0, help="per setting: stop after this long (3 steps at least)")
    ap.add_argument("--quick", action="store_true", help="digits_cnn only, 10 steps a setting")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.steps, args.budget_s = ["digits_cnn"], 10, 5.0
    t0 = time.time()
    res: dict = {"command": command_line(), "cores": os.cpu_count(), "load_average_start": os.getloadavg(), "rows": []}
    for busy in (False, True):
        # the other job in its own session, as another user's job is: with the kernel's autogroup
        # scheduling a session shares the CPU as one group (a spinner in this session would not)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) if busy else None
        try:
            for model in args.models:
                for label, env in SETTINGS.items():
                    r = measure(model, env, args.steps, args.budget_s)
                    res["rows"].append({"model": model, "other job": busy, "setting": label, **r})
                    print(res["rows"][-1], flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    res["seconds"] = time.time() - t0
    write_result("oversubscription" + ("-quick" if args.quick else ""), res, markdown(res))
    return 0


def _autogroup() -> str:
    try:
        return "on" if open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1" else "off"
    except OSError:
        return "unknown"


def markdown(res: dict) -> str:
    quiet = {(r["model"], r["setting"]): r["ms"] for r in res["rows"] if not r["other job"]}
    rows = [[r["model"], "one core busy" if r["other job"] else "as it is", r["setting"], r["threads"],
             f"{r['ms']:.2f}", f"{r['ms'] / quiet[(r['model'], 'default threads')]:.1f}x", r["steps"]]
            for r in res["rows"]]
    load = "/".join(f"{v:.1f}" for v in res["load_average_start"])
    return "\n".join([
        "## Training on a shared machine: threads against free cores (`benchmarks/bench_oversubscription.py`)", "",
        f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min wall). {res['cores']} cores, load average at "
        f"start {load}. SGD steps (digits_cnn: batch 64 of 8x8; resnet20: batch 128 of 32x32), median ms per "
        "step, each setting in a fresh process; 'one core busy': another process, in its own session, spins on a "
        f"core meanwhile (kernel autogroup scheduling: {_autogroup()}). "
        "'vs quiet default': against torch's default thread count with the machine as it is.", "",
        md_table(["model", "machine", "setting", "torch threads", "ms / step", "vs quiet default", "steps timed"], rows),
        "",
        "When another job holds a core, give torch the free cores only (`OMP_NUM_THREADS`, `torch.set_num_threads`) "
        "or let its waiting threads sleep (`OMP_WAIT_POLICY=PASSIVE`, which costs some speed on a quiet machine).", ""])


if __name__ == "__main__":
    raise SystemExit(main())
