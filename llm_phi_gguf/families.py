"""The table of Phi families: every fact the other stages need about each one, in one place.

Adding a family means adding one row to FAMILIES. Facts come from the models' Hugging Face
repositories and llama.cpp (the vendored tests/fixtures/reference/chat-templates/families.json records them;
llama.cpp's gguf-py constants name the keys). Nothing here does I/O except `read_template`, which reads package data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

# Texts that end a turn in every Phi format. llama.cpp already treats the *tokens* <|end|>,
# <|endoftext|> and <|im_end|> as end-of-generation; the strings are a second guard for
# GGUFs whose vocab marks them as normal text.
_PHI3_STOPS = ("<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>")
_PHI4_STOPS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")


@dataclass(frozen=True)
class Detect:
    """How to recognise a family from GGUF metadata.

    Every key of `require` must match the GGUF's facts (see `gguf_facts`); when `evidence` is
    non-empty, at least one of its strings must appear in the model name or chat template
    (compared case-insensitively).
    Rows are tried in table order, so more specific rows come first.
    """

    require: dict = field(default_factory=dict)
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolFormat:
    """How a family's prompt carries tools and how its model calls them (see TOOL_FORMATS)."""

    key: str
    call_open: str  # the model writes calls as call_open + JSON list + call_close
    call_close: str
    result_role: str  # role of a tool-result message; the HF template renders it as <|role|>output<|end|>
    source: str  # where each choice comes from


@dataclass(frozen=True)
class Reasoning:
    """A family that thinks in open_tag ... close_tag before answering."""

    open_tag: str = "<think>"
    close_tag: str = "</think>"
    source: str = ""


# Tool formats, one row each. Definitions always go where the HF template puts them: a JSON
# string in a "tools" key on the system message, rendered <|tool|>[...]<|/tool|>.
TOOL_FORMATS: dict[str, ToolFormat] = {
    "phi-4-mini": ToolFormat(
        "phi-4-mini", "<|tool_call|>", "<|/tool_call|>", "tool_response",
        source=(
            "definitions: HF template (tools string on the system message); calls: the vocab's "
            "<|tool_call|>/<|/tool_call|> tokens around a JSON list of {name, arguments}, written back "
            "as assistant content; results: the HF template covers any role as <|role|>content<|end|>, "
            "we use the vocab's <|tool_response|> role (model card / llama.cpp PR 12288) rather than a "
            "second <|tool|>, which the template already uses for definitions"
        ),
    ),
}

# Earlier turns are given back without their thinking: llm keeps it apart (ReasoningPart) and
# these HF templates render an assistant message's content as given, with no thinking field.
THINK = Reasoning(source="<think>...</think> in the model's output, as the Phi-4-reasoning system prompt asks")


@dataclass(frozen=True)
class Family:
    key: str  # short name, used in aliases: phi-3.5 -> phi-3.5-q4
    title: str  # the Hugging Face model it stands for
    hf_architectures: tuple[str, ...]
    gguf_arch: str  # general.architecture of its GGUF
    tokenizer: str  # "spm" (SentencePiece, tokenizer.ggml.model=llama) or "bpe" (gpt2)
    template: str  # file in llm_phi_gguf/chat_templates/
    stops: tuple[str, ...]  # stop strings, never printed
    trained_ctx: int  # context length the model was trained for
    detect: Detect
    supports_system: bool = True
    note: str = ""
    tool_format: ToolFormat | None = None  # None: llm refuses tools for this family
    reasoning: Reasoning | None = None  # None: all output is answer text

    @property
    def modelfile(self) -> str:
        """Name of this family's Ollama Modelfile in modelfiles/."""
        return f"{self.key}.Modelfile"


_PHI3 = ("Phi3ForCausalLM",)
_PHI3_SPM = {"arch": "phi3", "vocab": "llama"}
_PHI3_BPE = {"arch": "phi3", "vocab": "gpt2"}

