"""The converter's float16 casts go through ggml's SIMD row converters only where they give
numpy's bits: every value, subnormals and rounding ties included; blocks outside float16's
range go back to numpy (which reports the overflow); a cast that rounds differently is refused
at the self-check; and the converted file is the same with the fast path on or off."""

import ctypes

import numpy as np
import pytest

from llm_phi_gguf import convert, f16_cast


def reference(values):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint16)


def test_fast_path_is_active_with_llama_cpp_installed():
    # CI installs llama-cpp-python, so a silent fallback to numpy would be a speed regression
    assert f16_cast._functions() is not None


def test_every_in_range_bf16_value_casts_like_numpy():
    bits = np.arange(1 << 16, dtype=np.uint16)
    bits = bits[(bits & 0x7FFF) < f16_cast.BF16_OVERFLOW_BITS].reshape(-1, 11)  # 2-D, as row blocks come
    got = f16_cast.to_f16(bits, "BF16")
    assert got is not None and got.shape == bits.shape
    wide = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got.view(np.uint16), reference(wide))


def test_random_float32_casts_like_numpy():
    rng = np.random.default_rng(16)
    exponents = rng.uniform(-30, 15.99, size=200_003)
    values = (np.sign(rng.standard_normal(exponents.size)) * 2.0 ** exponents).astype(np.float32)
    got = f16_cast.to_f16(values, "F32")
    assert np.array_equal(got.view(np.uint16), reference(values))


@pytest.mark.parametrize("bad", [65520.0, -70000.0, np.inf, np.nan])
def test_f32_blocks_outside_float16_range_go_back_to_numpy(bad):
    assert f16_cast.to_f16(np.array([0.5, bad, 1.0], dtype=np.float32), "F32") is None
    assert f16_cast.to_f16(np.array([65504.0, -65519.0], dtype=np.float32), "F32") is not None  # both finite


@pytest.mark.parametrize("bad", [0x4780, 0xC800, 0x7F80, 0x7FC1])  # 65536, -131072, inf, NaN
def test_bf16_blocks_outside_float16_range_go_back_to_numpy(bad):
    assert f16_cast.to_f16(np.array([0x3F00, bad, 0x3F80], dtype=np.uint16), "BF16") is None
    assert f16_cast.to_f16(np.array([0x477F, 0xC77F], dtype=np.uint16), "BF16") is not None  # +-65280


def test_self_check_refuses_a_cast_that_rounds_differently():
    def widen(src, dst, n):
        s = np.frombuffer((ctypes.c_uint16 * n).from_address(src), dtype=np.uint16)
        np.frombuffer((ctypes.c_uint32 * n).from_address(dst), dtype=np.uint32)[:] = s.astype(np.uint32) << 16

    def truncating(src, dst, n):  # rounds toward zero, as a careless SIMD path might
        s = np.frombuffer((ctypes.c_float * n).from_address(src), dtype=np.float32)
        d = np.frombuffer((ctypes.c_uint16 * n).from_address(dst), dtype=np.uint16)
        f16 = s.astype(np.float16)
        back = f16.astype(np.float32)
        d[:] = np.where(np.abs(back) > np.abs(s), f16.view(np.uint16) - 1, f16.view(np.uint16))

    def exact(src, dst, n):
        s = np.frombuffer((ctypes.c_float * n).from_address(src), dtype=np.float32)
        np.frombuffer((ctypes.c_uint16 * n).from_address(dst), dtype=np.uint16)[:] = reference(s)

    assert f16_cast._self_check((widen, exact))
    assert not f16_cast._self_check((widen, truncating))


def test_bf16_overflow_is_still_refused_by_name(checkpoint, tmp_path):
    import shutil

    from llm_phi_gguf.errors import ConversionError
    from llm_phi_gguf.safetensors_reader import read_header

    src = tmp_path / "src"
    shutil.copytree(checkpoint("phi-3-128k", dtype="bfloat16"), src)  # the fixture is shared: edit a copy
    entries = {}
    for shard in src.glob("*.safetensors"):
        entries |= read_header(shard)
    victim = next(e for e in entries.values() if e.name.endswith("layers.0.self_attn.o_proj.weight"))
    with open(victim.path, "r+b") as f:  # bf16 0x4800 = 131072, beyond float16's 65504
        f.seek(victim.offset + 6)
        f.write(b"\x00\x48")
    with pytest.raises(ConversionError, match=r"blk\.0\.attn_output\.weight holds values beyond float16's range") as e:
        convert.convert_checkpoint(src, tmp_path / "out.gguf", outtype="f16", progress=False)
    assert "up to 1.311e+05" in str(e.value) and "--outtype bf16" in e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary


def test_converted_file_is_the_same_with_or_without_the_fast_path(checkpoint, tmp_path, monkeypatch):
    src = checkpoint("phi-3-128k", dtype="bfloat16")
    fast = convert.convert_checkpoint(src, tmp_path / "fast.gguf", outtype="f16", progress=False)
    monkeypatch.setitem(f16_cast._state, "fns", None)
    slow = convert.convert_checkpoint(src, tmp_path / "numpy.gguf", outtype="f16", progress=False)
    assert fast.read_bytes() == slow.read_bytes()
