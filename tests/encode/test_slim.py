import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchslim
from torchslim import encode
from torchslim.errors import FileFormatError


@pytest.fixture(scope="module")
def pruned_kmeans_model():
    from torchslim.models import create_model
    from torchslim.quant import quantize
    from torchslim.sparsity.magnitude import prune_by_magnitude
    from torchslim.sparsity.masks import remove_masks

    torch.manual_seed(0)
    m = create_model("lenet5")
    prune_by_magnitude(m, 0.9)
    remove_masks(m)
    return quantize(m, "kmeans", bits={"conv": 8, "fc": 5}, epochs=0)


def _low_bit_lenet5():
    """LeNet-5 with a binary conv and ternary fc layers (one with many near-zero weights, where Huffman wins)."""
    from torchslim.models import create_model
    from torchslim.quant.binary import to_low_bit

    torch.manual_seed(0)
    m = create_model("lenet5")
    with torch.no_grad():
        m[5].weight.mul_(torch.rand_like(m[5].weight) ** 4)  # heavy tail: TWN zeroes most of them
    to_low_bit(m, "ternary", keep_first_last=False)
    m[2].mode = "binary"
    return m.eval()


@pytest.fixture(scope="module")
def low_bit_model():
    return _low_bit_lenet5()


@pytest.fixture(scope="module")
def kmeans_bytes(pruned_kmeans_model):
    return encode.encode_model(pruned_kmeans_model)


@pytest.fixture(scope="module", params=["kmeans", "lowbit"])
def slim_bytes(request, kmeans_bytes, low_bit_model):
    """The files the reader is fuzzed with: k-means/Huffman/CSR sections and bit-packed low-bit sections."""
    return kmeans_bytes if request.param == "kmeans" else encode.encode_model(low_bit_model)


V1_FILE = Path(__file__).parent / "data" / "v1_kmeans_digits.slim"


def test_version_1_files_still_load_and_are_still_written_byte_for_byte():
    m = encode.load(V1_FILE)
    meta = encode.slim_file.read_header(V1_FILE.read_bytes())[0]["metadata"]
    x = torch.linspace(-1, 1, 128).view(2, 1, 8, 8)
    assert torch.equal(m(x), torch.tensor(meta["expected_output"], dtype=torch.float32))
    again = encode.encode_model(m, metadata=meta)
    assert again[8:10] == struct.pack("<H", 1) and again == V1_FILE.read_bytes()


def test_low_bit_layers_are_bit_packed_and_load_back_exactly(low_bit_model, tmp_path):
    from torchslim.quant import LowBitConv2d, LowBitLinear

    path = encode.save(low_bit_model, tmp_path / "b.slim")
    data = path.read_bytes()
    assert data[8:10] == struct.pack("<H", 2)  # low-bit sections need version 2
    x = torch.randn(5, 1, 28, 28)
    for r in (encode.load(path), torchslim.load(path)):
        assert torch.equal(r(x), low_bit_model(x))
        assert [type(a) for a in r.modules()] == [type(b) for b in low_bit_model.modules()]
        assert isinstance(r[2], LowBitConv2d) and r[2].mode == "binary" and isinstance(r[5], LowBitLinear)
    rep = encode.storage_report(path)
    for name, L in rep["layers"].items():
        fan_in = L["numel"] // low_bit_model.get_submodule(name).weight.shape[0]
        code_bits = {"binary": 1.0, "ternary": 1.6}[L["mode"]]  # packbits / 5 trits per byte, at most
        assert L["code_bits_per_weight"] <= code_bits + 8 / L["numel"], name
        assert L["bits_per_weight"] == pytest.approx(L["code_bits_per_weight"] + 32 / fan_in, abs=1e-9), name
        assert L["coding_bits_per_weight"][L["coding"]] == min(L["coding_bits_per_weight"].values()), name
        single = L["coding_bits_per_weight"]["bits" if L["mode"] == "binary" else "huffman"]
        assert single >= L["symbol_entropy_bits"], name  # a code of single symbols cannot beat their entropy
    assert rep["layers"]["5"]["coding"].startswith("huffman")  # mostly zeros: under 1.6 bits
    assert rep["layers"]["5"]["code_bits_per_weight"] < 1.45
    assert len(data) < 1.1 * sum(L["bytes_coded"] for L in rep["layers"].values()) + rep["other_bytes"] + 4000
    assert rep["compression"] > 20


