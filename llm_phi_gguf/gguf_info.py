"""What llama.cpp needs of a Phi GGUF before it may open it: `validate_gguf`.

llama.cpp trusts much of a GGUF file: some bad files make it abort the whole process
(GGML_ASSERT) instead of returning an error. Files come from strangers, so every path that hands
a GGUF to llama.cpp first runs `validate_gguf`: gguf_reader.py reads the header (bounded), and
the rules here (the architecture is Phi, and the loader's checks of src/llama-model.cpp,
llama-model-loader.cpp and llama-vocab.cpp) turn each such problem into a one-line `GGUFError`
naming the file.
"""

from __future__ import annotations

import os
from typing import NoReturn

from .errors import GGUFError
from .families import GGUF_ARCHITECTURES, SEE_FAMILIES, gguf_name, refusal, unsupported_model
from .gguf_reader import (T_ARRAY, T_BOOL, T_F32, T_I32, T_STRING, T_U32, VALUE_TYPE_NAMES, GGUFArray, GGUFInfo,
                          read_gguf, show)

PHI_ARCHITECTURES = tuple(sorted(GGUF_ARCHITECTURES))  # families.py: the one list
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS

# --- what llama.cpp's loader needs (src/llama-model.cpp, llama-model-loader.cpp, llama-vocab.cpp)

# Keys llama.cpp reads with one exact GGUF type ("wrong type" load error otherwise);
# "{}" is the architecture.
_KEY_TYPES: dict[str, int] = {
    "general.name": T_STRING,
    "{}.context_length": T_U32,
    "{}.embedding_length": T_U32,
    "{}.block_count": T_U32,
    "{}.feed_forward_length": T_U32,
    "{}.attention.head_count": T_U32,
    "{}.attention.head_count_kv": T_U32,
    "{}.attention.key_length": T_U32,
    "{}.attention.value_length": T_U32,
    "{}.attention.layer_norm_epsilon": T_F32,
    "{}.attention.layer_norm_rms_epsilon": T_F32,
    "{}.attention.sliding_window": T_U32,
    "{}.rope.dimension_count": T_U32,
    "{}.rope.freq_base": T_F32,
    "{}.rope.scaling.type": T_STRING,
    "{}.rope.scaling.factor": T_F32,
    "{}.rope.scale_linear": T_F32,
    "{}.rope.scaling.attn_factor": T_F32,
    "{}.rope.scaling.original_context_length": T_U32,
    "{}.rope.scaling.finetuned": T_BOOL,
    "{}.expert_count": T_U32,
    "{}.expert_used_count": T_U32,
    "{}.expert_group_count": T_U32,
    "{}.expert_group_used_count": T_U32,
    "{}.nextn_predict_layers": T_U32,
    "tokenizer.ggml.model": T_STRING,
    "tokenizer.ggml.pre": T_STRING,
    "tokenizer.ggml.bos_token_id": T_U32,
    "tokenizer.ggml.eos_token_id": T_U32,
    "tokenizer.ggml.eot_token_id": T_U32,
    "tokenizer.ggml.unknown_token_id": T_U32,
    "tokenizer.ggml.seperator_token_id": T_U32,
    "tokenizer.ggml.padding_token_id": T_U32,
    "tokenizer.ggml.add_bos_token": T_BOOL,
    "tokenizer.ggml.add_eos_token": T_BOOL,
    "tokenizer.ggml.add_space_prefix": T_BOOL,
    "tokenizer.chat_template": T_STRING,
}
# Read with get_key_or_arr: a scalar, or one value per layer (exactly block_count of them).
_PER_LAYER_KEYS = frozenset({
    "{}.feed_forward_length", "{}.attention.head_count", "{}.attention.head_count_kv",
    "{}.expert_used_count",
})
_REQUIRED_KEYS = ("{}.context_length", "{}.embedding_length", "{}.block_count",
                  "tokenizer.ggml.model")
