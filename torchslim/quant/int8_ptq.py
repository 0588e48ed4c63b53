"""Post-training int8 quantization with real int8 execution, measured against fp32 (Jacob et al. 2018;
Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient inference").

Weights: symmetric int8 per output channel. Activations: asymmetric uint8 from calibration data with
an observer (`torchslim.quant.observers`: minmax, percentile, mse, kl). BN is folded into the convs.

Execution paths (all built from the same BN-folded fp32 model and the same calibration batches):
- `ort-qdq`: ONNX Runtime, QuantizeLinear/DequantizeLinear pairs around float ops; ORT's CPU EP
  fuses each DQ -> Conv -> Q group into a QLinearConv-style int8 kernel at session creation.
- `ort-qoperator`: ONNX Runtime with explicit QLinearConv / QLinearMatMul / QLinearAdd operators.
- `torch-x86`: PyTorch eager int8 modules (FX graph mode, `torch.ao.quantization.quantize_fx`,
  x86 = fbgemm/oneDNN engine). PT2E moved to torchao, which torch 2.14 does not ship.
- `ov-qdq`: the `ort-qdq` model compiled by OpenVINO, which turns each Q/DQ pair into a FakeQuantize and
  runs the convolutions around it with its int8 kernels (VNNI / AMX where the CPU has them), as it runs
  NNCF's models (`torchslim.openvino_export.OpenVinoModule`).
- `ov-nncf`: NNCF's own PTQ (its quantizer placement and ranges) of the same BN-folded model on the same
  calibration images, run by OpenVINO (`torchslim.quant.nncf_ptq`; needs NNCF installed). Built with
  `compare` (when NNCF is installed) or when asked for; QAT's `input_ranges` do not apply to it.
Every path gets `quant_pre_process` (ORT) or FX fusion (torch); the ONNX activation ranges are
computed by our observers and handed to `onnxruntime.quantization.quantize_static` as its
calibration cache, so all paths quantize the same tensors to the same ranges.

`quantize_int8` measures each path's latency and its agreement with fp32 in one run and returns the
fastest correct one; `model.quant_report` holds the table. By default it is quick: one calibration, one
QDQ model, run in OpenVINO (where installed) and ONNX Runtime, the faster kept, only that one evaluated;
`compare=True` builds and evaluates every path of `PATHS` and the fake-quant torch reference.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.data import as_batches
from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.machine import installed_runtimes
from torchslim.onnx_runtime import OnnxRuntimeModule
from torchslim.analysis.latency import time_calls, torch_threads
from torchslim.progress import note
from torchslim.quant.bn_fold import fold_bn
from torchslim.quant.fakequant import wrap_layers
from torchslim.quant.observers import OBSERVERS, Histogram

PATHS = ("ort-qdq", "ort-qoperator", "torch-x86", "ov-qdq", "ov-nncf")


def quick_paths() -> tuple[str, ...]:
    """The default paths: one QDQ model, in OpenVINO where it is installed and in ONNX Runtime."""
    return ("ov-qdq", "ort-qdq") if "openvino" in installed_runtimes() else ("ort-qdq",)


@dataclass
class Int8Config:
    """Settings of int8 post-training quantization.

    observer: activation range observer (minmax | percentile | mse | kl). paths: execution paths to build
    and measure (default: `quick_paths()`, or all of `PATHS` with compare). path: "auto" returns the
    fastest correct path, or one name of `PATHS` (then only that one is built unless `paths` says more).
    compare: build every path, evaluate each on `eval_loader`, and build the fake-quant reference
    (minutes on a ResNet-56 with its test set); otherwise only fp32 and the chosen path are evaluated.
    calib_images: calibration images taken from `calib`. tolerance: a path is correct when the
    relative L2 error of its logits vs fp32 is at most this (and its argmax agreement >= 0.9 when
    the fp32 logits are confident). threads / batch_size: for latency.
    """

    observer: str = "mse"
    paths: tuple | None = None
    path: str = "auto"
    compare: bool = False
    calib_images: int = 256
    per_channel: bool = True  # per-channel weight scales (False: per tensor)
    preprocess: bool = True  # run ONNX Runtime's quantization pre-processing (shape inference, fusion)
    tolerance: float = 0.2
    threads: int | None = None  # intra-op threads for the latency measurement
    batch_size: int = 1
    repeats: int = 20  # timed runs per path
    min_time_s: float = 0.3  # at least this long timing each path
    extra_paths: dict = field(default_factory=dict)  # name -> quantize_static kwargs (benchmarks' ablations)


# ---------------------------------------------------------------- calibration data
def calibration_batches(calib, n_images: int) -> list[torch.Tensor]:
    """Up to `n_images` float input images of `calib` (anything `torchslim.data.as_batches` takes)."""
    if calib is None:
        raise InvalidInputError("int8 post-training quantization needs calibration data: calib=<DataLoader>")
    return [x.float() for x in as_batches(calib, n_images)]


# ---------------------------------------------------------------- ranges
def _two_pass(run_batches, names_of) -> dict[str, Histogram]:
    """Min/max pass, then histogram pass; `run_batches()` yields {name: array} per batch."""
    hists: dict[str, Histogram] = {}
    for vals in run_batches():
        for k, v in vals.items():
            hists.setdefault(k, Histogram()).update_range(v)
    for vals in run_batches():
        for k, v in vals.items():
            hists[k].update_hist(v)
    return hists


def onnx_activation_ranges(onnx_path: str, batches: list[torch.Tensor], observer: str) -> dict[str, tuple]:
    """Range of every float activation tensor of an ONNX model under `observer`."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    inits = {i.name for i in model.graph.initializer}
    outs = {o.name for o in model.graph.output}
    names = [model.graph.input[0].name]
    for node in model.graph.node:
        for t in node.output:
            if t and t not in inits and t not in names:
                names.append(t)
    for t in names[1:]:
        if t not in outs:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name

    def run():
        for x in batches:
            res = sess.run(out_names, {inp: x.numpy()})
            vals = {n: r for n, r in zip(out_names, res) if isinstance(r, np.ndarray) and r.dtype == np.float32}
            vals[inp] = x.numpy()
            yield vals

    obs = OBSERVERS.get(observer)
    return {k: obs(h) for k, h in _two_pass(run, names).items()}


