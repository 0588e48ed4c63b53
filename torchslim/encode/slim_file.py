"""The `.slim` file: a compressed, pickle-free, checksummed model file.

Layout (all integers little-endian):

    b"TSLIM\\0\\r\\n"  8-byte magic
    u16 version        (1 or 2: the lowest that can hold the file's contents, as zip's "version
                       needed to extract"; 2 adds bit-packed binary/ternary layers)
    u32 header length  then the UTF-8 JSON header
    binary sections    (offsets in the header are relative to the end of the header)
    sha256             32 bytes over everything before it

The header holds the architecture as `torchslim.io` describes it (constructor name + replaced
modules: nothing is ever executed or unpickled), and one entry per state-dict tensor: `raw` (its
bytes) or, for the weights of k-means shared layers (`torchslim.quant.kmeans`), `huffman-csr`:
codebook (fp32), Huffman-coded centroid indices of the surviving weights and Huffman-coded
relative-index gaps with filler entries (Deep Compression, Han et al. 2016, sec. 2-4). Since
version 2, the weights of binary/ternary layers (`torchslim.quant.binary`) are stored bit-packed
under `lowbit`: per-filter scale (fp32) and 1 bit (binary) or ~1.5-1.6 bits (ternary) per weight
(`torchslim.encode.lowbit`). A file without such layers is written as version 1, byte for byte what
version-1 writers wrote, so older readers keep reading it.
Reading checks magic, version, checksum, section bounds and decoded sizes; any inconsistency is a
`FileFormatError`, never a silently different model.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.encode import csr, huffman, lowbit
from torchslim.errors import FileFormatError, InvalidInputError

MAGIC = b"TSLIM\x00\r\n"
VERSION = 2  # the newest version this module writes and reads
READS = (1, 2)
FORMAT = "torchslim-slim"
GAP_BITS = {"conv": 8, "fc": 5}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
           "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _shared_layers(model: nn.Module) -> dict[str, nn.Module]:
    from torchslim.quant.kmeans import SHARED

    return {n: m for n, m in model.named_modules() if isinstance(m, SHARED)}


def _code_layer(m: nn.Module, gap_bits: int) -> tuple[dict, dict[str, bytes]]:
    """Sections and statistics of one shared-weight layer.

    Only the centroids some weight uses are stored (a small layer with 15 weights needs 15, not 256);
    the index symbols are their ranks. Unused slots read back as 0 (k-means leaves them at 0).
    """
    K = m.centroids.numel()
    idx = m.index.detach().long().flatten().numpy()
    mask = m.weight_mask.detach().flatten().numpy()
    positions = np.flatnonzero(mask)
    used = np.unique(idx[positions])
    cent = m.centroids.detach().float().numpy()
    k = len(used)
    rank = np.zeros(K, dtype=np.int64)
    rank[used] = np.arange(k)
    gaps, values = csr.to_relative(positions, rank[idx[positions]], gap_bits, filler=k)
    len_i, bits_i, n_i = huffman.encode(values, k + 1)
    len_g, bits_g, n_g = huffman.encode(gaps, 1 << gap_bits)
    secs = {"codebook": cent[used].tobytes(), "used": used.astype(np.uint16).tobytes(),
            "index_lengths": huffman.pack_lengths(len_i), "index_bits": bits_i,
            "gap_lengths": huffman.pack_lengths(len_g),
            "gap_bits": bits_g}
    numel, nnz, entries, b = idx.size, len(positions), len(values), m.bits
    stats = {
        "numel": numel, "nonzero": nnz, "entries": entries, "fillers": entries - nnz, "bits": b,
        "centroids": K, "centroids_used": k, "gap_bits": gap_bits, "index_nbits": n_i, "gap_nbits": n_g,
        "bytes_original": numel * 4,
        "bytes_pruned": (entries * (32 + gap_bits)) / 8,
        "bytes_quantized": (entries * (b + gap_bits) + k * 32) / 8,
        "bytes_coded": sum(len(v) for v in secs.values()),
        "index_bits_per_weight": n_i / max(nnz, 1), "index_entropy_bits": huffman.entropy_bits(values, k + 1),
        "gap_bits_per_entry": n_g / max(entries, 1), "gap_entropy_bits": huffman.entropy_bits(gaps, 1 << gap_bits),
    }
    if not np.array_equal(cent[np.setdiff1d(np.arange(K), used)], np.zeros(K - k, dtype=np.float32)):
        raise InvalidInputError("shared-weight layer has non-zero unused centroids; .slim stores used ones only "
                                "(re-run share_weights / kmeans_quantize)")
    return stats, secs


def _lowbit_layers(model: nn.Module) -> dict[str, nn.Module]:
    from torchslim.quant.binary import LowBitConv2d, LowBitLinear

    return {n: m for n, m in model.named_modules()
            if isinstance(m, (LowBitConv2d, LowBitLinear)) and m.weight.dtype == torch.float32}


def _code_lowbit(m: nn.Module) -> tuple[dict, dict, dict[str, bytes]]:
    """(header entry, statistics, sections) of one binary/ternary layer: per-filter alpha + symbols.

    The symbols come from the quantized weight the layer computes; the check at the end makes sure
    that the weight rebuilt from them quantizes to exactly that weight again (see quant.binary)."""
    from torchslim.quant.binary import binarize, ternarize

    qw = m.quantized_weight().detach().cpu()
    c = qw.shape[0]
    flat = qw.reshape(c, -1)
    alpha = flat.abs().amax(1).numpy()
    v = flat.numpy().reshape(-1)
    secs = {"scale": alpha.astype(np.float32).tobytes()}
    if m.mode == "binary":
        symbols = (v > 0).astype(np.int64)
        secs["codes"] = lowbit.pack_signs(symbols)
        info = {"mode": "binary", "shape": list(qw.shape), "coding": "bits", "nbits": 0}
        sizes, fixed_bits, alphabet = {"bits": len(secs["codes"])}, 1, 2
        rebuilt = np.where(symbols == 1, 1.0, -1.0)
    else:
        symbols = np.where(v > 0, 1, np.where(v < 0, 2, 0)).astype(np.int64)
        coding, code_secs, nbits, sizes = lowbit.best_ternary(symbols)
        secs.update(code_secs)
        info = {"mode": "ternary", "shape": list(qw.shape), "coding": coding, "nbits": nbits}
        fixed_bits, alphabet = 2, 3
        rebuilt = np.array([0.0, 1.0, -1.0])[symbols]
    w = torch.from_numpy((alpha[:, None] * rebuilt.reshape(c, -1).astype(np.float32)).reshape(qw.shape))
    if not torch.equal((binarize if m.mode == "binary" else ternarize)(w), qw):
        raise InvalidInputError(f"{m.mode} layer {type(m).__name__}: its weights do not rebuild exactly from "
                                "alpha and signs (not produced by torchslim.quant.binary?)")
    numel, coded = v.size, sum(len(b) for b in secs.values())
    stats = {"kind": "fc" if isinstance(m, nn.Linear) else "conv", "mode": m.mode, "coding": info["coding"],
             "numel": numel, "nonzero": int(np.count_nonzero(v)), "bytes_original": numel * 4,
             "bytes_pruned": numel * 4, "bytes_quantized": (numel * fixed_bits + 32 * c) / 8,
             "bytes_coded": coded, "bits_per_weight": 8 * coded / numel,
             "code_bits_per_weight": 8 * (coded - len(secs["scale"])) / numel,
             "symbol_entropy_bits": huffman.entropy_bits(symbols, alphabet),
             "coding_bits_per_weight": {k: 8 * n / numel for k, n in sizes.items()}}
    return info, stats, secs


_DECODE_FIELDS = ("kind", "shape", "index_dtype", "numel", "nonzero", "entries", "bits", "centroids", "gap_bits",
                  "index_nbits", "gap_nbits")


def encode_model(model: nn.Module, *, metadata: dict | None = None, input_size=None) -> bytes:
    """The `.slim` bytes of `model` (see the module docstring)."""
    return _encode(model, metadata=metadata, input_size=input_size)[0]


def _encode(model: nn.Module, *, metadata: dict | None = None, input_size=None) -> tuple[bytes, dict]:
    """(file bytes, per-layer statistics); the header keeps only what decoding needs."""
    from torchslim.io.model_file import constructor_of, module_diff, module_spec
    from torchslim.models import create_model

    arch = constructor_of(model)
    replaced = module_diff(model, create_model(arch["name"], **arch.get("kwargs", {}))) if arch else {"": module_spec(model)}
    state = model.state_dict()
    shared = _shared_layers(model)
    low = _lowbit_layers(model)
    coded_keys = {f"{n}.{t}" if n else t for n in shared for t in ("centroids", "index", "weight_mask")}
    coded_keys |= {f"{n}.weight" if n else "weight" for n in low}
    blobs: list[bytes] = []
    offset = 0
    sections: dict[str, list[int]] = {}

    def add(name: str, data: bytes) -> None:
        nonlocal offset
        sections[name] = [offset, len(data)]
        blobs.append(data)
        offset += len(data)

    tensors, layers = [], {}
    for name, m in shared.items():
        kind = "fc" if isinstance(m, nn.Linear) else "conv"
        stats, secs = _code_layer(m, GAP_BITS[kind])
        for s, data in secs.items():
            add(f"{name}/{s}", data)
        layers[name] = {"kind": kind, "shape": list(m.index.shape), "index_dtype": _NAMES[m.index.dtype], **stats}
    header_layers = {n: {k: L[k] for k in _DECODE_FIELDS} for n, L in layers.items()}
    header_lowbit = {}
    for name, m in low.items():
        header_lowbit[name], layers[name], secs = _code_lowbit(m)
        for s, data in secs.items():
            add(f"{name}/{s}", data)
    other_bytes = 0
    for key, t in state.items():
        if key in coded_keys:
            continue
        t = t.detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise InvalidInputError(f"tensor {key!r} has dtype {t.dtype}, which .slim files do not store")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        add(key, data)
        tensors.append({"name": key, "dtype": _NAMES[t.dtype], "shape": list(t.shape)})
        other_bytes += len(data)
    header = {"format": FORMAT, "version": 1, "arch": arch, "replaced": replaced,
              "input_size": list(input_size) if input_size else (getattr(model, "_torchslim_arch", None) or {}).get("input_size"),
              "metadata": metadata or {}, "tensors": tensors, "layers": header_layers, "sections": sections,
              "other_bytes": other_bytes}
    if header_lowbit:  # version 1 readers cannot decode these: only such files are version 2
        header.update(version=2, lowbit=header_lowbit)
    hj = json.dumps(header, separators=(",", ":")).encode()
    body = MAGIC + struct.pack("<HI", header["version"], len(hj)) + hj + b"".join(blobs)
    return body + hashlib.sha256(body).digest(), {"layers": layers, "other_bytes": other_bytes}


def save(model: nn.Module, path: str | os.PathLike, *, metadata: dict | None = None, input_size=None) -> Path:
    """Write `model` as a `.slim` file (atomically). k-means shared layers are Huffman/CSR coded,
    binary/ternary layers bit-packed.

    Example:
        >>> torchslim.encode.save(kmeans_quantize(model), "model.slim")
    """
    path = Path(path)
    data = encode_model(model, metadata=metadata, input_size=input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def read_header(data: bytes, where: str = "<bytes>") -> tuple[dict, memoryview]:
    """Validate magic, version, checksum; return (header, sections view)."""
    if len(data) < len(MAGIC) + 6 + 32:
        raise FileFormatError(f"{where}: too short ({len(data)} bytes) to be a .slim file")
    if data[: len(MAGIC)] != MAGIC:
        raise FileFormatError(f"{where}: not a .slim file (bad magic)")
    version, hlen = struct.unpack_from("<HI", data, len(MAGIC))
    if version not in READS:
        raise FileFormatError(f"{where}: .slim version {version}; this torchslim reads versions "
                              f"{', '.join(map(str, READS))}" + ("; upgrade torchslim" if version > VERSION else ""))
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise FileFormatError(f"{where}: checksum mismatch (the file is truncated or corrupted)")
    start = len(MAGIC) + 6
    if start + hlen > len(body):
        raise FileFormatError(f"{where}: header length {hlen} runs past the end of the file")
    try:
        header = json.loads(bytes(body[start: start + hlen]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{where}: unreadable header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FileFormatError(f"{where}: unknown format {header.get('format') if isinstance(header, dict) else header!r}")
    if header.get("version") != version:
        raise FileFormatError(f"{where}: header says version {header.get('version')!r}, the file {version}")
    if header.get("lowbit") and version < 2:
        raise FileFormatError(f"{where}: bit-packed low-bit layers in a version {version} file (they need version 2)")
    return header, memoryview(body)[start + hlen:]


def _section(secs: memoryview, header: dict, name: str) -> bytes:
    off, n = header["sections"][name]
    if not (isinstance(off, int) and isinstance(n, int)) or off < 0 or n < 0 or off + n > len(secs):
        raise FileFormatError(f"section {name!r} ({off}+{n}) lies outside the file")
    return bytes(secs[off: off + n])


def _decode_layer(secs, header, name: str, info: dict) -> dict[str, torch.Tensor]:
    shape = [int(s) for s in info["shape"]]
    numel = int(np.prod(shape))
    values_used = np.frombuffer(_section(secs, header, f"{name}/codebook"), dtype=np.float32)
    used = np.frombuffer(_section(secs, header, f"{name}/used"), dtype=np.uint16).astype(np.int64)
    K, k = int(info["centroids"]), len(values_used)
    if len(used) != k or (k and (used.max() >= K or np.any(np.diff(used) <= 0))):
        raise ValueError(f"layer {name}: codebook entries do not match its {K} centroids")
    codebook = np.zeros(K, dtype=np.float32)
    codebook[used] = values_used
    if numel != int(info["numel"]) or not 1 <= int(info["gap_bits"]) <= 16:
        raise ValueError(f"layer {name}: shape / gap width do not match")
    len_i = huffman.unpack_lengths(_section(secs, header, f"{name}/index_lengths"), k + 1)
    len_g = huffman.unpack_lengths(_section(secs, header, f"{name}/gap_lengths"), 1 << int(info["gap_bits"]))
    entries = int(info["entries"])
    values = huffman.decode(len_i, _section(secs, header, f"{name}/index_bits"), int(info["index_nbits"]), entries)
    gaps = huffman.decode(len_g, _section(secs, header, f"{name}/gap_bits"), int(info["gap_nbits"]), entries)
    positions, vals = csr.from_relative(gaps, values, numel, filler=k)
    if len(positions) != int(info["nonzero"]) or (len(vals) and vals.max() >= k):
        raise ValueError(f"layer {name}: decoded entries do not match the header")
    index = np.zeros(numel, dtype=np.int64)
    index[positions] = used[vals]
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    prefix = f"{name}." if name else ""
    return {prefix + "centroids": torch.from_numpy(codebook),
            prefix + "index": torch.from_numpy(index).to(_DTYPES[info["index_dtype"]]).view(shape),
            prefix + "weight_mask": torch.from_numpy(mask).view(shape)}


def _decode_lowbit(secs, header, name: str, info: dict) -> dict[str, torch.Tensor]:
    mode, shape = info["mode"], [int(s) for s in info["shape"]]
    if mode not in ("binary", "ternary") or len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"layer {name}: bad low-bit mode {mode!r} or shape {shape}")
    numel = int(np.prod(shape))
    alpha = np.frombuffer(_section(secs, header, f"{name}/scale"), dtype=np.float32)
    if len(alpha) != shape[0] or not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
        raise ValueError(f"layer {name}: per-filter scales do not match its {shape[0]} filters")
    codes = _section(secs, header, f"{name}/codes")
    if mode == "binary":
        if info["coding"] != "bits":
            raise ValueError(f"layer {name}: binary weights with coding {info['coding']!r}")
        sign = np.where(lowbit.unpack_signs(codes, numel) == 1, 1.0, -1.0)
    else:
        if info["coding"] not in lowbit.DECODERS:
            raise ValueError(f"layer {name}: unknown ternary coding {info['coding']!r}")
        parts = {"codes": codes}
        if info["coding"] != "base3":
            parts["code_lengths"] = _section(secs, header, f"{name}/code_lengths")
        trits = lowbit.decode_ternary(parts, info["coding"], numel, int(info["nbits"]))
        sign = np.array([0.0, 1.0, -1.0])[trits]
    w = alpha[:, None] * sign.reshape(shape[0], -1).astype(np.float32)
    return {f"{name}.weight" if name else "weight": torch.from_numpy(np.ascontiguousarray(w).reshape(shape))}


def decode_model(data: bytes, where: str = "<bytes>", code: str | None = None) -> nn.Module:
    """Rebuild the model from `.slim` bytes; outputs equal the saved model's exactly (`code`: see
    `torchslim.io.load_model`)."""
    from torchslim.io.model_file import build_module, set_arch
    from torchslim.module_swap import replace_modules
    from torchslim.models import create_model
    from torchslim.models.user import constructor_to_build

    header, secs = read_header(data, where)
    try:
        state: dict[str, torch.Tensor] = {}
        for t in header["tensors"]:
            raw = _section(secs, header, t["name"])
            dt = _DTYPES[t["dtype"]]
            shape = [int(s) for s in t["shape"]]
            arr = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
            state[t["name"]] = arr.view(dt).reshape(shape).clone()
        decoded = [_decode_layer(secs, header, n, info) for n, info in header["layers"].items()]
        decoded += [_decode_lowbit(secs, header, n, info) for n, info in header.get("lowbit", {}).items()]
        for part in decoded:
            if set(part) & set(state):
                raise ValueError(f"tensors {sorted(set(part) & set(state))} are stored twice")
            state.update(part)
        arch = header.get("arch")
        if arch:
            arch = dict(arch, name=constructor_to_build(arch.get("name"), code, where))
        model = create_model(arch["name"], **arch.get("kwargs", {})) if arch else nn.Identity()
        replaced = header["replaced"]
        for fqn in sorted(replaced, key=lambda k: (k.count("."), k) if k else (-1, "")):
            model = replace_modules(model, {fqn: build_module(replaced[fqn])})
        model.load_state_dict(state, strict=True)
    except FileFormatError as e:
        raise FileFormatError(f"{where}: {e}") from None
    except InvalidInputError:  # user code not named again (models.user.constructor_to_build)
        raise
    except Exception as e:  # noqa: BLE001 - any inconsistency is a format error, never a different model
        raise FileFormatError(f"{where}: inconsistent .slim contents ({type(e).__name__}: {e})") from None
    if arch or header.get("input_size"):
        set_arch(model, (arch or {}).get("name"), (arch or {}).get("kwargs"), header.get("input_size"))
    return model.eval()


def load(path: str | os.PathLike, *, code: str | None = None) -> nn.Module:
    """Read a `.slim` file back to a runnable model (see `save`; `code`: see `torchslim.io.load_model`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".slim file {str(path)!r} does not exist")
    return decode_model(path.read_bytes(), str(path), code=code)


