import numpy as np
import pytest

from torchslim.encode import lowbit


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 4099])
def test_sign_bits_roundtrip_at_one_bit_per_weight(n):
    bits = np.random.default_rng(n).integers(0, 2, n)
    data = lowbit.pack_signs(bits)
    assert len(data) == (n + 7) // 8
    assert np.array_equal(lowbit.unpack_signs(data, n), bits)


@pytest.mark.parametrize("coding", lowbit.TERNARY_CODINGS)
@pytest.mark.parametrize("n", [1, 4, 5, 6, 999, 20000])
def test_ternary_codings_roundtrip(coding, n):
    trits = np.random.default_rng(n).choice(3, n, p=[0.5, 0.25, 0.25])
    secs, nbits = lowbit.encode_ternary(trits, coding)
    assert np.array_equal(lowbit.decode_ternary(secs, coding, n, nbits), trits)


def test_base3_is_1_6_bits_and_huffman_wins_when_zeros_dominate():
    rng = np.random.default_rng(0)
    even = rng.integers(0, 3, 100000)
    assert len(lowbit.pack_base3(even)) == 20000  # 5 trits per byte: 1.6 bits per weight
    sizes = lowbit.best_ternary(even)[3]  # uniform trits: little to gain below 1.6 bits (log2(3) = 1.585)
    assert sizes["huffman"] > sizes["base3"] > min(sizes.values()) > 0.98 * sizes["base3"]
    sparse = rng.choice(3, 100000, p=[0.7, 0.15, 0.15])  # entropy 1.18 bits
    coding, _, _, sizes = lowbit.best_ternary(sparse)
    assert coding.startswith("huffman") and sizes[coding] * 8 / 100000 < 1.3
    assert sizes[coding] == min(sizes.values())


@pytest.mark.parametrize("bad", ["short", "long", "padding", "symbol"])
def test_packed_symbols_that_a_writer_would_not_produce_are_rejected(bad):
    trits = np.ones(7, dtype=np.int64)
    data = bytearray(lowbit.pack_base3(trits))
    signs = bytearray(lowbit.pack_signs(np.ones(7)))
    if bad == "short":
        data, signs = data[:-1], signs[:0]
    elif bad == "long":
        data, signs = data + b"\0", signs + b"\0"
    elif bad == "padding":
        data[-1] += 81  # the 5th trit of the last byte is padding
        signs[-1] |= 1  # the 8th bit is padding
    else:
        data[0] = 250  # >= 3^5
    with pytest.raises(ValueError):
        lowbit.unpack_base3(bytes(data), 7)
    if bad != "symbol":
        with pytest.raises(ValueError):
            lowbit.unpack_signs(bytes(signs), 7)