@pytest.mark.parametrize("coding", ["base3", "huffman", "huffman-base3"])
def test_every_ternary_coding_loads_back_exactly(coding, low_bit_model, monkeypatch):
    from torchslim.encode import lowbit

    monkeypatch.setattr(lowbit, "TERNARY_CODINGS", (coding,))
    data = encode.encode_model(low_bit_model)
    header = encode.slim_file.read_header(data)[0]
    assert {L["coding"] for L in header["lowbit"].values() if L["mode"] == "ternary"} == {coding}
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(encode.decode_model(data)(x), low_bit_model(x))


def test_trained_low_bit_model_roundtrips():
    from torchslim.data import get_data
    from torchslim.models import create_model
    from torchslim.quant import quantize
    from torchslim.train import FitConfig

    digits = get_data("digits", batch_size=64)
    for method in ("binary", "ternary"):
        q = quantize(create_model("digits_cnn", width=8), method, data=digits, epochs=1,
                     fit=FitConfig(lr=0.05, progress=False, max_steps_per_epoch=5))
        x = next(iter(digits.test))[0]
        assert torch.equal(encode.decode_model(encode.encode_model(q))(x), q(x)), method


def test_save_load_gives_exactly_the_same_outputs(pruned_kmeans_model, tmp_path):
    path = encode.save(pruned_kmeans_model, tmp_path / "m.slim")
    for r in (encode.load(path), torchslim.load(path)):
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(r(x), pruned_kmeans_model(x))
        for (k, a), (_, b) in zip(sorted(r.state_dict().items()), sorted(pruned_kmeans_model.state_dict().items())):
            assert torch.equal(a, b), k


def test_storage_accounting_shrinks_at_each_stage_and_huffman_beats_fixed_width(kmeans_bytes, tmp_path):
    p = tmp_path / "m.slim"
    p.write_bytes(kmeans_bytes)
    rep = encode.storage_report(p)
    assert rep["file_bytes"] == len(kmeans_bytes)
    for name, L in rep["layers"].items():
        assert L["bytes_original"] > L["bytes_pruned"] > L["bytes_quantized"], name
        assert L["index_entropy_bits"] <= L["index_nbits"] / L["entries"] + 1e-9  # entropy is the lower bound
        assert L["index_nbits"] / L["entries"] < L["index_entropy_bits"] + 1  # Huffman: within one bit
        if L["nonzero"] > 2000:  # code tables cost a few hundred bytes: coding pays off on real layers
            assert L["bytes_coded"] < L["bytes_quantized"], name
    t = rep["totals"]
    assert t["bytes_coded"] < t["bytes_quantized"] < t["bytes_pruned"] < t["bytes_original"]
    assert rep["compression"] > 20  # 90 % pruned, 5-8 bit indices, Huffman


def test_plain_float_model_roundtrips_too(tmp_path):
    from torchslim.models import create_model

    m = create_model("resnet20").eval()
    encode.save(m, tmp_path / "f.slim")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(encode.load(tmp_path / "f.slim")(x), m(x))


