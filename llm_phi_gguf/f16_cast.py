"""float16 casts at SIMD speed through ggml's row converters, byte-identical to numpy's.

numpy's float32 -> float16 cast runs about 5 ns a value here, and the isinf check after it
another 2.5 ns: the converter spent ~11 s of CPU on casts for a 2.2 GB bf16 checkpoint.
ggml's CPU backend (the libggml-cpu that llama-cpp-python ships) converts whole rows with
F16C/NEON at about 1 ns a value, in C, with the GIL released, so two threads really run.

Two guards keep the output byte-identical to numpy's `astype(float16)`:
- at first use, `_self_check` converts every bf16 bit pattern with finite f16 result and a set
  of float32 rounding ties through both; any difference (another build, another CPU path)
  and we stay with numpy;
- the fast path takes only blocks whose values all lie inside float16's finite range (a max
  over the bits, ~0.3 ns a value); a block with inf, NaN or a value that would overflow goes
  through numpy, where the converter names the tensor that overflows.

    to_f16(block, src_dtype) -> float16 array, or None where the caller must use numpy
"""

from __future__ import annotations

import threading

# |x| >= 65520 rounds to inf in float16 (65504 is its largest finite value); as bit patterns:
F32_OVERFLOW_BITS = 0x477FF000
BF16_OVERFLOW_BITS = 0x4780  # 65536, the first bf16 value above 65504
ROWS = 1 << 16  # values per C call: a 256 KiB f32 scratch that stays in L2

_lock = threading.Lock()
_state: dict = {}  # "fns": (bf16_to_f32, f32_to_f16) ctypes functions, or None once found wanting
_scratch = threading.local()


def to_f16(block, src_dtype: str):
    """`block` (raw bits: uint16 for BF16, float32 for F32) as float16, or None: no fast path
    here, or a value outside float16's finite range (the caller casts with numpy and reports)."""
    import numpy as np

    fns = _functions()
    if fns is None or src_dtype not in ("BF16", "F32"):
        return None
    src = np.ascontiguousarray(block)
    if src_dtype == "BF16":
        if src.size and int(np.max(src & np.uint16(0x7FFF))) >= BF16_OVERFLOW_BITS:
            return None
    elif src.size and int(np.max(src.view(np.uint32) & np.uint32(0x7FFFFFFF))) >= F32_OVERFLOW_BITS:
        return None
    out = np.empty(src.shape, dtype=np.float16)
    _rows(fns, src.reshape(-1), out.reshape(-1), src_dtype == "BF16")
    return out


def _rows(fns, src, out, widen: bool) -> None:
    """Cast src into out ROWS values at a time; bf16 is widened into a per-thread f32 scratch."""
    import numpy as np

    bf16_to_f32, f32_to_f16 = fns
    scratch = getattr(_scratch, "buf", None)
    if scratch is None:
        scratch = _scratch.buf = np.empty(ROWS, dtype=np.float32)
    for i in range(0, src.size, ROWS):
        n = min(ROWS, src.size - i)
        part = src[i:i + n]
        if widen:
            bf16_to_f32(part.ctypes.data, scratch.ctypes.data, n)
            part = scratch
        f32_to_f16(part.ctypes.data, out[i:i + n].ctypes.data, n)


def _functions():
    if "fns" not in _state:
        with _lock:
            if "fns" not in _state:
                fns = _load()
                _state["fns"] = fns if fns is not None and _self_check(fns) else None
    return _state["fns"]


def _load():
    """ggml_cpu_bf16_to_fp32 and ggml_cpu_fp32_to_fp16 from llama-cpp-python's own libraries,
    found without importing llama_cpp (which would load libllama too); None if absent."""
    import ctypes
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    libdir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    base, cpu = _library(libdir, "ggml-base"), _library(libdir, "ggml-cpu")
    if base is None or cpu is None:
        return None
    try:
        ctypes.CDLL(str(base), mode=ctypes.RTLD_GLOBAL)  # ggml-cpu resolves its symbols here
        lib = ctypes.CDLL(str(cpu))
        fns = (lib.ggml_cpu_bf16_to_fp32, lib.ggml_cpu_fp32_to_fp16)
    except (OSError, AttributeError):
        return None
    for fn in fns:
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None
    return fns


def _library(libdir, stem: str):
    for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (libdir / name).is_file():
            return libdir / name
    return None


def _self_check(fns) -> bool:
    """True when ggml's casts give numpy's bits for every finite in-range bf16 value (all
    exponents, subnormal results included) and for float32 values on f16 rounding ties."""
    import numpy as np

    bits = np.arange(1 << 16, dtype=np.uint16)
    bits = bits[(bits & 0x7FFF) < BF16_OVERFLOW_BITS]
    wide = (bits.astype(np.uint32) << 16).view(np.float32)
    # f16 rounding: each tie, a value either side, across normal and subnormal f16 exponents
    ulp = np.float32(2.0) ** (np.maximum(np.arange(-25, 16), -14) - 10).astype(np.float32)  # subnormal: 2^-24
    base = np.float32(2.0) ** np.arange(-25, 16).astype(np.float32)
    steps = np.arange(0, 8, dtype=np.float32)
    ties = (base[:, None] + ulp[:, None] * (steps[None, :] + np.float32(0.5))).reshape(-1)
    near = np.concatenate([ties, np.nextafter(ties, np.float32(0)), np.nextafter(ties, np.float32(1e9))])
    near = near[near < 65504]
    values = np.concatenate([wide, near, -near])
    got = np.empty(values.size, dtype=np.float16)
    _rows(fns, values, got, widen=False)
    widened = np.empty(bits.size, dtype=np.float32)
    fns[0](bits.ctypes.data, widened.ctypes.data, bits.size)
    return (np.array_equal(widened.view(np.uint32), wide.view(np.uint32))
            and np.array_equal(got.view(np.uint16), values.astype(np.float16).view(np.uint16)))
