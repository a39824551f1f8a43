"""Fuzzing our GGUF reader: whatever the bytes, read_gguf/validate_gguf either return or raise
GGUFError (never IndexError, struct.error, MemoryError, UnicodeDecodeError, ...).

And the point of validating: a file that validate_gguf accepts must not crash llama.cpp. That
part mutates metadata values only (the structure stays intact) and loads each accepted mutant
in a subprocess, where an abort shows as a negative return code.

PHI_FUZZ_LONG=1 runs thousands of examples instead of a few hundred.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.gguf_builders import write_llama, write_phi3
from llm_phi_gguf.errors import GGUFError
from llm_phi_gguf.gguf_info import validate_gguf
from llm_phi_gguf.gguf_reader import _SCALAR_TYPES, T_ARRAY, T_BOOL, T_F32, T_STRING, T_U32, read_gguf

LONG = os.environ.get("PHI_FUZZ_LONG") == "1"
FUZZ = settings(max_examples=5000 if LONG else 300, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow])

_DIR = Path(tempfile.mkdtemp(prefix="gguf-fuzz-"))
SEEDS = {"phi3": write_phi3(_DIR / "phi3.gguf").read_bytes(),
         "llama": write_llama(_DIR / "llama.gguf").read_bytes()}


def _header_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of every count, length and type field of a valid file, so the
    fuzzer can aim at the numbers the parser trusts least."""
    fields = [(4, "I"), (8, "q"), (16, "q")]
    n_tensors, n_kv = struct.unpack_from("<qq", data, 8)
    pos = 24

    def string(pos: int) -> int:
        fields.append((pos, "Q"))
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]

    for _ in range(n_kv):
        pos = string(pos)
        fields.append((pos, "i"))
        vtype = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        count = 1
        if vtype == T_ARRAY:
            fields += [(pos, "i"), (pos + 4, "Q")]
            vtype, count = struct.unpack_from("<iQ", data, pos)
            pos += 12
        for _ in range(count):
            pos = string(pos) if vtype == T_STRING else pos + _SCALAR_TYPES[vtype][1]
    for _ in range(n_tensors):
        pos = string(pos)
        n_dims = struct.unpack_from("<I", data, pos)[0]
        fields += [(pos, "I")] + [(pos + 4 + 8 * j, "q") for j in range(n_dims)]
        pos += 4 + 8 * n_dims
        fields += [(pos, "i"), (pos + 4, "Q")]
        pos += 12
    return fields


FIELDS = {name: _header_fields(data) for name, data in SEEDS.items()}
INTERESTING = [0, 1, 2, 3, 31, 32, 63, 64, 255, 256, 4096, (1 << 30), (1 << 30) + 1,
               (1 << 31) - 1, (1 << 32) - 1, (1 << 63) - 1]


def _check(data: bytes) -> None:
    path = _DIR / f"mutant-{os.getpid()}.gguf"
    path.write_bytes(data)
    try:
        info = read_gguf(path)
        assert info.data_offset <= info.file_size
        validate_gguf(path)
    except GGUFError as e:
        assert "\n" not in str(e) and str(path) in str(e)


@st.composite
def mutants(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    header_end = read_gguf(_DIR / "phi3.gguf").data_offset + 64
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, min(len(data), header_end)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            blob = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(blob)] = blob
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(mutants())
def test_random_mutations_only_raise_gguf_error(data):
    _check(data)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_header_number_mutations_only_raise_gguf_error(name, draw):
    data = bytearray(SEEDS[name])
    for _ in range(draw.draw(st.integers(1, 3))):
        offset, fmt = draw.draw(st.sampled_from(FIELDS[name]))
        bits = struct.calcsize(fmt) * 8
        value = draw.draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << bits) - 1)))
        value &= (1 << bits) - 1
        struct.pack_into("<" + fmt.upper(), data, offset, value)
    _check(bytes(data))


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 1 << 16))
def test_truncations_only_raise_gguf_error(name, cut):
    data = SEEDS[name]
    _check(data[: cut % (len(data) + 1)])


# --- accepted mutants must load in llama.cpp ----------------------------------------------

LOAD_PROBE = """
import sys
from llama_cpp import Llama
try:
    llm = Llama(model_path=sys.argv[1], n_ctx=32, n_batch=32, n_threads=1, verbose=False)
except Exception:
    sys.exit(3)  # a clean load error is fine: only a crash is a failure
llm.eval([1, 4, 5])
"""


def _value_sites(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, value type, byte length) of every scalar value and every token string."""
    info = read_gguf(_DIR / "phi3.gguf")
    sites, pos = [], 24
    for key, vtype in info.value_types.items():
        pos += 8 + len(key.encode()) + 4
        if vtype == T_ARRAY:
            etype, count = struct.unpack_from("<iQ", data, pos)
            pos += 12
            for _ in range(count):
                if etype == T_STRING:
                    n = struct.unpack_from("<Q", data, pos)[0]
                    if key == "tokenizer.ggml.tokens" and n:
                        sites.append((pos + 8, T_STRING, n))
                    pos += 8 + n
                else:
                    sites.append((pos, etype, _SCALAR_TYPES[etype][1]))
                    pos += _SCALAR_TYPES[etype][1]
        elif vtype == T_STRING:
            n = struct.unpack_from("<Q", data, pos)[0]
            sites.append((pos + 8, T_STRING, n))
            pos += 8 + n
        else:
            sites.append((pos, vtype, _SCALAR_TYPES[vtype][1]))
            pos += _SCALAR_TYPES[vtype][1]
    return sites


def _mutate_value(rng: random.Random, data: bytearray, site: tuple[int, int, int]) -> None:
    offset, vtype, size = site
    if vtype == T_U32:
        value = rng.choice(INTERESTING[:12] + [rng.randrange(1 << 32), rng.randrange(1, 70)])
        struct.pack_into("<I", data, offset, value & 0xFFFFFFFF)
    elif vtype == T_F32:
        value = rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf"), rng.uniform(-5, 5)])
        struct.pack_into("<f", data, offset, value)
    elif vtype == T_BOOL:
        data[offset] = rng.randrange(256)
    else:  # strings (token texts, tokenizer model, names) and other fixed-size values
        i = offset + rng.randrange(size)
        data[i] = rng.choice([0, ord("a"), ord("c"), ord("<"), rng.randrange(256)])


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama_cpp")
def test_accepted_metadata_mutants_load_in_llama_cpp():
    seed = SEEDS["phi3"]
    sites = _value_sites(seed)
    rng = random.Random(1234)
    accepted, tried = 0, 0
    probe = _DIR / "probe.py"
    probe.write_text(LOAD_PROBE)
    while accepted < (100 if LONG else 20) and tried < 400:
        tried += 1
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            _mutate_value(rng, data, rng.choice(sites))
        path = _DIR / f"accepted-{accepted}.gguf"
        path.write_bytes(bytes(data))
        try:
            info = validate_gguf(path)
        except GGUFError:
            continue
        accepted += 1
        # Without GGML_NO_BACKTRACE an abort tries to attach gdb and can hang instead of dying.
        env = dict(os.environ, GGML_NO_BACKTRACE="1")
        proc = subprocess.run([sys.executable, str(probe), str(path)], capture_output=True,
                              text=True, timeout=60, env=env)
        assert proc.returncode >= 0, (
            f"llama.cpp crashed (signal {-proc.returncode}) on a file validate_gguf accepted; "
            f"metadata: { {k: v for k, v in info.metadata.items()} }\n{proc.stderr[-2000:]}")
        path.unlink()
    assert accepted >= 10
