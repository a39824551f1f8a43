"""Tokenizer extraction for GGUF: SentencePiece (Phi-3 family) and GPT-2 byte-level BPE (phi-2, Phi-4).

No transformers or sentencepiece at runtime: `tokenizer.model` is parsed as protobuf by hand (only
the pieces are needed) and `tokenizer.json` is read as JSON. Special token ids, add_bos/add_eos,
merges and the chat template come from `gguf.SpecialVocab`, which reads the same JSON files.

Which tokenizer (same decision as llama.cpp's converter):

| architecture | rule | tokenizer.ggml.model |
|---|---|---|
| phi2 | always tokenizer.json BPE | gpt2 |
| phi3 / phimoe | tokenizer_config `tokenizer_class == "GPT2Tokenizer"` -> tokenizer.json BPE | gpt2 |
| phi3 / phimoe | otherwise tokenizer.model (SentencePiece) is required | llama |
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConversionError

# gguf.TokenType values (kept literal so this module imports without gguf).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# SentencePiece ModelProto.SentencePiece.Type -> GGUF token type, as llama.cpp's converter maps it:
# it asks IsUnknown / IsControl / IsUnused / IsByte and calls everything else NORMAL
# (so an SP USER_DEFINED piece is written NORMAL too).
SP_TYPES = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: NORMAL, 5: UNUSED, 6: BYTE}

# llama.cpp picks the BPE pre-tokenizer by hashing the ids of a test string, which needs the HF
# tokenizer running. We decide from tokenizer.json's pre_tokenizer instead:
#
# | pre_tokenizer in tokenizer.json | tokenizer.ggml.pre | models |
# |---|---|---|
# | ByteLevel(use_regex=true), the GPT-2 regex | "phi-2" (phi2 arch) / "gpt-2" | phi-1, phi-1.5, phi-2 |
# | Split(CL100K_REGEX) + ByteLevel(use_regex=false) | "dbrx" | Phi-4, Phi-4-reasoning |
# | Split(O200K_REGEX) + ByteLevel(use_regex=false) | "gpt-4o" | Phi-4-mini(-reasoning) |
# | anything else | error: unknown tokenizer | |
CL100K_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
O200K_REGEX = (
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
SPLIT_PRE = {CL100K_REGEX: "dbrx", O200K_REGEX: "gpt-4o"}
BYTELEVEL_PRE = {"phi2": "phi-2"}  # arch -> name for the plain GPT-2 regex; default "gpt-2"


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    special: Any = field(default=None, repr=False)  # gguf.SpecialVocab

    def add_to(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        self.special.add_to_gguf(writer, quiet=True)


def load_vocab(folder: Path, arch: str, vocab_size: int | None) -> Vocab:
    """Read the checkpoint's tokenizer; `vocab_size` is the embedding's row count (pad up to it)."""
    folder = Path(folder)
    tok_config = _json(folder / "tokenizer_config.json") or {}
    if arch != "phi2" and tok_config.get("tokenizer_class") != "GPT2Tokenizer":
        if not (folder / "tokenizer.model").is_file():
            raise ConversionError(f"Unknown tokenizer in {folder}: no tokenizer.model and tokenizer_class is not GPT2Tokenizer")
        return sentencepiece_vocab(folder, vocab_size, tok_config)
    return bpe_vocab(folder, arch, vocab_size)


# ---- SentencePiece ---------------------------------------------------------------------------


def sentencepiece_vocab(folder: Path, vocab_size: int | None, tok_config: dict) -> Vocab:
    pieces = read_sentencepiece_model(folder / "tokenizer.model")
    n = vocab_size or len(pieces)
    if len(pieces) > n:
        raise ConversionError(f"Tokenizer has {len(pieces)} tokens but the model's vocab_size is {n}")
    # Padding names must be unique: llama.cpp aborts on duplicate token strings.
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i, (piece, score, typ) in enumerate(pieces):
        tokens[i], scores[i], types[i] = piece, score, SP_TYPES.get(typ, NORMAL)
    # Added tokens, later sources win: added_tokens.json, tokenizer_config, tokenizer.json.
    for text, i in (_json(folder / "added_tokens.json") or {}).items():
        if i < n:
            tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    added = [{"id": int(k), **v} for k, v in tok_config.get("added_tokens_decoder", {}).items()]
    added += (_json(folder / "tokenizer.json") or {}).get("added_tokens", [])
    for tok in added:
        i = int(tok["id"])
        if i >= n:
            raise ConversionError(f"Added token {tok['content']!r} has id {i}, beyond the model's vocab_size {n}")
        tokens[i], scores[i] = tok["content"], -1000.0
        types[i] = CONTROL if tok.get("special") else USER_DEFINED
    special = _special_vocab(folder, n_vocab=n)
    _plain_template_adds_nothing(special, _json(folder / "tokenizer.json"))
    return Vocab("llama", "default", tokens, types, scores, special)


def _plain_template_adds_nothing(special, tj: dict | None) -> None:
    """A TemplateProcessing of just the sequence (what transformers 5 saves for add_bos_token=False)
    means no BOS/EOS. gguf.SpecialVocab leaves the flags unset then, and llama.cpp's SPM default
    (add_bos=true) would add a BOS that Hugging Face does not: write the flags explicitly."""
    pp = (tj or {}).get("post_processor") or {}
    if pp.get("type") == "TemplateProcessing" and all("Sequence" in part for part in pp.get("single", [])):
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)


def read_sentencepiece_model(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) for each piece of a SentencePiece ModelProto (field 1, repeated)."""
    data = Path(path).read_bytes()
    pieces = []
    try:
        for field_no, value in _proto_fields(data):
            if field_no == 1:
                piece, score, typ = "", 0.0, 1
                for f, v in _proto_fields(value):
                    if f == 1:
                        piece = v.decode("utf-8")
                    elif f == 2:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3:
                        typ = v
                pieces.append((piece, score, typ))
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        raise ConversionError(f"{path} is not a valid SentencePiece model") from None
    if not pieces:
        raise ConversionError(f"{path} is not a valid SentencePiece model (no pieces)")
    return pieces