# Each Phi arch reads exactly one norm epsilon key, and requires it.
_NORM_EPS_KEYS = {
    "phi2": "{}.attention.layer_norm_epsilon",
    "phi3": "{}.attention.layer_norm_rms_epsilon",
    "phimoe": "{}.attention.layer_norm_rms_epsilon",
}
# tokenizer.ggml.model values llama.cpp knows; "unknown tokenizer" otherwise.
_TOKENIZER_MODELS = frozenset({"no_vocab", "none", "llama", "bert", "gpt2", "hybriddna",
                               "whitespace", "t5", "rwkv", "plamo2", "gemma4"})
_BPE_MODELS = frozenset({"gpt2", "hybriddna", "whitespace", "gemma4"})  # need merges
# Unknown strings fail GGML_ASSERT (abort) in load_hparams.
_ROPE_SCALING_TYPES = frozenset({"none", "linear", "yarn", "longrope"})


def check_phi(info: GGUFInfo) -> None:
    arch = info.architecture
    if arch is None:
        raise GGUFError(f"{info.path} has no general.architecture, so it is not a Phi model "
                        f"(supported: {', '.join(PHI_ARCHITECTURES)})")
    if arch not in PHI_ARCHITECTURES:
        if (model := unsupported_model(name=gguf_name(info.metadata))) is not None:
            raise GGUFError(refusal(model, str(info.path)), hint=SEE_FAMILIES)
        raise GGUFError(f"{info.path} is a GGUF of architecture {show(arch)}, not a Phi model "
                        f"(supported: {', '.join(PHI_ARCHITECTURES)})")


def validate_gguf(path: str | os.PathLike, hint: str | None = None) -> GGUFInfo:
    """Everything we check before llama.cpp may open `path`; returns the parsed header.

    hint: the caller's next step, added to an error that has none of its own."""
    try:
        info = read_gguf(path)
        check_phi(info)
        check_loadable(info)
    except GGUFError as e:
        if hint is None or e.hint:
            raise
        raise GGUFError(str(e), hint=hint) from None
    return info


def check_loadable(info: GGUFInfo) -> None:
    """Raise GGUFError for what llama.cpp's loader would abort on or reject obscurely."""
    arch = info.architecture
    if arch is None:
        raise GGUFError(f"{info.path}: general.architecture is missing or not a string")
    keys = _Keys(info, arch)
    keys.check_types()
    for key in _REQUIRED_KEYS + ((_NORM_EPS_KEYS[arch],) if arch in _NORM_EPS_KEYS else ()):
        keys.require(key)
    n_layer = keys.value("{}.block_count")
    if not 1 <= n_layer <= MAX_LAYERS:
        keys.fail("{}.block_count", f"is {n_layer}; llama.cpp supports 1 to {MAX_LAYERS} layers")
    if keys.value("{}.context_length") == 0:
        keys.fail("{}.context_length", "is 0")
    keys.check_per_layer(n_layer)
    _check_experts(keys, arch, n_layer)
    if arch in PHI_ARCHITECTURES:
        _check_heads_and_rope(keys)
    _check_rope_scaling(keys)
    nextn = keys.value("{}.nextn_predict_layers", 0)
    if nextn > n_layer:
        keys.fail("{}.nextn_predict_layers", f"is {nextn}, more than the {n_layer} layers")
    _check_tokenizer(keys)


