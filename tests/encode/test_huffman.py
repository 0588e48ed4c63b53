import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from torchslim.encode import csr, huffman


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 20), max_size=300))
def test_huffman_roundtrip(symbols):
    lengths, data, nbits = huffman.encode(np.array(symbols, dtype=np.int64), 21)
    out = huffman.decode(lengths, data, nbits, len(symbols))
    assert out.tolist() == symbols


def test_huffman_is_within_one_bit_of_entropy_and_caps_lengths():
    rng = np.random.default_rng(0)
    s = rng.geometric(0.3, 20000) - 1
    s = np.minimum(s, 31)
    lengths, data, nbits = huffman.encode(s, 32)
    h = huffman.entropy_bits(s, 32)
    assert h <= nbits / len(s) <= h + 1
    counts = np.array([2 ** i for i in range(30)])
    assert huffman.code_lengths(counts).max() <= huffman.MAX_LEN


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 2000), max_size=200), st.integers(2, 8))
def test_relative_indices_with_fillers_roundtrip(positions, gap_bits):
    pos = np.array(sorted(positions), dtype=np.int64)
    vals = np.arange(len(pos)) % 7
    gaps, v = csr.to_relative(pos, vals, gap_bits, filler=7)
    assert gaps.max(initial=0) < 2 ** gap_bits
    p2, v2 = csr.from_relative(gaps, v, 2001, filler=7)
    assert p2.tolist() == pos.tolist() and v2.tolist() == vals.tolist()
