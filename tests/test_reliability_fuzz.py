"""Reliability: hypothesis fuzzing of what the converter reads before any weight: config.json and
safetensors headers (GGUF headers are fuzzed in test_gguf_fuzz.py).

Every example feeds convert_checkpoint a damaged checkpoint. The only acceptable outcomes:
- a one-line PhiError (ConversionError...) and nothing in the output folder, or
- a GGUF that our own validator accepts (some mutations are harmless).
Anything else (KeyError, TypeError, ZeroDivisionError, MemoryError, struct.error, a file the
validator refuses, a leftover .partial) fails the test with hypothesis' minimal example.

~200 examples per test by default (derandomized: the same cases every run);
PHI_RELIABILITY_LONG=1 runs 3000 random ones. PHI_RELIABILITY_STATS=FILE appends each test's
figures (cases, outcomes) as one JSON line.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_phi_gguf.convert import convert_checkpoint
from llm_phi_gguf.errors import PhiError
from llm_phi_gguf.gguf_info import validate_gguf

LONG = os.environ.get("PHI_RELIABILITY_LONG") == "1"
FUZZ = settings(
    max_examples=3000 if LONG else 200,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
KINDS = ["phi-3-mini-4k", "phi-3-128k", "phi-2", "phi-3.5-moe"]


def record(name: str, counts: Counter) -> None:
    stats = os.environ.get("PHI_RELIABILITY_STATS")
    if stats:
        with open(stats, "a") as f:
            f.write(json.dumps({"test": name, "long": LONG, **counts}) + "\n")


class Workspace:
    """Per kind: a folder holding links to the checkpoint's files except the one being fuzzed."""

    def __init__(self, checkpoint, root: Path, fuzzed: str):
        self.root, self.fuzzed, self.folders, self.originals = root, fuzzed, {}, {}
        for kind in KINDS:
            src = checkpoint(kind)
            folder = root / kind
            folder.mkdir()
            for f in src.iterdir():
                if f.name != fuzzed:
                    (folder / f.name).symlink_to(f)
            self.folders[kind] = folder
            self.originals[kind] = (src / fuzzed).read_bytes()
        self.out_dir = root / "out"
        self.out_dir.mkdir()

    def convert(self, kind: str, data: bytes, counts: Counter) -> None:
        folder = self.folders[kind]
        (folder / self.fuzzed).write_bytes(data)
        out = self.out_dir / "o.gguf"
        counts["cases"] += 1
        try:
            convert_checkpoint(folder, out, progress=False)
        except PhiError as e:
            left = sorted(p.name for p in self.out_dir.iterdir())
            assert left == [], f"refused ({e}) but left {left}"
            assert "\n" not in str(e), repr(str(e))
            counts["refused"] += 1
            return
        try:
            validate_gguf(out)  # a converted file must pass our own validator
        finally:
            out.unlink(missing_ok=True)
        assert sorted(p.name for p in self.out_dir.iterdir()) == []
        counts["converted"] += 1


@pytest.fixture(scope="module")
def config_ws(checkpoint, tmp_path_factory):
    return Workspace(checkpoint, tmp_path_factory.mktemp("fuzz-config"), "config.json")


@pytest.fixture(scope="module")
def safetensors_ws(checkpoint, tmp_path_factory):
    return Workspace(checkpoint, tmp_path_factory.mktemp("fuzz-st"), "model.safetensors")


# ---------------------------------------------------------------- values

EDGE_INTS = [0, -1, 1, 2, 3, 5, 7, 9, 31, 33, 255, 257, 2**16, 2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**53, 2**63,
             2**64, -(2**63), 10**30]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-3, 300), st.floats(allow_nan=True), st.text(max_size=2)), max_size=5),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)


def numeric_twist(value):
    """A value near a real one: scaled, off by one, negated, halved, made odd, a float or a string."""
    ops = [lambda v: v * 2, lambda v: v // 2, lambda v: v + 1, lambda v: v - 1, lambda v: -v, lambda v: 0,
           lambda v: v * 2**30, lambda v: float(v) + 0.5, lambda v: str(v), lambda v: [v], lambda v: v | 1]
    return st.sampled_from(ops).map(lambda op: op(value) if isinstance(value, int) and not isinstance(value, bool)
                                    else value)


# ---------------------------------------------------------------- config.json

EXTRA_KEYS = ["text_config", "rope_scaling", "rope_parameters", "num_local_experts", "num_experts_per_tok",
              "partial_rotary_factor", "original_max_position_embeddings", "n_head", "n_embd", "n_positions",
              "num_key_value_heads", "architectures", "_name_or_path", "torch_dtype", "sliding_window",
              "vocab_size", "num_attention_heads", "hidden_size", "intermediate_size", "rms_norm_eps",
              "layer_norm_eps", "rope_theta", "max_position_embeddings", "num_hidden_layers"]


