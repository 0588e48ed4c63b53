import struct

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


@pytest.fixture(scope="module")
def slim_bytes(pruned_kmeans_model):
    return encode.encode_model(pruned_kmeans_model)


def test_save_load_gives_exactly_the_same_outputs(pruned_kmeans_model, tmp_path):
    path = encode.save(pruned_kmeans_model, tmp_path / "m.slim")
    for r in (encode.load(path), torchslim.load(path)):
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(r(x), pruned_kmeans_model(x))
        for (k, a), (_, b) in zip(sorted(r.state_dict().items()), sorted(pruned_kmeans_model.state_dict().items())):
            assert torch.equal(a, b), k


def test_storage_accounting_shrinks_at_each_stage_and_huffman_beats_fixed_width(slim_bytes, tmp_path):
    p = tmp_path / "m.slim"
    p.write_bytes(slim_bytes)
    rep = encode.storage_report(p)
    assert rep["file_bytes"] == len(slim_bytes)
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


def test_fuzz_consistent_checksum_but_bad_header_is_a_format_error(slim_bytes):
    """A re-checksummed file with a lying header still cannot produce a model."""
    import hashlib
    import json

    hlen = struct.unpack_from("<I", slim_bytes, 10)[0]
    header = json.loads(slim_bytes[14: 14 + hlen])
    name = next(iter(header["layers"]))
    header["layers"][name]["entries"] += 5
    hj = json.dumps(header).encode()
    body = slim_bytes[:10] + struct.pack("<I", len(hj)) + hj + slim_bytes[14 + hlen: -32]
    with pytest.raises(FileFormatError):
        encode.decode_model(body + hashlib.sha256(body).digest())