def _proto_fields(buf: bytes):
    """Yield (field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated")
        yield key >> 3, value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


# ---- GPT-2 byte-level BPE --------------------------------------------------------------------


def bpe_vocab(folder: Path, arch: str, vocab_size: int | None) -> Vocab:
    tj = _json(folder / "tokenizer.json")
    if tj is None or (tj.get("model") or {}).get("type") != "BPE":
        raise ConversionError(f"Unknown tokenizer in {folder}: expected a BPE tokenizer.json")
    pre = bpe_pre_tokenizer(tj, arch)
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    n = vocab_size or (max(by_id) + 1)
    if max(by_id) >= n:
        raise ConversionError(f"Tokenizer has token id {max(by_id)} but the model's vocab_size is {n}")
    tokens, types = [], []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            control = added[i].get("special") or looks_special(text)
            tokens.append(text if control else text.replace("\u2581", " "))
            types.append(CONTROL if control else USER_DEFINED)
        else:
            tokens.append(text)
            types.append(NORMAL)
    special = _special_vocab(folder, load_merges=True)
    if not special.merges:
        raise ConversionError(f"Unknown tokenizer in {folder}: BPE tokenizer.json has no merges")
    return Vocab("gpt2", pre, tokens, types, None, special)


def bpe_pre_tokenizer(tj: dict, arch: str) -> str:
    """Name llama.cpp's pre-tokenizer from tokenizer.json's pre_tokenizer (see the table above)."""
    pt = tj.get("pre_tokenizer") or {}
    steps = pt.get("pretokenizers", []) if pt.get("type") == "Sequence" else [pt]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return BYTELEVEL_PRE.get(arch, "gpt-2")
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_PRE:
            return SPLIT_PRE[regex]
    raise ConversionError(f"Unknown tokenizer: BPE pre-tokenizer {kinds} is not one that Phi models use")


def looks_special(text: str) -> bool:
    """Added tokens that llama.cpp's converter types CONTROL even when not marked special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _special_vocab(folder: Path, **kwargs):
    """gguf.SpecialVocab, whose ValueError on a bad id in config.json (e.g. bos_token_id -1) becomes ours."""
    import gguf

    try:
        return gguf.SpecialVocab(folder, **kwargs)
    except ValueError as e:
        raise ConversionError(f"Special tokens in {folder.name}: {e}") from None


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path.name} is not valid JSON: {e}") from None