class _Keys:
    """Typed access to one architecture's metadata, with uniform error messages."""

    def __init__(self, info: GGUFInfo, arch: str):
        self.info, self.arch = info, arch

    def name(self, key: str) -> str:
        return key.replace("{}", self.arch)

    def fail(self, key: str, problem: str) -> NoReturn:
        raise GGUFError(f"{self.info.path}: {self.name(key)} {problem}")

    def has(self, key: str) -> bool:
        return self.name(key) in self.info.metadata

    def value(self, key: str, default: object = None) -> object:
        return self.info.metadata.get(self.name(key), default)

    def require(self, key: str) -> None:
        if not self.has(key):
            raise GGUFError(f"{self.info.path}: required key {self.name(key)} is missing")

    def check_types(self) -> None:
        types = self.info.value_types
        for key, expected in _KEY_TYPES.items():
            actual = types.get(self.name(key))
            if actual is None or actual == expected:
                continue
            if actual == T_ARRAY and key in _PER_LAYER_KEYS:
                continue  # checked by check_per_layer
            self.fail(key, f"has type {VALUE_TYPE_NAMES.get(actual, actual)}, "
                           f"llama.cpp expects {VALUE_TYPE_NAMES[expected]}")

    def check_per_layer(self, n_layer: int) -> None:
        for key in _PER_LAYER_KEYS:
            value = self.value(key)
            if not isinstance(value, GGUFArray | list):
                continue
            etype = value.type if isinstance(value, GGUFArray) else self._array_type(key)
            if etype not in (T_U32, T_I32):
                self.fail(key, f"is an array of {VALUE_TYPE_NAMES.get(etype, etype)}, "
                               "llama.cpp expects u32")
            count = value.count if isinstance(value, GGUFArray) else len(value)
            if count != n_layer:
                self.fail(key, f"has {count} per-layer values for {n_layer} layers")

    def _array_type(self, key: str) -> int:
        return self.info.array_types[self.name(key)]

    def layers(self, key: str, default: int | None = None) -> list[int] | None:
        """A per-layer key as a list of ints (a scalar stands for every layer)."""
        value = self.value(key)
        if value is None:
            return None if default is None else [default]
        if isinstance(value, int):
            return [value]
        return self.info.read_array(self.name(key))

    def array(self, key: str) -> GGUFArray | None:
        value = self.value(key)
        if isinstance(value, list):
            return GGUFArray(self._array_type(key), len(value))
        return value if isinstance(value, GGUFArray) else None


def _check_experts(keys: _Keys, arch: str, n_layer: int) -> None:
    # Mirrors the GGML_ASSERTs in llama_model_base::load_hparams: a violation aborts.
    n_expert = keys.value("{}.expert_count", 0)
    used = max(keys.layers("{}.expert_used_count", 0) or [0])
    groups = keys.value("{}.expert_group_count", 0)
    if n_expert > MAX_EXPERTS:
        keys.fail("{}.expert_count", f"is {n_expert}; llama.cpp supports at most {MAX_EXPERTS}")
    if arch == "phimoe" and n_expert == 0:
        keys.fail("{}.expert_count", "is missing or 0; phimoe needs 0 < expert_used_count "
                                     "<= expert_count")
    if n_expert == 0:
        if used:
            keys.fail("{}.expert_used_count", f"is {used} but the model has no experts")
        if groups:
            keys.fail("{}.expert_group_count", f"is {groups} but the model has no experts")
        return
    if not 0 < used <= n_expert:
        keys.fail("{}.expert_used_count", f"is {used}; it must be between 1 and "
                                          f"expert_count ({n_expert})")
    if groups >= n_expert:
        keys.fail("{}.expert_group_count", f"is {groups}; it must be below expert_count "
                                           f"({n_expert})")
    if groups > 1:
        group_used = keys.value("{}.expert_group_used_count", 0)
        if n_expert % groups or not 0 < group_used < groups:
            keys.fail("{}.expert_group_count", f"({groups}) does not fit expert_count "
                                               f"{n_expert} / expert_group_used_count {group_used}")


