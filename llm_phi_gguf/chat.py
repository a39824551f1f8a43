"""The chat format of one registered model: which template renders it, with which special
tokens, whether llama.cpp must add a BOS, and where generation stops.

The template is, in order: the user's template file (`llm phi register --template`), the
GGUF's own `tokenizer.chat_template`, the family's canonical Hugging Face template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import families, templates, tools
from .errors import TemplateError

TOKENS = "tokenizer.ggml.tokens"

# llama.cpp's defaults when a GGUF has no tokenizer.ggml.add_bos_token key (src/llama-vocab.cpp).
_DEFAULT_ADD_BOS = {"llama": True, "gpt2": False}


@dataclass(frozen=True)
class ChatFormat:
    template: str
    template_source: str  # "file:/path", "gguf", or "family:phi-3.5"
    bos_token: str
    eos_token: str
    add_bos: bool
    stops: tuple[str, ...]  # stop strings (never printed)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return templates.render(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def needs_bos(self, text: str) -> bool:
        """Add a BOS token only if the GGUF asks for one and the template did not write it."""
        return self.add_bos and not (self.bos_token and text.startswith(self.bos_token))


def phi3_tokenizer_overrides(metadata: dict, family: families.Family) -> tuple[tuple[str, object], ...]:
    """kv_overrides that make llama.cpp tokenize a Phi-3-family prompt as transformers does.

    GGUFs named "Phi 3.5 Mini Instruct" (llama.cpp's own converter writes such names) miss
    llama.cpp's name test, so the newline after every special token becomes extra tokens
    the model never saw in training. We add the marker to the name llama.cpp sees.
    """
    name = str(metadata.get("general.name") or "")
    if family.tokenizer != "spm" or families.named_like_phi3(name):
        return ()
    tokens = metadata.get(TOKENS)
    if not _is_token_list(tokens) or not all(t in tokens for t in families.PHI3_RULE_TOKENS):
        return ()
    return (("general.name", f"phi-3 {name}"[:120]),)


def read_template_file(path: str | Path) -> str:
    try:
        source = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"Cannot read chat template {path}: {getattr(e, 'strerror', None) or e}") from None
    templates.compile_template(source)  # invalid Jinja fails here, with its line number
    return source


def _is_token_list(tokens) -> bool:
    """A decoded list, or gguf_reader's lazily read StringArray."""
    return isinstance(tokens, Sequence) and not isinstance(tokens, (str, bytes))


def _token_text(metadata: dict, key: str) -> str:
    token_id = metadata.get(key)
    tokens = metadata.get(TOKENS)
    if isinstance(token_id, int) and _is_token_list(tokens) and 0 <= token_id < len(tokens):
        return tokens[token_id]
    return ""


def chat_format(metadata: dict, family: families.Family, template_file: str | None = None) -> ChatFormat:
    """Build the chat format from GGUF metadata (with tokenizer.ggml.tokens read)."""
    if template_file:
        template, source = read_template_file(template_file), f"file:{template_file}"
    elif metadata.get("tokenizer.chat_template"):
        template, source = metadata["tokenizer.chat_template"], "gguf"
    else:
        template, source = families.read_template(family), f"family:{family.key}"
    vocab = metadata.get("tokenizer.ggml.model")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", _DEFAULT_ADD_BOS.get(vocab, False))
    return ChatFormat(
        template=template,
        template_source=source,
        bos_token=_token_text(metadata, "tokenizer.ggml.bos_token_id"),
        eos_token=_token_text(metadata, "tokenizer.ggml.eos_token_id"),
        add_bos=bool(add_bos),
        stops=family.stops,
    )


@lru_cache(maxsize=8)
def _metadata(path: str, mtime_ns: int) -> dict:
    from .gguf_reader import read_gguf

    info = read_gguf(path, index_arrays={TOKENS})
    metadata = dict(info.metadata)
    if TOKENS in info.string_offsets:  # read a token when asked: the chat format needs two
        metadata[TOKENS] = info.strings(TOKENS)
    return metadata


def gguf_metadata(path: str | Path) -> dict:
    """GGUF metadata with the token list (a lazily read sequence), cached per file version."""
    p = Path(path)
    return _metadata(str(p), p.stat().st_mtime_ns)


def messages_from_llm(prompt, family: families.Family | None = None) -> list[dict]:
    """llm's Message objects (the whole chain for this turn) as the dicts the HF template reads.

    With tools and a family tool format: the tool definitions go on the system message as the
    `tools` string (an empty system message carries them when there is none), earlier calls are
    written back into the assistant content as the model wrote them, tool results become
    messages of the format's result role. Earlier thinking (ReasoningPart) is left out.
    """
    fmt = family.tool_format if family else None
    out = []
    for message in prompt.messages:
        if message.role == "tool" and fmt:
            out += [{"role": fmt.result_role, "content": part.output} for part in message.parts if _is_result(part)]
            continue
        if message.role not in ("system", "user", "assistant"):
            raise TemplateError(f"Phi chat templates have no {message.role!r} turns (tools are not supported)")
        out.append({"role": message.role, "content": _content(message, fmt)})
    tools_given = getattr(prompt, "tools", None)
    if tools_given and fmt:
        if not out or out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": ""})
        out[0]["tools"] = tools.definitions_json(tools_given)
    return out


def _is_result(part) -> bool:
    from llm.parts import ToolResultPart

    return isinstance(part, ToolResultPart)


def _content(message, fmt) -> str:
    """Text parts in order, each run of tool calls (in the model's own syntax) where it came."""
    from llm.parts import ReasoningPart, TextPart, ToolCallPart

    pieces, calls = [], []
    for part in message.parts:
        if isinstance(part, ToolCallPart) and fmt:
            written = tools.written_call(fmt, part.name, part.arguments)
            if written is None:
                calls.append((part.name, part.arguments))
                continue
            part = TextPart(written)
        if calls:
            pieces.append(tools.call_text(fmt, calls))
            calls = []
        if not isinstance(part, ReasoningPart):
            pieces.append(getattr(part, "text", "") or "")
    if calls:
        pieces.append(tools.call_text(fmt, calls))
    return "".join(pieces)
