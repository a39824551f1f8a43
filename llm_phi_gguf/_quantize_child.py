"""Child process that makes the one native call `llama_model_quantize` (see quantize.py).

Why a child: llama.cpp aborts the whole process on some inputs, and a long C call ignores
Ctrl-C. Here an abort only kills this process, and the parent can stop us at any time.

Protocol: argv[1] is a JSON job {src, dst, ftype, nthread, allow_requantize, pure, imatrix}
where `imatrix` is None or a legacy-format .dat file whose entries hold the final per-column
weights (ncall 1), written by the parent. Every llama.cpp log fragment goes to stdout,
unbuffered; the parent parses progress, fallbacks and error messages from it. Exit status:
llama's return code (0 success, 1 failure), or death by a signal.

Start-up cost is overhead on every quantization, so this process imports only the standard
library and loads libllama with ctypes itself (`import llama_cpp` costs ~0.2 s: numpy, jinja2);
the two structs below mirror include/llama.h, and a test compares them with llama_cpp's binding.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from array import array
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """If the parent is killed outright, take us down too (Linux only; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _imatrix_dat():
    """imatrix_dat.py, the package's one .dat reader, loaded by path (importing the package would
    import llm too, start-up time every quantization pays)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_llm_phi_imatrix_dat", Path(__file__).with_name("imatrix_dat.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_weights(path: str) -> list[tuple[bytes, array]]:
    """Entries of a legacy imatrix file as (name, float32 values / ncall)."""
    with open(path, "rb") as f:
        entries, _, _ = _imatrix_dat().read_dat(f.read())
    return [(name.encode(), values if ncall <= 1 else array("f", (v / ncall for v in values)))
            for name, ncall, values in entries]


class ImatrixData(ctypes.Structure):  # struct llama_model_imatrix_data
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.POINTER(ctypes.c_float)), ("size", ctypes.c_size_t)]


class QuantizeParams(ctypes.Structure):  # struct llama_model_quantize_params
    _fields_ = [
        ("nthread", ctypes.c_int32),
        ("ftype", ctypes.c_int),
        ("output_tensor_type", ctypes.c_int),
        ("token_embedding_type", ctypes.c_int),
        ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool),
        ("only_copy", ctypes.c_bool),
        ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool),
        ("dry_run", ctypes.c_bool),
        ("imatrix", ctypes.POINTER(ImatrixData)),
        ("kv_overrides", ctypes.c_void_p),
        ("tt_overrides", ctypes.c_void_p),
        ("prune_layers", ctypes.POINTER(ctypes.c_int32)),
        ("max_buf_size", ctypes.c_size_t),
    ]


LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
LIB_NAMES = {"linux": ("libllama.so",), "darwin": ("libllama.dylib", "libllama.so")}


def load_libllama() -> ctypes.CDLL:
    """libllama from llama_cpp's package folder without importing the package (else via the package)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    folder = Path(spec.submodule_search_locations[0]) / "lib" if spec and spec.submodule_search_locations else None
    names = LIB_NAMES.get(sys.platform, ())
    found = [folder / n for n in names if folder and (folder / n).is_file()]
    if found:
        lib = ctypes.CDLL(str(found[0]))
    else:  # Windows DLL search paths and other layouts: let llama_cpp's own loader do it
        import llama_cpp.llama_cpp

        lib = llama_cpp.llama_cpp._lib
    lib.llama_backend_init.argtypes, lib.llama_backend_init.restype = [], None
    lib.llama_log_set.argtypes, lib.llama_log_set.restype = [LOG_CALLBACK, ctypes.c_void_p], None
    lib.llama_model_quantize_default_params.argtypes = []
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    return lib


def imatrix_struct(entries: list[tuple[bytes, array]]):
    """The NULL-terminated llama_model_imatrix_data array (the float buffers stay owned by `entries`)."""
    table = (ImatrixData * (len(entries) + 1))()
    for i, (name, values) in enumerate(entries):
        table[i].name = name
        table[i].data = ctypes.cast((ctypes.c_float * len(values)).from_buffer(values), ctypes.POINTER(ctypes.c_float))
        table[i].size = len(values)
    table[len(entries)].name = None
    return table


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides what happens (it kills us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lib = load_libllama()

    @LOG_CALLBACK
    def relay(level, text, user_data):
        if text:
            os.write(1, text)

    lib.llama_log_set(relay, None)
    lib.llama_backend_init()
    params = lib.llama_model_quantize_default_params()
    params.ftype = job["ftype"]
    params.nthread = job["nthread"]
    params.allow_requantize = job["allow_requantize"]
    params.pure = job["pure"]
    entries = read_weights(job["imatrix"]) if job["imatrix"] else []
    if entries:
        table = imatrix_struct(entries)
        params.imatrix = ctypes.cast(table, ctypes.POINTER(ImatrixData))
    return int(lib.llama_model_quantize(job["src"].encode(), job["dst"].encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