@st.composite
def mutated_config(draw, original: dict):
    cfg = json.loads(json.dumps(original))
    keys = sorted(set(cfg) | set(EXTRA_KEYS))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["delete", "junk", "twist", "twist", "nested", "heads", "arch"]))
        if action == "delete":
            cfg.pop(key, None)
        elif action == "junk":
            cfg[key] = draw(JUNK)
        elif action == "twist" and isinstance(cfg.get(key), int):
            cfg[key] = draw(numeric_twist(cfg[key]))
        elif action == "nested":
            rope_key = "rope_scaling" if "rope_scaling" in cfg else "rope_parameters"
            rope = cfg.get(rope_key) if isinstance(cfg.get(rope_key), dict) else {}
            sub = draw(st.sampled_from(["long_factor", "short_factor", "type", "rope_type", "rope_theta",
                                        "original_max_position_embeddings", "partial_rotary_factor"]))
            if sub.endswith("factor") and isinstance(rope.get(sub), list) and draw(st.booleans()):
                n = len(rope[sub])
                rope[sub] = rope[sub][: draw(st.integers(0, n + 2))] + draw(st.lists(JUNK, max_size=2))
            else:
                rope[sub] = draw(st.one_of(JUNK, st.sampled_from(["su", "longrope", "yarn", "linear", "default"])))
            cfg[rope_key] = rope
        elif action == "heads":  # odd and mismatched head counts
            cfg["num_attention_heads"] = draw(st.sampled_from([1, 3, 5, 6, 7, 12, 16, 64, 256, 512]))
            if draw(st.booleans()):
                cfg["num_key_value_heads"] = draw(st.sampled_from([1, 2, 3, 5, 7, 16]))
        elif action == "arch":
            cfg["architectures"] = draw(st.one_of(
                JUNK, st.lists(st.sampled_from(["Phi3ForCausalLM", "PhiForCausalLM", "PhimoeForCausalLM",
                                                "PhiMoEForCausalLM", "LlamaForCausalLM"]), max_size=2)))
    if draw(st.integers(0, 9)) == 0:
        cfg = {"text_config": cfg, "architectures": cfg.get("architectures")}
    return json.dumps(cfg, allow_nan=True).encode()


RAW_CONFIG = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"[]", b"null", b"0", b'"x"', b"[1, 2]", b"{", b"\xff\xfe{}", b'{"architectures": 1}',
                     b'{"architectures": [["Phi3ForCausalLM"]]}', b'{"architectures": {"a": 1}}',
                     b'{"architectures": ["Phi3ForCausalLM"], "text_config": "x"}',
                     b'{"architectures": ["Phi3ForCausalLM"], "text_config": [1]}',
                     b'{"architectures": ["Phi3ForCausalLM"], "rope_scaling": [1]}']),
)


def test_fuzz_config_json(config_ws):
    originals = {k: json.loads(v) for k, v in config_ws.originals.items()}
    counts = Counter()

    @FUZZ
    @given(data=st.data())
    def check(data):
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        raw = data.draw(st.one_of(mutated_config(originals[kind]), RAW_CONFIG) if data.draw(st.integers(0, 7))
                        else RAW_CONFIG, label="config.json")
        config_ws.convert(kind, raw, counts)

    try:
        check()
    finally:
        record("fuzz_config_json", counts)
    assert counts["refused"] > counts["cases"] // 2  # the mutations do bite


# ---------------------------------------------------------------- safetensors headers


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


ODD_VALUES = [[], ["F32"], {"F32": 1}, 1, 2.5, None, True]  # unhashable and non-string values
DTYPES = ["F32", "F16", "BF16", "F64", "I8", "U8", "I64", "BOOL", "F8_E4M3", "Q4_0", "", "f32"]
SHAPES = st.one_of(
    st.lists(st.sampled_from([0, 1, 2, 3, 32, 64, 255, 256, 512, 2**31, 2**32, 2**63, -1, -256]), max_size=5),
    st.lists(st.one_of(st.integers(-3, 600), st.floats(allow_nan=True), st.text(max_size=2), st.none()), max_size=4),
    JUNK,
)
OFFSET = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([0, -1, 2**63, 2**64]), st.floats(), st.text(max_size=3),
                   st.none())


