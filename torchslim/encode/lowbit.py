"""Bit-packed binary and ternary weights (`torchslim.quant.binary` layers) for the `.slim` file.

A low-bit layer is stored as its per-filter scale alpha (fp32, one per output channel) and one symbol
per weight: binary, sign bits (1 = +alpha), 8 to a byte (`np.packbits`, 1 bit per weight); ternary,
trits (0 = zero, 1 = +alpha, 2 = -alpha) in one of three codings, whichever is smallest for the layer:

- `base3`: 5 trits per byte (3^5 = 243 <= 256), 1.6 bits per weight: 20 % under 2-bit fields and
  within 1 % of log2(3) = 1.585, the most a fixed-width code can get;
- `huffman`: Huffman code of the trits (3-symbol alphabet, lengths 1-2-2 bits): 1 + P(not the most
  common trit) bits per weight, below 1.6 once one trit holds more than 40 % (TWN's threshold
  0.7 E|W| zeroes about 42 % of Gaussian and 50 % of Laplacian weights);
- `huffman-base3`: Huffman code of the base-3 bytes (243-symbol alphabet, table ~120 bytes): close to
  the trits' entropy for large layers.

Every decoder checks sizes, padding and symbol ranges and raises ValueError on anything a writer
would not have produced.
"""
from __future__ import annotations

import numpy as np

from torchslim.encode import huffman

TERNARY_CODINGS = ("base3", "huffman", "huffman-base3")  # tried by the writer, in this order
DECODERS = ("base3", "huffman", "huffman-base3")  # read
_POW3 = 3 ** np.arange(5, dtype=np.int64)


def pack_signs(bits: np.ndarray) -> bytes:
    """1 bit per weight, MSB first; the last byte is padded with zeros."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def unpack_signs(data: bytes, count: int) -> np.ndarray:
    if len(data) != (count + 7) // 8:
        raise ValueError(f"sign bits: {len(data)} bytes for {count} weights, expected {(count + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[count:].any():
        raise ValueError("sign bits: non-zero padding")
    return bits[:count]


def pack_base3(trits: np.ndarray) -> bytes:
    """5 trits per byte, least significant first: byte = t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 (padding trits 0)."""
    t = np.asarray(trits, dtype=np.int64)
    t = np.concatenate([t, np.zeros(-len(t) % 5, dtype=np.int64)]).reshape(-1, 5)
    return (t @ _POW3).astype(np.uint8).tobytes()


def unpack_base3(data: bytes, count: int) -> np.ndarray:
    if len(data) != (count + 4) // 5:
        raise ValueError(f"base-3 trits: {len(data)} bytes for {count} weights, expected {(count + 4) // 5}")
    b = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if b.size and b.max() >= 243:
        raise ValueError("base-3 trits: byte value >= 243")
    t = (b[:, None] // _POW3 % 3).reshape(-1)
    if t[count:].any():
        raise ValueError("base-3 trits: non-zero padding")
    return t[:count]


def encode_ternary(trits: np.ndarray, coding: str) -> tuple[dict[str, bytes], int]:
    """Sections ({"codes": ...} plus "code_lengths" for Huffman) and the Huffman bit count (0 for base3)."""
    trits = np.asarray(trits, dtype=np.int64)
    if coding == "base3":
        return {"codes": pack_base3(trits)}, 0
    if coding == "huffman":
        lengths, bits, n = huffman.encode(trits, 3)
    elif coding == "huffman-base3":
        lengths, bits, n = huffman.encode(np.frombuffer(pack_base3(trits), dtype=np.uint8), 243)
    else:
        raise ValueError(f"unknown ternary coding {coding!r}; known: {', '.join(TERNARY_CODINGS)}")
    return {"code_lengths": huffman.pack_lengths(lengths), "codes": bits}, n


def decode_ternary(secs: dict[str, bytes], coding: str, count: int, nbits: int) -> np.ndarray:
    if coding == "base3":
        return unpack_base3(secs["codes"], count)
    if coding == "huffman":
        return huffman.decode(huffman.unpack_lengths(secs["code_lengths"], 3), secs["codes"], nbits, count)
    if coding == "huffman-base3":
        nbytes = (count + 4) // 5
        b = huffman.decode(huffman.unpack_lengths(secs["code_lengths"], 243), secs["codes"], nbits, nbytes)
        return unpack_base3(b.astype(np.uint8).tobytes(), count)
    raise ValueError(f"unknown ternary coding {coding!r}; known: {', '.join(DECODERS)}")


def best_ternary(trits: np.ndarray) -> tuple[str, dict[str, bytes], int, dict[str, int]]:
    """The smallest coding (ties: the first of TERNARY_CODINGS) and the bytes every coding took."""
    sizes, best = {}, None
    for coding in TERNARY_CODINGS:
        secs, n = encode_ternary(trits, coding)
        sizes[coding] = sum(len(v) for v in secs.values())
        if best is None or sizes[coding] < sizes[best[0]]:
            best = (coding, secs, n)
    return best[0], best[1], best[2], sizes