FAMILIES: tuple[Family, ...] = (
    Family(
        "phi-3.5-moe", "microsoft/Phi-3.5-MoE-instruct", ("PhiMoEForCausalLM", "PhimoeForCausalLM"),
        "phimoe", "spm", "Phi-3.5-mini-instruct.jinja", _PHI3_STOPS, 131072,
        Detect({"arch": "phimoe"}),
        note="no hub template found; uses Phi-3.5-mini's, which its model card shows",
    ),
    Family(
        "phi-2", "microsoft/phi-2", ("PhiForCausalLM",), "phi2", "bpe", "phi-2.jinja",
        ("<|endoftext|>", "\nInstruct:", "\nUser:"), 2048, Detect({"arch": "phi2"}),
        note="base model without a chat template; uses its model card's Instruct:/Output: format",
    ),
    Family(
        "phi-4-mini-reasoning", "microsoft/Phi-4-mini-reasoning", _PHI3, "phi3", "bpe",
        "Phi-4-mini-reasoning.jinja", _PHI3_STOPS, 131072,
        Detect(_PHI3_BPE, ("AI math expert", "mini-reasoning", "mini reasoning")),
        tool_format=TOOL_FORMATS["phi-4-mini"], reasoning=THINK,
    ),
    Family(
        "phi-4-mini", "microsoft/Phi-4-mini-instruct", _PHI3, "phi3", "bpe",
        "Phi-4-mini-instruct.jinja", _PHI3_STOPS, 131072,
        Detect(_PHI3_BPE, ("<|assistant|>", "phi-4-mini", "phi 4 mini")),
        tool_format=TOOL_FORMATS["phi-4-mini"],
    ),
    Family(
        "phi-4-reasoning-plus", "microsoft/Phi-4-reasoning-plus", _PHI3, "phi3", "bpe",
        "Phi-4-reasoning-plus.jinja", _PHI3_STOPS + _PHI4_STOPS, 32768,
        Detect(_PHI3_BPE, ("reasoning-plus", "reasoning plus")),
        supports_system=False, reasoning=THINK,
    ),
    Family(
        "phi-4-reasoning", "microsoft/Phi-4-reasoning", _PHI3, "phi3", "bpe",
        "Phi-4-reasoning.jinja", _PHI4_STOPS, 32768,
        Detect(_PHI3_BPE, ("Thought section", "reasoning")),
        supports_system=False, reasoning=THINK,
    ),
    Family(
        "phi-4", "microsoft/phi-4", _PHI3, "phi3", "bpe", "phi-4-rev2.jinja", _PHI4_STOPS, 16384,
        Detect(_PHI3_BPE),
    ),
    Family(
        "phi-3-medium-128k", "microsoft/Phi-3-medium-128k-instruct", _PHI3, "phi3", "spm",
        "Phi-3-medium-4k-instruct.jinja", _PHI3_STOPS, 131072,
        Detect({**_PHI3_SPM, "n_embd": 5120, "n_ctx": 131072}),
        supports_system=False,
        note="no hub template found; uses the 4k medium one",
    ),
    Family(
        "phi-3-medium", "microsoft/Phi-3-medium-4k-instruct", _PHI3, "phi3", "spm",
        "Phi-3-medium-4k-instruct.jinja", _PHI3_STOPS, 4096,
        Detect({**_PHI3_SPM, "n_embd": 5120}),
        supports_system=False,
    ),
    Family(
        "phi-3.5", "microsoft/Phi-3.5-mini-instruct", _PHI3, "phi3", "spm",
        "Phi-3.5-mini-instruct.jinja", _PHI3_STOPS, 131072,
        Detect(_PHI3_SPM, ("message['role'] == 'system' and message['content']", "3.5")),
    ),
    Family(
        "phi-3-128k", "microsoft/Phi-3-mini-128k-instruct", _PHI3, "phi3", "spm",
        "Phi-3-mini-128k-instruct-rev2.jinja", _PHI3_STOPS, 131072,
        Detect({**_PHI3_SPM, "n_ctx": 131072}),
    ),
    Family(
        "phi-3", "microsoft/Phi-3-mini-4k-instruct", _PHI3, "phi3", "spm",
        "Phi-3-mini-4k-instruct-rev2.jinja", _PHI3_STOPS, 4096, Detect(_PHI3_SPM),
    ),
)

BY_KEY = {f.key: f for f in FAMILIES}

# The one list of what we convert and run: HF architectures[0] -> GGUF general.architecture.
SUPPORTED_ARCHITECTURES: dict[str, str] = {a: f.gguf_arch for f in FAMILIES for a in f.hf_architectures}
GGUF_ARCHITECTURES: tuple[str, ...] = tuple(dict.fromkeys(f.gguf_arch for f in FAMILIES))


SEE_FAMILIES = "`llm phi families` lists the Phi models this plugin runs"


@dataclass(frozen=True)
class Unsupported:
    """A Phi model that llama.cpp cannot run, refused by name with the reason (gguf-phi.md section 1)."""

    title: str
    hf_architecture: str  # its config.json architectures[0]
    reason: str
    markers: tuple[str, ...]  # lower-case fragments of its repo id or GGUF general.name


UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported("Phi-3-small", "Phi3SmallForCausalLM", "llama.cpp has no architecture for it",
                ("phi-3-small", "phi3-small")),
    Unsupported("Phi-3/3.5-vision", "Phi3VForCausalLM", "llama.cpp supports neither its text model nor its "
                "vision projector", ("phi-3-vision", "phi-3.5-vision", "phi3-vision", "phi3.5-vision")),
    Unsupported("Phi-4-multimodal", "Phi4MMForCausalLM", "llama.cpp does not support it",
                ("phi-4-multimodal", "phi4-multimodal")),
    Unsupported("Phi-4-mini-flash-reasoning", "Phi4FlashForCausalLM", "llama.cpp does not support its "
                "hybrid (SambaY) architecture", ("phi-4-mini-flash", "phi4-mini-flash")),
)

# llama.cpp gives Phi-3's special tokens Hugging Face's rstrip behaviour (whitespace after
# <|user|>, <|end|>... is absorbed, as the hub tokenizer_config says) only when general.name
# contains one of these markers (src/llama-vocab.cpp); the rule then looks these tokens up with
# unordered_map::at, so a vocab without one of them kills the process.
PHI3_NAME_MARKERS = ("phi-3", "phi3")
PHI3_RULE_TOKENS = ("<unk>", "<s>", "</s>", "<|endoftext|>")


def named_like_phi3(name: str) -> bool:
    """Whether llama.cpp applies its Phi-3 whitespace rule to a model with this general.name."""
    return any(m in name.lower() for m in PHI3_NAME_MARKERS)


# Default context we load with when neither the user nor the registry says otherwise: large
# enough for real chats, small enough that a 128k model does not allocate ~48 GiB of KV cache.
DEFAULT_N_CTX = 4096


def default_n_ctx(metadata: dict) -> int:
    """The context to load (and export to Ollama) with: DEFAULT_N_CTX, or the model's trained
    context when that is smaller."""
    trained = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    if isinstance(trained, int) and not isinstance(trained, bool) and trained > 0:
        return min(DEFAULT_N_CTX, trained)
    return DEFAULT_N_CTX


def get_family(key: str) -> Family:
    try:
        return BY_KEY[key]
    except KeyError:
        from .errors import PhiError

        raise PhiError(f"Unknown family {key!r} (known: {', '.join(BY_KEY)})") from None


def gguf_facts(metadata: dict) -> dict:
    """The few GGUF metadata values family detection looks at, under short names."""
    arch = metadata.get("general.architecture")
    return {
        "arch": arch,
        "vocab": metadata.get("tokenizer.ggml.model"),
        "pre": metadata.get("tokenizer.ggml.pre"),
        "n_embd": metadata.get(f"{arch}.embedding_length"),
        "n_ctx": metadata.get(f"{arch}.context_length"),
        "text": " ".join(
            str(metadata.get(k) or "")
            for k in ("general.name", "general.basename", "general.finetune", "tokenizer.chat_template")
        ).lower(),
    }


def detect_family(metadata: dict) -> Family | None:
    """The first family whose detection rule matches this GGUF's metadata, or None."""
    facts = gguf_facts(metadata)
    for family in FAMILIES:
        rule = family.detect
        if any(facts.get(k) != v for k, v in rule.require.items()):
            continue
        if rule.evidence and not any(e.lower() in facts["text"] for e in rule.evidence):
            continue
        return family
    return None


def unsupported_model(hf_architectures=(), name: str = "") -> Unsupported | None:
    """The refused Phi model that these config.json architectures or this repo/model name stand for."""
    name = name.lower()
    return next((u for u in UNSUPPORTED if u.hf_architecture in hf_architectures
                 or any(m in name for m in u.markers)), None)


def gguf_name(metadata: dict) -> str:
    """The names a GGUF gives its model (general.name, basename, finetune), for unsupported_model."""
    return " ".join(str(metadata.get(k) or "") for k in ("general.name", "general.basename", "general.finetune"))


def refusal(model: Unsupported, what: str) -> str:
    """The one line that refuses `what` (a folder, repo or file) as the unsupported `model`."""
    return f"{what} is {model.title} ({model.hf_architecture}), which this plugin cannot run: {model.reason}"


def check_architecture(hf_architecture: str, what: str) -> str:
    """The GGUF architecture for a config.json architectures[0]; refuse others by name, with the reason."""
    from .errors import ConversionError

    if hf_architecture in SUPPORTED_ARCHITECTURES:
        return SUPPORTED_ARCHITECTURES[hf_architecture]
    hint = SEE_FAMILIES
    if (model := unsupported_model((hf_architecture,))) is not None:
        raise ConversionError(refusal(model, what), hint=hint)
    raise ConversionError(f"{what}: architecture {hf_architecture} is not supported "
                          f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})", hint=hint)


def read_template(family: Family) -> str:
    """The family's canonical chat template (Hugging Face Jinja), byte-exact."""
    return resources.files("llm_phi_gguf.chat_templates").joinpath(family.template).read_text("utf-8")
