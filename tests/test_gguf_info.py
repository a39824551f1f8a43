"""Our GGUF header reader: values agree with gguf-py's reader, and every kind of bad file
gives a one-line GGUFError naming the file and the problem."""

from __future__ import annotations

import math
import struct
import time
from pathlib import Path

import gguf
import pytest

from fixtures.gguf_builders import DROP, TOKENS, V, phi3_metadata, phi3_tensors, write_gguf, \
    write_llama, write_phi3
from llm_phi_gguf import gguf_info as gi
from llm_phi_gguf import gguf_reader as gr
from llm_phi_gguf.errors import GGUFError
from llm_phi_gguf.gguf_info import check_loadable, check_phi, validate_gguf
from llm_phi_gguf.gguf_reader import GGUFArray, read_gguf


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    return {"phi3": write_phi3(d / "phi3.gguf"), "llama": write_llama(d / "llama.gguf")}


def _bad(tmp_path: Path, data: bytes, match: str, name: str = "bad.gguf") -> GGUFError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=match) as e:
        validate_gguf(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    return e.value


def _phi3_error(tmp_path: Path, match: str, arch: str = "phi3", **overrides) -> None:
    meta = {k.replace("phi3.", f"{arch}."): v for k, v in phi3_metadata().items()}
    path = write_gguf(tmp_path / "m.gguf", arch, meta, phi3_tensors(), **overrides)
    with pytest.raises(GGUFError, match=match) as e:
        validate_gguf(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def _key_at(data: bytes, key: str) -> int:
    """Offset of the value type that follows `key` in the file."""
    raw = key.encode()
    return data.index(struct.pack("<Q", len(raw)) + raw) + 8 + len(raw)


def _tensor_at(data: bytes, name: str) -> int:
    """Offset of n_dims in the tensor info of `name`."""
    raw = name.encode()
    return data.rindex(struct.pack("<Q", len(raw)) + raw) + 8 + len(raw)


def _put(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into("<" + fmt, b, offset, value)
    return bytes(b)


# --- agreement with gguf-py ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["phi3", "llama"])
def test_matches_gguf_reader(files, which):
    info = read_gguf(files[which], read_arrays=True)
    oracle = gguf.GGUFReader(files[which])
    assert list(info.metadata) == [k for k in oracle.fields if not k.startswith("GGUF.")]
    for key, value in info.metadata.items():
        expected = oracle.fields[key].contents()
        if isinstance(expected, float) or (isinstance(expected, list) and expected
                                           and isinstance(expected[0], float)):
            assert value == pytest.approx(expected, rel=1e-6), key
        else:
            assert value == expected, key
    assert info.version == oracle.fields["GGUF.version"].contents()
    assert info.alignment == oracle.alignment
    assert info.data_offset == oracle.data_offset
    assert [(t.name, t.shape, t.type, t.nbytes, info.data_offset + t.offset)
            for t in info.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.n_bytes),
         int(t.data_offset)) for t in oracle.tensors]


def test_arrays_are_placeholders_unless_asked(files):
    info = read_gguf(files["phi3"])
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert tokens == GGUFArray(gr.T_STRING, len(TOKENS))
    assert info.metadata["tokenizer.ggml.token_type"] == GGUFArray(gr.T_I32, len(TOKENS))
    assert info.read_array("tokenizer.ggml.tokens") == TOKENS
    some = read_gguf(files["phi3"], read_arrays={"tokenizer.ggml.scores"})
    assert some.metadata["tokenizer.ggml.scores"] == [0.0] * len(TOKENS)
    assert isinstance(some.metadata["tokenizer.ggml.tokens"], GGUFArray)
    assert some.array_types["tokenizer.ggml.scores"] == gr.T_F32


def test_properties(files, tmp_path):
    info = validate_gguf(files["phi3"])
    assert (info.architecture, info.name, info.file_type, info.file_type_name) == \
        ("phi3", "Tiny Phi", 1, "F16")
    assert info.context_length == 4096
    assert info.chat_template == "{{ messages }}"
    assert info.n_params == sum(math.prod(t.shape) for t in info.tensors) == 45696
    assert info.size_label == "46K"
    assert info.get("phi3.block_count") == 1 and info.get("nope", 5) == 5
    assert info.file_size == files["phi3"].stat().st_size
    guessed = read_gguf(write_phi3(tmp_path / "g.gguf", **{"general.file_type": DROP,
                                                           "general.size_label": ("1.5B", V.STRING)}))
    assert guessed.file_type is None and guessed.file_type_name == "F16"
    assert guessed.size_label == "1.5B"
    assert read_gguf(files["llama"]).chat_template is None


@pytest.mark.parametrize("n, label", [(3_821_079_552, "3.8B"), (60_300_000, "60M"),
                                      (14_659_507_200, "15B"), (29_376, "29K"),
                                      (2_000_000_000_000, "2.0T")])
def test_rounded_count(n, label):
    assert gr.rounded_count(n) == label


def test_type_tables_agree_with_gguf_py():
    for t, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert gr.GGML_TYPES[int(t)] == (t.name, block, size)
    for ft in gguf.LlamaFileType:
        if ft.value != 1024:
            assert gr.FILE_TYPE_NAMES[ft.value] == ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")


# --- container corruptions -----------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(GGUFError, match="directory"):
        read_gguf(tmp_path)


def test_bad_magic_and_short_files(files, tmp_path):
    data = files["phi3"].read_bytes()
    _bad(tmp_path, b"GGML" + data[4:], "not a GGUF file .*GGML")
    _bad(tmp_path, b"", "not a GGUF file")
    _bad(tmp_path, b"GG", "not a GGUF file")


@pytest.mark.parametrize("version, match", [
    (1, "version 1 is no longer supported"), (4, "unsupported GGUF version 4"),
    (0, "unsupported GGUF version 0"), (3 << 24, "big-endian.*endianness"),
    (2 << 16, "endianness")])
def test_versions(files, tmp_path, version, match):
    _bad(tmp_path, _put(files["phi3"].read_bytes(), 4, "I", version), match)


def test_version_2_is_accepted(files, tmp_path):
    path = tmp_path / "v2.gguf"
    path.write_bytes(_put(files["phi3"].read_bytes(), 4, "I", 2))
    assert validate_gguf(path).version == 2


def test_truncated_everywhere(files, tmp_path):
    data = files["phi3"].read_bytes()
    header_end = read_gguf(files["phi3"]).data_offset
    for i in range(20):
        _bad(tmp_path, data[: header_end * i // 20], "truncated|not a GGUF")
    _bad(tmp_path, data[:-1], "truncated: tensor 'blk.0.ffn_up.weight' ends at")


@pytest.mark.parametrize("field, value, match", [
    (8, (1 << 40), "claims 1099511627776 tensors"), (16, (1 << 40), "metadata keys"),
    (16, -1, "negative number of metadata keys"), (8, -5, "negative number of tensors")])
def test_huge_and_negative_counts(files, tmp_path, field, value, match):
    _bad(tmp_path, _put(files["phi3"].read_bytes(), field, "q", value), match)


def test_string_lengths(files, tmp_path):
    data = files["llama"].read_bytes()
    at = _key_at(data, "general.name") + 4  # length of the string value
    _bad(tmp_path, _put(data, at, "Q", (1 << 30) + 1), "over the 1 GiB limit")
    _bad(tmp_path, _put(data, at, "Q", 1 << 29), "truncated")
    key_len = _key_at(data, "general.name") - len("general.name") - 8
    _bad(tmp_path, _put(data, key_len, "Q", 1 << 63), "metadata key #1 is .* over the 1 GiB")


def test_array_counts(files, tmp_path):
    data = files["llama"].read_bytes()
    at = _key_at(data, "test.ints") + 8  # element count
    _bad(tmp_path, _put(data, at, "Q", (1 << 30) + 1), "over the 2\\^30 limit")
    _bad(tmp_path, _put(data, at, "Q", 1 << 29), "truncated")
    tokens = _key_at(data, "tokenizer.ggml.tokens") + 8
    _bad(tmp_path, _put(data, tokens, "Q", 1 << 24), "truncated")
    first_token = tokens + 8
    _bad(tmp_path, _put(data, first_token, "Q", 1 << 31), "string of 2147483648 bytes")


@pytest.mark.parametrize("key, delta, value, match", [
    ("test.u8", 0, 13, "invalid GGUF value type 13"),
    ("test.u8", 0, -1, "invalid GGUF value type -1"),
    ("test.ints", 4, 9, "array of arrays"),
    ("test.ints", 4, 77, "array of invalid GGUF value type 77"),
])
def test_bad_value_types(files, tmp_path, key, delta, value, match):
    data = files["llama"].read_bytes()
    _bad(tmp_path, _put(data, _key_at(data, key) + delta, "i", value), match)


def test_duplicate_key_and_tensor(files, tmp_path):
    data = files["llama"].read_bytes()
    _bad(tmp_path, data.replace(b"test.u16", b"test.i16"), "duplicate metadata key 'test.i16'")
    at = _tensor_at(data, "t.b") - 3
    _bad(tmp_path, data[:at] + b"t.a" + data[at + 3:], "duplicate tensor name 't.a'")


def test_empty_key(tmp_path):
    header = b"GGUF" + struct.pack("<Iqq", 3, 0, 1)
    _bad(tmp_path, header + struct.pack("<QiB", 0, 0, 1) + bytes(8), "metadata key #0 is empty")


@pytest.mark.parametrize("field, fmt, value, match", [
    (0, "I", 5, "has 5 dimensions"),
    (4, "q", -3, "negative dimension"),
    (4, "q", 1 << 62, "too many elements|truncated"),
    (4 + 16, "i", 4, "removed ggml type 4"),
    (4 + 16, "i", 31, "removed ggml type 31"),
    (4 + 16, "i", 43, "invalid ggml type 43"),
    (4 + 16, "i", 12, "type Q4_K has 32 elements per row, not a multiple of the block size 256"),
    (4 + 16 + 4, "Q", 32, "offset 32, expected 0"),
])
def test_bad_tensor_infos(files, tmp_path, field, fmt, value, match):
    data = files["llama"].read_bytes()
    _bad(tmp_path, _put(data, _tensor_at(data, "t.a") + field, fmt, value), match)


def test_misaligned_second_tensor(files, tmp_path):
    data = files["llama"].read_bytes()
    at = _tensor_at(data, "t.b") + 4 + 3 * 8 + 4
    _bad(tmp_path, _put(data, at, "Q", 384 + 8), "'t.b' has data offset 392, expected 384")


def test_overflowing_element_count(tmp_path):
    header = b"GGUF" + struct.pack("<Iqq", 3, 1, 0)
    info = struct.pack("<Q", 1) + b"x" + struct.pack("<I4qiQ", 4, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 0, 0)
    _bad(tmp_path, header + info, "too many elements")


def test_long_tensor_name(tmp_path):
    name = "n" * 64
    header = b"GGUF" + struct.pack("<Iqq", 3, 1, 0)
    info = struct.pack("<Q", 64) + name.encode() + struct.pack("<IqiQ", 1, 1, 0, 0)
    _bad(tmp_path, header + info + b"\0" * 64, "name of 64 bytes or more")


def test_alignment(files, tmp_path):
    _phi3_error(tmp_path, "general.alignment 48 is not a power of 2",
                **{"general.alignment": (48, V.UINT32)})
    _phi3_error(tmp_path, "general.alignment must be of type u32, not u64",
                **{"general.alignment": (64, V.UINT64)})


def test_custom_alignment_is_honoured(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "a.gguf"), "llama")
    writer.add_custom_alignment(64)
    import numpy as np
    writer.add_tensor("a", np.ones(3, np.float32))
    writer.add_tensor("b", np.ones(3, np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    info = read_gguf(tmp_path / "a.gguf")
    assert info.alignment == 64 and [t.offset for t in info.tensors] == [0, 64]
    assert info.data_offset % 64 == 0


def test_no_tensors_data_offset_is_header_end(tmp_path):
    data = b"GGUF" + struct.pack("<Iqq", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + \
        struct.pack("<iB", 0, 7)
    path = tmp_path / "kv.gguf"
    path.write_bytes(data)
    info = read_gguf(path)
    assert info.metadata == {"k": 7} and info.data_offset == len(data) and info.tensors == []


def test_invalid_utf8_is_kept_not_raised(tmp_path):
    key = b"k\xff"
    data = b"GGUF" + struct.pack("<Iqq", 3, 0, 2) + struct.pack("<Q", 2) + key + \
        struct.pack("<iQ", 8, 2) + b"\xfe\n" + struct.pack("<Q", 2) + b"k\xfe" + \
        struct.pack("<iB", 0, 1)
    path = tmp_path / "u.gguf"
    path.write_bytes(data)
    info = read_gguf(path)
    assert len(info.metadata) == 2
    with pytest.raises(GGUFError, match=r"general.architecture"):
        validate_gguf(path)


# --- what llama.cpp's loader needs ---------------------------------------------------------


def test_check_phi(files):
    with pytest.raises(GGUFError, match=r"llama.gguf is a GGUF of architecture 'llama', not a "
                                        r"Phi model \(supported: phi2, phi3, phimoe\)"):
        check_phi(read_gguf(files["llama"]))
    check_phi(read_gguf(files["phi3"]))


@pytest.mark.parametrize("overrides, match", [
    ({"phi3.block_count": 0}, "phi3.block_count is 0; llama.cpp supports 1 to 512"),
    ({"phi3.block_count": 600}, "phi3.block_count is 600"),
    ({"phi3.rope.dimension_count": 15}, "rope.dimension_count is 15; it must be even"),
    ({"phi3.rope.dimension_count": 18}, "18, more than the head size 16"),
    ({"phi3.context_length": DROP}, "required key phi3.context_length is missing"),
    ({"phi3.attention.layer_norm_rms_epsilon": DROP}, "layer_norm_rms_epsilon is missing"),
    ({"tokenizer.ggml.model": DROP}, "required key tokenizer.ggml.model is missing"),
    ({"tokenizer.ggml.tokens": DROP}, "tokenizer.ggml.tokens is missing"),
    ({"phi3.context_length": (4096, V.UINT64)}, "context_length has type u64, llama.cpp expects u32"),
    ({"phi3.attention.layer_norm_rms_epsilon": (1e-5, V.FLOAT64)}, "expects f32"),
    ({"tokenizer.ggml.bos_token_id": (1, V.INT32)}, "bos_token_id has type i32"),
    ({"phi3.attention.head_count": 0}, "head_count is 0; it must divide"),
    ({"phi3.attention.head_count": 5}, "head_count is 5"),
    ({"phi3.attention.head_count_kv": 3}, "head_count_kv is 3"),
    ({"phi3.attention.head_count": ([4, 4], V.ARRAY)}, "has 2 per-layer values for 1 layers"),
    ({"phi3.rope.scaling.type": ("su", V.STRING)}, "rope.scaling.type is 'su'"),
    ({"phi3.expert_used_count": (2, V.UINT32)}, "expert_used_count is 2 but the model has no"),
    ({"phi3.expert_count": (4, V.UINT32)}, "expert_used_count is 0; it must be between 1"),
    ({"tokenizer.ggml.model": "bpe"}, "tokenizer.ggml.model is 'bpe'"),
    ({"tokenizer.ggml.model": "gpt2"}, "merges is missing .* a gpt2 tokenizer needs it"),
    ({"tokenizer.ggml.scores": ([0.0] * (len(TOKENS) - 1), V.ARRAY)}, f"scores has {len(TOKENS) - 1} entries for {len(TOKENS)} tokens"),
    ({"tokenizer.ggml.token_type": ([1.0] * 8, V.ARRAY)}, "token_type must be an array of i32"),
    ({"tokenizer.ggml.tokens": ([], V.ARRAY)}, "tokenizer.ggml.tokens is missing|is empty"),
    ({"tokenizer.ggml.tokens": ("abc", V.STRING)}, "not an array of strings"),
])
def test_not_loadable(tmp_path, overrides, match):
    _phi3_error(tmp_path, match, **overrides)


@pytest.mark.parametrize("tokens, match", [
    (TOKENS[:7] + ["c"], r"token 'c' twice \(ids 6 and 7\)"),
    (TOKENS[:6] + ["x\0a", "x\0b"], r"token 'x' twice"),
    (TOKENS[:6] + ["", "[EMPTY_6]"], r"token '\[EMPTY_6\]' twice"),
])
def test_duplicate_tokens(tmp_path, tokens, match):
    _phi3_error(tmp_path, match, **{"tokenizer.ggml.tokens": (tokens, V.ARRAY)})


def test_sentencepiece_vocab_needs_every_byte_token(tmp_path):
    """llama.cpp dies with std::out_of_range on text it must spell with a missing <0xXX>."""
    tokens = [t if t != "<0x68>" else "h" for t in TOKENS]
    _phi3_error(tmp_path, r"lacks 1 of the 256 byte-fallback tokens \(e.g. <0x68>\)",
                **{"tokenizer.ggml.tokens": (tokens, V.ARRAY)})


@pytest.mark.parametrize("used, count, match", [
    (0, 4, "expert_used_count is 0"), (5, 4, "expert_used_count is 5"),
    (2, 2000, "expert_count is 2000; llama.cpp supports at most 1024"),
    (None, None, "expert_count is missing or 0"),
])
def test_phimoe_expert_counts(tmp_path, used, count, match):
    extra = {} if used is None else {"phimoe.expert_used_count": (used, V.UINT32),
                                     "phimoe.expert_count": (count, V.UINT32)}
    _phi3_error(tmp_path, match, arch="phimoe", **extra)


def test_phimoe_counts_accepted(tmp_path):
    meta = {k.replace("phi3.", "phimoe."): v for k, v in phi3_metadata().items()}
    path = write_gguf(tmp_path / "moe.gguf", "phimoe", meta, phi3_tensors(),
                      **{"phimoe.expert_used_count": (2, V.UINT32),
                         "phimoe.expert_count": (16, V.UINT32)})
    assert validate_gguf(path).architecture == "phimoe"


def test_check_loadable_with_decoded_arrays(files):
    check_loadable(read_gguf(files["phi3"], read_arrays=True))


# --- speed ---------------------------------------------------------------------------------


def _big_vocab_file(path: Path, n: int) -> Path:
    parts = [struct.pack("<Q", len(k)) + k.encode() + struct.pack("<i", 8) + struct.pack("<Q", len(v)) + v.encode()
             for k, v in (("general.architecture", "phi3"), ("tokenizer.ggml.model", "llama"))]
    toks = b"".join(struct.pack("<Q", len(t)) + t for t in (f"tok{i}".encode() for i in range(n)))
    key = b"tokenizer.ggml.tokens"
    parts.append(struct.pack("<Q", len(key)) + key + struct.pack("<iiQ", 9, 8, n) + toks)
    path.write_bytes(b"GGUF" + struct.pack("<Iqq", 3, 0, len(parts)) + b"".join(parts))
    return path


def test_200k_vocab_is_fast(tmp_path):
    path = _big_vocab_file(tmp_path / "vocab.gguf", 200_064)
    start = time.perf_counter()
    info = read_gguf(path)
    assert info.metadata["tokenizer.ggml.tokens"].count == 200_064
    tokens = info.read_array("tokenizer.ggml.tokens")
    keys = gi._Keys(info, "phi3")
    gi._check_unique_tokens(keys, tokens)
    assert time.perf_counter() - start < 2.0