def storage_report(model_or_path) -> dict:
    """Per-layer storage accounting (original / pruned / quantized / coded bytes, bits per weight,
    entropy) and totals, of a model (encoded in memory) or a `.slim` file."""
    if isinstance(model_or_path, nn.Module):
        data, stats = _encode(model_or_path)
    else:  # decode, then re-encode in memory (deterministic: the same bytes) for the statistics
        data = Path(model_or_path).read_bytes()
        again, stats = _encode(decode_model(data, str(model_or_path)))
        if again != data:
            stats = _encode(decode_model(data))[1]  # written with other metadata; statistics are the same
    header, _ = read_header(data, str(model_or_path) if not isinstance(model_or_path, nn.Module) else "<model>")
    layers = stats["layers"]
    tot = {k: sum(v[k] for v in layers.values()) for k in ("bytes_original", "bytes_pruned", "bytes_quantized",
                                                          "bytes_coded", "numel", "nonzero")}
    fp32_total = 0
    for t in header["tensors"]:
        n = int(np.prod(t["shape"])) if t["shape"] else 1
        fp32_total += n * (4 if t["dtype"] in ("float32", "float64", "float16", "bfloat16") else 0)
    fp32_total += tot["bytes_original"]
    return {"layers": layers, "totals": tot, "other_bytes": stats["other_bytes"], "file_bytes": len(data), "header_bytes": struct.unpack_from("<I", data, len(MAGIC) + 2)[0],
            "fp32_param_bytes": fp32_total, "compression": fp32_total / len(data)}
