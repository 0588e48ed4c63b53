"""Canonical Huffman coding (Huffman 1952) of small-alphabet symbol streams, as in Deep Compression
sec. 4: the quantized weight indices and the sparse-index gaps are coded separately.

A code is stored as one code length per symbol (canonical codes are rebuilt from the lengths), so
the table costs `alphabet` bytes. Lengths are capped at 15 bits (frequencies are flattened and the
code rebuilt when the cap is hit), which keeps decoding to one table lookup per symbol.
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_LEN = 15


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for symbols that never occur), capped at MAX_LEN."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    used = np.flatnonzero(counts)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    c = counts.astype(np.float64)
    while True:
        heap = [(float(c[s]), int(s), [int(s)]) for s in used]
        heapq.heapify(heap)
        depth = np.zeros(len(counts), dtype=np.int64)
        tie = len(counts)
        while len(heap) > 1:
            w1, _, a = heapq.heappop(heap)
            w2, _, b = heapq.heappop(heap)
            for s in a + b:
                depth[s] += 1
            heapq.heappush(heap, (w1 + w2, tie, a + b))
            tie += 1
        if depth.max() <= MAX_LEN:
            lengths[used] = depth[used]
            return lengths
        c[used] = np.maximum(c[used], c[used].max() / 2 ** (MAX_LEN - 2))  # flatten rare symbols, retry


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (as integers, MSB first) for the given lengths."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s] = code
        prev = int(lengths[s])
        code += 1
    return codes


def encode(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, bytes, int]:
    """Huffman-code `symbols` (ints in [0, alphabet)). Returns (code lengths, packed bits, number of bits)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet)[:alphabet])
    if len(symbols) == 0:
        return lengths, b"", 0
    codes = canonical_codes(lengths)
    table = [format(int(codes[s]), f"0{int(lengths[s])}b") if lengths[s] else "" for s in range(alphabet)]
    bits = "".join(table[s] for s in symbols.tolist())
    arr = np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - ord("0")
    return lengths, np.packbits(arr).tobytes(), len(bits)


def decode(lengths: np.ndarray, data: bytes, nbits: int, count: int) -> np.ndarray:
    """Inverse of `encode`: `count` symbols from `nbits` bits. Raises ValueError on inconsistent input."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if len(lengths) == 0 or lengths.max() == 0 or lengths.max() > MAX_LEN:
        raise ValueError("invalid Huffman code lengths")
    if np.sum(2.0 ** -lengths[lengths > 0]) > 1.0 + 1e-12:
        raise ValueError("Huffman code lengths violate the Kraft inequality")
    if nbits > len(data) * 8:
        raise ValueError("Huffman bit stream is shorter than its declared length")
    L = int(lengths.max())
    codes = canonical_codes(lengths)
    sym_of = np.full(1 << L, -1, dtype=np.int64)
    len_of = np.zeros(1 << L, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        shift = L - int(lengths[s])
        start = int(codes[s]) << shift
        sym_of[start: start + (1 << shift)] = s
        len_of[start: start + (1 << shift)] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    padded = np.concatenate([bits, np.zeros(L, dtype=np.int64)])
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(L):  # window[i] = the L bits starting at i, as an integer
        window |= padded[j: j + nbits] << (L - 1 - j)
    window, sym_of_l, len_of_l = window.tolist(), sym_of.tolist(), len_of.tolist()
    out = [0] * count
    pos = 0
    for i in range(count):
        if pos >= nbits:
            raise ValueError("Huffman bit stream ended early")
        v = window[pos]
        s = sym_of_l[v]
        if s < 0:
            raise ValueError("invalid Huffman code in the bit stream")
        out[i] = s
        pos += len_of_l[v]
    if pos != nbits:
        raise ValueError("Huffman bit stream length does not match its symbols")
    return np.asarray(out, dtype=np.int64)


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code-length table as 4-bit nibbles, trailing unused symbols dropped (decoders pad with zeros)."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if len(used) else 0
    nib = lengths[:n]
    if n % 2:
        nib = np.append(nib, 0)
    return ((nib[0::2] << 4) | nib[1::2]).astype(np.uint8).tobytes()


def unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    nib = np.empty(2 * len(b), dtype=np.uint8)
    nib[0::2], nib[1::2] = b >> 4, b & 15
    if len(nib) > alphabet + 1 or np.any(nib[alphabet:]):
        raise ValueError("Huffman length table is longer than its alphabet")
    out = np.zeros(alphabet, dtype=np.uint8)
    out[: min(len(nib), alphabet)] = nib[:alphabet]
    return out


def entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    """Shannon entropy of the empirical symbol distribution, in bits per symbol (the coding lower bound)."""
    c = np.bincount(np.asarray(symbols, dtype=np.int64), minlength=alphabet).astype(np.float64)
    if c.sum() == 0:
        return 0.0
    p = c[c > 0] / c.sum()
    return float(-(p * np.log2(p)).sum())