def torch_input_ranges(model: nn.Module, layers: dict[str, nn.Module], batches, observer: str) -> dict[str, tuple]:
    """Range of the input of each module in `layers` (forward pre-hooks), under `observer`."""
    store: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: store.__setitem__(n, a[0].detach().numpy()))
             for n, m in layers.items()]

    def run():
        with torch.no_grad():
            for x in batches:
                store.clear()
                model(x)
                yield dict(store)

    try:
        hists = _two_pass(run, list(layers))
    finally:
        for h in hooks:
            h.remove()
    obs = OBSERVERS.get(observer)
    return {k: obs(h) for k, h in hists.items()}


def fake_quant_reference(fp32: nn.Module, batches, observer: str, input_ranges: dict | None = None) -> nn.Module:
    """The BN-folded model with fake-quantized weights (per-channel int8) and layer inputs (uint8);
    `input_ranges` {fqn: (lo, hi)} replace the calibrated ranges of those layers."""
    ref = copy.deepcopy(fp32).eval()
    plain = {n: ref.get_submodule(n) for n, m in fp32.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ranges = torch_input_ranges(ref, plain, batches, observer) | dict(input_ranges or {})
    wrappers = wrap_layers(ref)
    for n, w in wrappers.items():
        if n in ranges:
            w.set_range(*ranges[n])
    return ref.eval()


# ---------------------------------------------------------------- the paths
def _ort_quantize(src: str, dst: str, ranges: dict, fmt: str, per_channel: bool, **kw) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    cache = dst + ".calib.json"
    data = {k: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
            for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
    args = dict(quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache)
    args.update(kw)
    quantize_static(src, dst, None, **args)


class _RangeObserver(torch.ao.quantization.HistogramObserver):
    """torch's histogram observer with our range rule (an `OBSERVERS` name) in calculate_qparams."""

    rule = "mse"

    def _non_linear_param_search(self):
        h = Histogram()
        h.lo, h.hi = float(self.min_val), float(self.max_val)
        h.counts = self.histogram.detach().double().numpy()
        lo, hi = OBSERVERS.get(self.rule)(h)
        return torch.tensor(lo), torch.tensor(hi)


def torch_x86_int8(model: nn.Module, batches, observer: str) -> nn.Module:
    """FX graph mode int8 (x86 engine): conv+bn(+relu) fused, per-channel weights, our activation ranges."""
    from torch.ao.quantization import QConfig, QConfigMapping, default_per_channel_weight_observer
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise UnsupportedModelError("this torch build has no x86 quantized engine")
    torch.backends.quantized.engine = "x86"
    obs = type(f"_RangeObserver_{observer}", (_RangeObserver,), {"rule": observer})
    # reduce_range: fbgemm's u8 x s8 kernels can saturate 16-bit intermediates without it
    qconfig = QConfig(activation=obs.with_args(reduce_range=True), weight=default_per_channel_weight_observer)
    m = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao's own notices, not the user's to act on: reduce_range is set on purpose (above), and
        # the quantized-tensor deprecation concerns the eager int8 backend this path exists to compare.
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning)
        try:
            prepared = prepare_fx(m, QConfigMapping().set_global(qconfig), example_inputs=(batches[0][:1],))
        except Exception as e:
            raise UnsupportedModelError(f"{type(model).__name__} cannot be FX-traced for torch int8: {e}") from None
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared).eval()