def test_truncated_corrupted_and_wrong_version_files_are_format_errors(slim_bytes, tmp_path):
    bad = {
        "truncated": slim_bytes[: len(slim_bytes) // 2],
        "empty": b"",
        "flipped": slim_bytes[:100] + bytes([slim_bytes[100] ^ 1]) + slim_bytes[101:],
        "magic": b"XXXXX" + slim_bytes[5:],
        "version": slim_bytes[:8] + struct.pack("<H", 99) + slim_bytes[10:],
    }
    for what, data in bad.items():
        p = tmp_path / f"{what}.slim"
        p.write_bytes(data)
        with pytest.raises(FileFormatError) as e:
            encode.load(p)
        assert str(p) in str(e.value)
    with pytest.raises(FileFormatError, match="version 99"):
        encode.load(tmp_path / "version.slim")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_reader_never_returns_a_different_model(slim_bytes, data):
    """Random truncation / byte edits: either FileFormatError or (no change) the same bytes."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    b = bytearray(slim_bytes)
    if kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif kind == "flip":
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= data.draw(st.integers(1, 255))
    else:
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(FileFormatError):
        encode.decode_model(bytes(b))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(blob):
    with pytest.raises(FileFormatError):
        encode.decode_model(b"TSLIM\x00\r\n" + blob)


def test_fuzz_consistent_checksum_but_bad_header_is_a_format_error(kmeans_bytes):
    """A re-checksummed file with a lying header still cannot produce a model."""
    import hashlib
    import json

    hlen = struct.unpack_from("<I", kmeans_bytes, 10)[0]
    header = json.loads(kmeans_bytes[14: 14 + hlen])
    name = next(iter(header["layers"]))
    header["layers"][name]["entries"] += 5
    hj = json.dumps(header).encode()
    body = kmeans_bytes[:10] + struct.pack("<I", len(hj)) + hj + kmeans_bytes[14 + hlen: -32]
    with pytest.raises(FileFormatError):
        encode.decode_model(body + hashlib.sha256(body).digest())


def _rechecksummed(data: bytes, edit_header=None, edit_sections=None) -> bytes:
    import hashlib
    import json

    hlen = struct.unpack_from("<I", data, 10)[0]
    header = json.loads(data[14: 14 + hlen])
    secs = bytearray(data[14 + hlen: -32])
    if edit_header:
        edit_header(header)
    if edit_sections:
        edit_sections(header, secs)
    hj = json.dumps(header).encode()
    body = data[:8] + struct.pack("<HI", header["version"], len(hj)) + hj + bytes(secs)
    return body + hashlib.sha256(body).digest()


def _set(layer, key, value):
    def edit(h):
        h["lowbit"][layer][key] = value
    return edit


def _poke(section, pos, value):
    def edit(h, secs):
        off, n = h["sections"][section]
        secs[off + (pos % n)] = value
    return edit


LYING_LOW_BIT_FILES = {
    "version 1 with low-bit sections": (lambda h: h.update(version=1), None),
    "shape": (_set("5", "shape", [500, 801]), None),
    "filters": (_set("5", "shape", [250, 1600]), None),
    "mode": (_set("2", "mode", "quaternary"), None),
    "binary coding": (_set("2", "coding", "base3"), None),
    "ternary coding": (_set("7", "coding", "huffman"), None),
    "unknown coding": (_set("7", "coding", "base4"), None),
    "huffman bit count": (lambda h: h["lowbit"]["5"].update(nbits=h["lowbit"]["5"]["nbits"] - 1), None),
    "twice": (lambda h: (h["tensors"].append({"name": "7.weight", "dtype": "float32", "shape": [10, 500]}),
                         h["sections"].__setitem__("7.weight", [0, 20000])), None),
    "negative scale": (None, _poke("2/scale", 3, 0xBF)),  # sign byte of alpha[0] (little-endian fp32)
    "nan scale": (None, lambda h, s: s.__setitem__(slice(h["sections"]["7/scale"][0], h["sections"]["7/scale"][0] + 4),
                                                   bytes([0, 0, 0xC0, 0x7F]))),
    "sign padding": (None, _poke("0/codes", -1, 0xFF)),
    "trit byte": (None, _poke("7/codes", 0, 250)),
}


@pytest.mark.parametrize("what", LYING_LOW_BIT_FILES)
def test_low_bit_file_with_a_valid_checksum_but_lying_contents_is_a_format_error(what):
    m = _low_bit_lenet5()
    if what == "sign padding":
        m[0].mode = "binary"  # 500 weights: the last byte of its sign bits has 4 padding bits
    data = encode.encode_model(m)
    header = encode.slim_file.read_header(data)[0]
    if what == "trit byte":
        assert header["lowbit"]["7"]["coding"] == "base3"
    if what == "sign padding":
        assert header["lowbit"]["0"]["coding"] == "bits"
    bad = _rechecksummed(data, *LYING_LOW_BIT_FILES[what])
    with pytest.raises(FileFormatError):
        encode.decode_model(bad)