def _check_heads_and_rope(keys: _Keys) -> None:
    # The Phi graphs divide by the head count (phimoe even while loading: SIGFPE on 0), and
    # ggml's rope asserts n_rot <= head size and n_rot even at the first decode.
    n_embd = keys.value("{}.embedding_length")
    heads = keys.layers("{}.attention.head_count")
    if heads is None:
        keys.fail("{}.attention.head_count", "is missing")
    heads_kv = keys.layers("{}.attention.head_count_kv") or heads
    n = max(len(heads), len(heads_kv))  # a scalar stands for every layer
    for n_head, n_head_kv in zip(heads * n if len(heads) == 1 else heads,
                                 heads_kv * n if len(heads_kv) == 1 else heads_kv):
        if n_head <= 0 or n_embd % n_head:
            keys.fail("{}.attention.head_count", f"is {n_head}; it must divide "
                                                 f"embedding_length ({n_embd})")
        if n_head_kv <= 0 or n_head % n_head_kv:
            keys.fail("{}.attention.head_count_kv", f"is {n_head_kv}; it must divide "
                                                    f"head_count ({n_head})")
    head_dim = keys.value("{}.attention.key_length", n_embd // heads[0])
    n_rot = keys.value("{}.rope.dimension_count", head_dim)
    if n_rot % 2:
        keys.fail("{}.rope.dimension_count", f"is {n_rot}; it must be even")
    if n_rot > head_dim:
        keys.fail("{}.rope.dimension_count", f"is {n_rot}, more than the head size {head_dim}")


def _check_rope_scaling(keys: _Keys) -> None:
    scaling = keys.value("{}.rope.scaling.type")
    if scaling is not None and scaling not in _ROPE_SCALING_TYPES:
        keys.fail("{}.rope.scaling.type", f"is {show(scaling)}; llama.cpp knows "
                                          f"{', '.join(sorted(_ROPE_SCALING_TYPES))}")


def _check_tokenizer(keys: _Keys) -> None:
    model = keys.value("tokenizer.ggml.model")
    if model not in _TOKENIZER_MODELS:
        keys.fail("tokenizer.ggml.model", f"is {show(model)}, a tokenizer llama.cpp does not know")
    if model in ("none", "no_vocab"):
        return
    tokens = keys.array("tokenizer.ggml.tokens")
    if tokens is None or tokens.type != T_STRING:
        keys.fail("tokenizer.ggml.tokens", "is missing or not an array of strings")
    if tokens.count == 0:
        keys.fail("tokenizer.ggml.tokens", "is empty")
    for key, types in (("tokenizer.ggml.scores", (T_F32, T_I32)),
                       ("tokenizer.ggml.token_type", (T_I32,))):
        _check_token_array(keys, key, types, tokens.count)
    if model in _BPE_MODELS:
        merges = keys.array("tokenizer.ggml.merges")
        if merges is None or merges.type != T_STRING:
            keys.fail("tokenizer.ggml.merges", f"is missing or not an array of strings; "
                                               f"a {model} tokenizer needs it")
    texts = keys.info.read_array("tokenizer.ggml.tokens")
    _check_unique_tokens(keys, texts)
    _check_phi3_name_rule(keys, texts)
    if model == "llama":
        _check_byte_fallback(keys, texts)


def _check_phi3_name_rule(keys: _Keys, tokens: list[str]) -> None:
    # See families.PHI3_RULE_TOKENS: a Phi-3-named model whose vocab lacks one of them dies.
    from .families import PHI3_RULE_TOKENS, named_like_phi3

    name = str(keys.info.metadata.get("general.name") or "")
    if named_like_phi3(name):
        missing = [t for t in PHI3_RULE_TOKENS if t not in set(tokens)]
        if missing:
            keys.fail("tokenizer.ggml.tokens", f"lacks {missing[0]}, which llama.cpp requires of a model "
                                               f"named like Phi-3 (general.name {show(name)})")


def _check_byte_fallback(keys: _Keys, tokens: list[str]) -> None:
    # A SentencePiece vocab falls back to the byte tokens <0x00>..<0xFF> for text it has no piece
    # for; llama.cpp looks them up with unordered_map::at, so a missing one kills the process
    # (std::out_of_range) on the first unusual character.
    present = set(tokens)
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in present]
    if missing:
        keys.fail("tokenizer.ggml.tokens", f"lacks {len(missing)} of the 256 byte-fallback tokens "
                                           f"(e.g. {missing[0]}); llama.cpp would crash on text outside the vocabulary")


def _check_token_array(keys: _Keys, key: str, types: tuple[int, ...], n_tokens: int) -> None:
    if not keys.has(key):
        return
    array = keys.array(key)
    if array is None or array.type not in types:
        keys.fail(key, "must be an array of " + " or ".join(VALUE_TYPE_NAMES[t] for t in types))
    if array.count < n_tokens:
        keys.fail(key, f"has {array.count} entries for {n_tokens} tokens")


def _check_unique_tokens(keys: _Keys, tokens: list[str]) -> None:
    # llama.cpp asserts that no two ids share a text and aborts otherwise. It sees each token
    # as a C string (cut at the first NUL) and renames empty ones to "[EMPTY_<id>]".
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        text = token.partition("\0")[0] or f"[EMPTY_{i}]"
        first = seen.setdefault(text, i)
        if first != i:
            keys.fail("tokenizer.ggml.tokens", f"has the token {show(text)} twice "
                                               f"(ids {first} and {i}); llama.cpp would abort")