# ---------------------------------------------------------------- measuring
def _latency_ms(fn, x, threads, repeats, min_time_s, warmup: int = 3) -> dict:
    with torch_threads(threads), torch.inference_mode():
        times = time_calls(lambda: fn(x), warmup, repeats, min_time_s)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return {"median_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1], "runs": len(times)}


def _agreement(ref: torch.Tensor, out: torch.Tensor) -> dict:
    ref, out = ref.float(), out.float()
    rel = float((out - ref).norm() / ref.norm().clamp_min(1e-12))
    return {"rel_l2_error": rel, "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean())}


def onnx_layer_inputs(onnx_path: str) -> dict[str, str]:
    """{module fqn: name of its input tensor} for the Conv / Gemm / MatMul nodes of a traced export, whose
    node names are scopes like "/layer1/layer1.0/conv1/Conv" (parent fqn, then the attribute name)."""
    import onnx

    out = {}
    for node in onnx.load(onnx_path).graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.name.startswith("/"):
            parts = node.name.strip("/").split("/")[:-1]
            if parts:
                leaf = parts[-1]
                out.setdefault(leaf if len(parts) == 1 or leaf.startswith(parts[-2] + ".")
                               else f"{parts[-2]}.{leaf}", node.input[0])
    return out


def quantize_int8(model: nn.Module, calib, config: Int8Config | None = None, *, eval_loader=None,
                  eval_batches: int | None = None, input_ranges: dict[str, tuple] | None = None) -> nn.Module:
    """Quantize `model` to int8, build every execution path, measure them against fp32, return the best.

    Args:
        model: a trained float model (eval mode is used; the input is NCHW float).
        calib: calibration data (DataBundle, DataLoader of (x, y) or tensors).
        config: `Int8Config`.
        eval_loader: optional labelled loader: top-1 of fp32, the fake-quant reference and every path.
        input_ranges: {layer fqn: (lo, hi)} of Conv/Linear inputs that replace the calibrated ranges
            (QAT's learned ranges) in the ONNX Runtime paths and the fake-quant reference; the FX
            `torch-x86` path calibrates its own.

    Returns:
        The int8 model of the chosen path (an `OnnxRuntimeModule` or a torch int8 GraphModule), with
        `.quant_report` (per-path latency, agreement, accuracy, sizes), `.reference` (fake-quant torch
        model) and `.fp32` (BN-folded float model).

    Example:
        >>> q = quantize_int8(model, data.calibration_batches(256))
        >>> q.quant_report["chosen"], q(x)
    """
    cfg = config or Int8Config()
    OBSERVERS.get(cfg.observer)
    from torchslim.quant.nncf_ptq import nncf_available

    every = tuple(p for p in PATHS if p != "ov-nncf" or nncf_available())
    paths = tuple(cfg.paths or (every if cfg.compare else (quick_paths() if cfg.path == "auto" else (cfg.path,))))
    unknown = set(paths) - set(PATHS)
    if unknown or (cfg.path != "auto" and cfg.path not in paths):
        raise InvalidInputError(f"unknown int8 path(s) {sorted(unknown) or cfg.path!r}; use {', '.join(PATHS)} or auto")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from torchslim.onnx_export import to_onnx
    from torchslim.openvino_export import OpenVinoModule

    clock = {"start": time.perf_counter()}  # where the seconds go: report["seconds"]
    batches = calibration_batches(calib, cfg.calib_images)
    model = model.eval()
    fp32 = fold_bn(model)
    threads = cfg.threads or torch.get_num_threads()
    x_lat = batches[0][:1].repeat(cfg.batch_size, *([1] * (batches[0].ndim - 1)))
    # images the int8 paths are checked on: 64 at CIFAR size, fewer (at least 8) for larger inputs
    x_chk = torch.cat(batches)[:max(8, min(64, 64 * 3 * 32 * 32 // batches[0][0].numel()))]
    with torch.no_grad():
        ref_logits = fp32(x_chk)
    report: dict = {"observer": cfg.observer, "threads": threads, "batch_size": cfg.batch_size,
                    "calib_images": sum(len(b) for b in batches), "paths": {}}
    built: dict[str, nn.Module] = {"fp32-torch": model}
    note(f"int8: calibrating on {report['calib_images']} images and building the int8 paths")
    with tempfile.TemporaryDirectory() as tmp:
        raw = str(to_onnx(fp32, batches[0][:1], Path(tmp) / "fp32.onnx"))
        src = raw
        if cfg.preprocess:
            try:
                quant_pre_process(raw, str(Path(tmp) / "pre.onnx"), skip_symbolic_shape=True)
                src = str(Path(tmp) / "pre.onnx")
            except Exception as e:  # noqa: BLE001 - keep going without it, and say so
                report["preprocess_error"] = str(e)
        from torchslim.analysis import profile

        prof = profile(fp32, example_input=batches[0][:1])
        cost = dict(macs=prof.macs, params=prof.params)
        built["fp32-ort"] = OnnxRuntimeModule.from_bytes(Path(src).read_bytes(), threads, "fp32-ort", **cost)
        if {"ov-qdq", "ov-nncf"} & set(paths):
            built["fp32-ov"] = OpenVinoModule.from_bytes(Path(src).read_bytes(), threads, "fp32-ov", **cost)
        clock["export"] = time.perf_counter()
        ranges = onnx_activation_ranges(src, batches, cfg.observer)
        clock["calibrate"] = time.perf_counter()
        if input_ranges:
            tensors = onnx_layer_inputs(src)
            used = {tensors[n]: (float(lo), float(hi)) for n, (lo, hi) in input_ranges.items() if n in tensors}
            ranges.update(used)
            report["given_input_ranges"] = {"given": len(input_ranges), "used": len(used)}
        ort_paths = {p: dict(fmt="qdq" if p == "ort-qdq" else "qop") for p in paths if p.startswith("ort")}
        if "ov-qdq" in paths:  # OpenVINO runs the QDQ model
            ort_paths.setdefault("ort-qdq", dict(fmt="qdq"))
        ort_paths.update(cfg.extra_paths)
        for name, kw in ort_paths.items():
            kw = dict(kw)
            fmt, per_channel = kw.pop("fmt", "qdq"), kw.pop("per_channel", cfg.per_channel)
            inp = kw.pop("source", None) == "raw" and raw or src
            dst = str(Path(tmp) / f"{name}.onnx")
            try:
                _ort_quantize(inp, dst, ranges, fmt, per_channel, **kw)
                built[name] = OnnxRuntimeModule.from_bytes(Path(dst).read_bytes(), threads, name, **cost)
            except Exception as e:  # noqa: BLE001
                report["paths"][name] = {"error": f"{type(e).__name__}: {e}"}
        if "ov-qdq" in paths:
            qdq = built.get("ort-qdq") if "ort-qdq" in paths else built.pop("ort-qdq", None)
            if qdq is not None:
                built["ov-qdq"] = OpenVinoModule.from_bytes(qdq.onnx_bytes(), threads, "ov-qdq", **cost)
            else:  # the QDQ model failed: so does its OpenVINO path
                failed = report["paths"]["ort-qdq"] if "ort-qdq" in paths else report["paths"].pop("ort-qdq")
                report["paths"]["ov-qdq"] = dict(failed)
        if "ov-nncf" in paths:
            from torchslim.quant.nncf_ptq import nncf_qdq_onnx

            try:
                built["ov-nncf"] = OpenVinoModule.from_bytes(nncf_qdq_onnx(raw, batches), threads, "ov-nncf", **cost)
            except InvalidInputError:
                raise
            except Exception as e:  # noqa: BLE001
                report["paths"]["ov-nncf"] = {"error": f"{type(e).__name__}: {e}"}
    if "torch-x86" in paths:
        try:
            built["torch-x86"] = torch_x86_int8(model, batches, cfg.observer)
        except Exception as e:  # noqa: BLE001
            report["paths"]["torch-x86"] = {"error": f"{type(e).__name__}: {e}"}
    reference = fake_quant_reference(fp32, batches, cfg.observer, input_ranges) if cfg.compare else None
    built_ref = {"fake-quant": reference} if cfg.compare else {}

    def top1(m, label="int8: top-1"):
        from torchslim.train import evaluate

        return evaluate(m, eval_loader, device="cpu", max_batches=eval_batches, progress=label)["top1"]

    clock["build"] = time.perf_counter()
    for name, m in {**built, **built_ref}.items():
        note(f"int8: measuring {name}")  # each path's check, latency and accuracy takes seconds
        row: dict = {}
        # quick mode's fp32 paths are there only to report speedups: they run the reference's own
        # arithmetic (~1e-6 apart), so no agreement check (it costs seconds at 224x224), and a few timed
        # calls (still min_time_s long for small models); the int8 paths, chosen between, get cfg.repeats
        brief = not cfg.compare and name.startswith("fp32")
        try:
            if not brief:
                with torch.no_grad():
                    row.update(_agreement(ref_logits, m(x_chk)))
            if name != "fake-quant":
                row.update(_latency_ms(m, x_lat, threads, min(cfg.repeats, 5) if brief else cfg.repeats,
                                       cfg.min_time_s, warmup=1 if brief else 3))
            if isinstance(m, OnnxRuntimeModule):
                row["size_bytes"] = m.nbytes
            elif name == "torch-x86":
                row["size_bytes"] = _torch_state_bytes(m)
            elif name == "fp32-torch":
                row["size_bytes"] = _torch_state_bytes(model)
            if eval_loader is not None and (cfg.compare or name == "fp32-torch"):
                row["top1"] = top1(m, f"int8: {name} top-1")
        except Exception as e:  # noqa: BLE001
            row = {"error": f"{type(e).__name__}: {e}"}
        report["paths"][name] = row
    confident = float(torch.softmax(ref_logits, 1).amax(1).mean()) > 0.5
    for name, row in report["paths"].items():
        if "error" in row or name.startswith("fp32") or name == "fake-quant":
            continue
        row["correct"] = row["rel_l2_error"] <= cfg.tolerance and (not confident or row["argmax_agreement"] >= 0.9)
    candidates = [n for n in paths if report["paths"].get(n, {}).get("correct")]
    if cfg.path != "auto":
        chosen = cfg.path
        if chosen not in built:
            raise UnsupportedModelError(f"int8 path {chosen!r} failed: {report['paths'][chosen].get('error')}")
    elif candidates:
        chosen = min(candidates, key=lambda n: report["paths"][n]["median_ms"])
    else:
        raise UnsupportedModelError("no int8 path is correct for this model (relative error above "
                                    f"{cfg.tolerance}): {({n: r for n, r in report['paths'].items()})}")
    fastest = min((n for n, r in report["paths"].items() if "median_ms" in r and (n.startswith("fp32") or n in candidates)),
                  key=lambda n: report["paths"][n]["median_ms"])
    if eval_loader is not None and "top1" not in report["paths"][chosen]:
        report["paths"][chosen]["top1"] = top1(built[chosen])
    clock["measure"] = time.perf_counter()
    phases = list(clock)
    report["seconds"] = {k: clock[k] - clock[prev] for prev, k in zip(phases, phases[1:])}  # wall, per phase:
    report["seconds"]["total"] = clock["measure"] - clock["start"]  # export, calibrate, build, measure
    report.update(chosen=chosen, fastest_overall=fastest, compare=cfg.compare)
    for base in ("torch", "ort", "ov"):
        if "median_ms" in report["paths"].get(f"fp32-{base}", {}):
            report[f"speedup_vs_fp32_{base}"] = (report["paths"][f"fp32-{base}"]["median_ms"]
                                                 / report["paths"][chosen]["median_ms"])
    out = built[chosen]
    for k, v in (("quant_report", report), ("reference", reference), ("fp32", fp32)):
        object.__setattr__(out, k, v)
    return out


def _torch_state_bytes(m: nn.Module) -> int:
    total = 0
    for v in m.state_dict().values():
        if isinstance(v, torch.Tensor):
            if v.is_quantized:
                total += v.int_repr().numel() * v.int_repr().element_size()
            else:
                total += v.numel() * v.element_size()
        elif isinstance(v, tuple):  # packed params: (weight, bias)
            total += sum(_torch_state_bytes_t(t) for t in v if isinstance(t, torch.Tensor))
    return total


def _torch_state_bytes_t(t: torch.Tensor) -> int:
    return t.int_repr().numel() if t.is_quantized else t.numel() * t.element_size()