@st.composite
def mutated_header(draw, original: bytes):
    header, blob = split_safetensors(original)
    names = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        entry = header.get(name)
        action = draw(st.sampled_from(["dtype", "shape", "offsets", "consistent", "drop_key", "junk_entry",
                                       "delete", "rename", "copy", "metadata", "shift"]))
        if action == "delete":
            header.pop(name, None)
        elif action == "rename":
            header[draw(st.one_of(st.text(max_size=40), st.sampled_from(
                ["model.layers.99.self_attn.o_proj.weight", "model.norm.weight", "lm_head.bias", "",
                 "model.layers.0.block_sparse_moe.experts.9.w1.weight", "__metadata__"])))] = header.pop(name, None)
        elif action == "copy":
            header[draw(st.sampled_from(["model.layers.2.self_attn.o_proj.weight", "model.embed_tokens.weight",
                                         "lm_head.weight", "model.layers.0.mlp.down_proj.weight"]))] = entry
        elif action == "metadata":
            header["__metadata__"] = draw(JUNK)
        elif action == "junk_entry":
            header[name] = draw(JUNK)
        elif not isinstance(entry, dict):
            continue
        elif action == "dtype":
            entry["dtype"] = draw(st.one_of(st.sampled_from(DTYPES), st.sampled_from(ODD_VALUES), JUNK))
        elif action == "shape":
            entry["shape"] = draw(st.one_of(SHAPES, st.sampled_from(ODD_VALUES)))
        elif action == "offsets":
            entry["data_offsets"] = draw(st.one_of(st.lists(OFFSET, min_size=0, max_size=3), JUNK))
        elif action == "drop_key":
            entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif action == "shift":  # valid-looking offsets that point elsewhere in the blob
            if not (isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                    and all(isinstance(o, int) for o in entry["data_offsets"])):
                continue
            begin, end = entry["data_offsets"]
            delta = draw(st.integers(-len(blob), len(blob)))
            entry["data_offsets"] = [begin + delta, end + delta]
        elif action == "consistent":  # dtype / shape changed, offsets recomputed to match
            entry["dtype"] = draw(st.sampled_from(["F32", "F16", "BF16"]))
            entry["shape"] = draw(st.lists(st.integers(0, 600), min_size=0, max_size=3))
            size = {"F32": 4}.get(entry["dtype"], 2)
            n = 1
            for d in entry["shape"]:
                n *= d
            begin = entry["data_offsets"][0] if isinstance(entry.get("data_offsets"), list) else 0
            entry["data_offsets"] = [begin, begin + n * size]
    text = json.dumps(header, allow_nan=True).encode()
    if draw(st.integers(0, 4)) == 0:
        text += b" " * draw(st.integers(0, 7))  # the real format pads the header with spaces
    return struct.pack("<Q", len(text)) + text + blob


@st.composite
def raw_damage(draw, original: bytes):
    (n,) = struct.unpack("<Q", original[:8])
    how = draw(st.sampled_from(["length", "garbage", "truncate", "not_object", "bad_utf8"]))
    if how == "length":
        length = draw(st.one_of(st.sampled_from([0, 1, n - 1, n + 1, n + 8, 100 * 2**20, 100 * 2**20 + 1, 2**63,
                                                 2**64 - 1, len(original)]), st.integers(0, 2**64 - 1)))
        return struct.pack("<Q", length) + original[8:]
    if how == "garbage":
        junk = draw(st.binary(min_size=0, max_size=n))
        return struct.pack("<Q", n) + junk + b" " * (n - len(junk)) + original[8 + n:]
    if how == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if how == "not_object":
        text = draw(st.sampled_from([b"[]", b"null", b"1", b'"s"', b"[{}]", b"true"]))
        return struct.pack("<Q", len(text)) + text + original[8 + n:]
    text = original[8:8 + n].replace(b'"dtype"', b'"\xff\xfetype"', 1)
    return struct.pack("<Q", len(text)) + text + original[8 + n:]


def test_fuzz_safetensors_headers(safetensors_ws):
    counts = Counter()

    @FUZZ
    @given(data=st.data())
    def check(data):
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        original = safetensors_ws.originals[kind]
        raw = data.draw(mutated_header(original) if data.draw(st.integers(0, 3)) else raw_damage(original),
                        label="model.safetensors")
        safetensors_ws.convert(kind, raw, counts)

    try:
        check()
    finally:
        record("fuzz_safetensors_headers", counts)
    assert counts["refused"] > counts["cases"] // 2


def test_workspace_converts_the_undamaged_originals(config_ws, safetensors_ws):
    """The fuzzers start from checkpoints that do convert (else every refusal would be vacuous)."""
    counts = Counter()
    for ws in (config_ws, safetensors_ws):
        for kind in KINDS:
            ws.convert(kind, ws.originals[kind], counts)
    assert counts["converted"] == 2 * len(KINDS)


# ---------------------------------------------------------------- chat templates (the gap)


def test_nested_loops_over_non_range_iterables_are_bounded():
    """test_templates.py bounds range(); a loop over any other big iterable (here a string built
    with `*`, within the repeat limit) nested twice was 10^12 iterations: a hang of `llm -m`."""
    import time

    from llm_phi_gguf import templates
    from llm_phi_gguf.errors import TemplateError

    start = time.monotonic()
    with pytest.raises(TemplateError, match="loops too long"):
        templates.render("{% for c in 'a' * 999999 %}{% for d in 'a' * 999999 %}{% endfor %}{% endfor %}",
                         [{"role": "user", "content": "x"}])
    assert time.monotonic() - start < 10
    # loop variables that need the whole sequence still work through the budget
    out = templates.render("{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ 'L' if loop.last }} "
                           "{% else %}none{% endfor %}", [{"role": "user", "content": "x"}] * 2)
    assert out == "1/2 2/2L "
