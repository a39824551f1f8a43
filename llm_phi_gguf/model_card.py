"""The README.md model card `llm phi publish` writes: pure text from facts, no I/O.

Our part of the card sits between START and END; a card already in the repo keeps everything
else (the user's own sections, extra front-matter keys), so re-publishing never loses what the
user wrote. The quality columns come from the `.quality.json` reports `llm phi quantize` writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import PhiError

START = "<!-- llm-phi-gguf:start -->"
END = "<!-- llm-phi-gguf:end -->"
EXAMPLE_SYSTEM = "You are a helpful assistant."
EXAMPLE_PROMPT = "Can you introduce .NET?"

# (header, key in a quality row, format) of the quality columns, in order; a file without a
# report shows "n/a" there.
QUALITY_COLUMNS = (
    ("PPL", "ppl", "{:.4f}"),
    ("KL mean", "kld_mean", "{:.6f}"),
    ("KL p99", "kld_p99", "{:.6f}"),
    ("Top-1", "top1", "{:.2%}"),
)


@dataclass
class FileRow:
    """One model of the card: a GGUF (all parts of a split one) and its measured quality."""

    name: str  # the file, or the first part of a split GGUF
    parts: list[str]
    qtype: str
    size: int  # bytes, all parts
    bpw: float
    alias: str  # what `llm phi download` registers it as
    quality: dict | None = None  # a QualityRow as a dict (ppl, kld_mean, kld_p99, top1)
    source: dict | None = None  # the report's source row
    eval_tokens: int | None = None
    modelfile_from: bool = False  # the Modelfile's FROM names this file


@dataclass
class Facts:
    repo_id: str
    family_key: str
    family_title: str
    base_model: str
    rows: list[FileRow]
    chat_example: str
    template_in_gguf: bool  # False: the GGUFs carry no chat template; the family's renders the example
    stops: tuple[str, ...]
    tool_version: str
    llama_cpp_version: str
    converter: str
    license: str | None = None
    pipeline_tag: str | None = None
    quantized_by: str | None = None
    imatrix: list[str] = field(default_factory=list)  # one line per importance matrix used
    modelfile: str | None = None  # its name in the repo


def size_text(n: int) -> str:
    """Sizes as the hub shows them (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def metadata(f: Facts) -> dict:
    """Our front-matter keys (the hub's model card metadata)."""
    meta = {
        "base_model": f.base_model,
        "base_model_relation": "quantized",
        "tags": ["gguf", "llama.cpp", "phi", f.family_key, "llm-phi-gguf"],
        "license": f.license,
        "pipeline_tag": f.pipeline_tag,
        "quantized_by": f.quantized_by,
    }
    return {k: v for k, v in meta.items() if v}


def fence(text: str, info: str = "") -> str:
    """`text` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{ticks}"


def quality_cells(q: dict | None) -> list[str]:
    if not q:
        return ["n/a"] * len(QUALITY_COLUMNS)
    return [fmt.format(q[key]) for _, key, fmt in QUALITY_COLUMNS]


def files_table(f: Facts) -> str:
    headers = ["File", "Type", "Size", "Bits per weight", *(h for h, _, _ in QUALITY_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(headers) - 2)) + "|"]
    for r in f.rows:
        name = f"[{r.name}](./{r.name})" + (f" (+{len(r.parts) - 1} parts)" if len(r.parts) > 1 else "")
        bpw = "n/a" if r.bpw != r.bpw else f"{r.bpw:.2f}"  # NaN: a file of the repo without a report
        cells = [name, r.qtype, size_text(r.size), bpw, *quality_cells(r.quality)]
        lines.append("| " + " | ".join(cells) + " |")
    sources = {(s["label"].removeprefix("source "), s["ppl"]) for r in f.rows if (s := r.source)}
    for label, ppl in sorted(sources):
        lines.append(f"\nThe unquantized source, {label}, has a perplexity of {ppl:.4f} on the same text.")
    return "\n".join(lines)


def quality_note(f: Facts) -> str:
    measured = [r for r in f.rows if r.quality]
    if not measured:
        return ("No quality report was found for these files (`llm phi quantize` writes one next to "
                "each output).")
    tokens = sorted({r.eval_tokens for r in measured if r.eval_tokens})
    on = f" on {', '.join(map(str, tokens))} tokens of text" if tokens else ""
    return (f"Quality is measured against the unquantized source{on} with llama.cpp, as "
            "`llama-perplexity --kl-divergence` does: PPL is the perplexity (lower is better), KL mean and "
            "KL p99 the mean and 99th percentile of the KL divergence KL(source || quantized) per token "
            "(0 is identical), Top-1 how often the most likely next token is the source's. Each file's "
            "`.quality.json` holds the full report.")


def how_made(f: Facts) -> str:
    lines = [
        f"- Tool: llm-phi-gguf {f.tool_version} (`llm phi quantize`, `llm phi publish`)",
        f"- Converter: {f.converter}",
        f"- Quantizer: llama.cpp's `llama_model_quantize`, through llama-cpp-python {f.llama_cpp_version}",
    ]
    if f.imatrix:
        lines += [f"- Importance matrix: {line}" for line in f.imatrix]
    else:
        lines.append("- Importance matrix: none")
    return "\n".join(lines)


def run_section(f: Facts) -> str:
    first = next((r for r in f.rows if r.modelfile_from), None)
    blocks = []
    for r in f.rows:
        ollama = [f"hf download {f.repo_id} {' '.join(r.parts)} {f.modelfile} --local-dir {r.alias}"]
        if first is not None and r is not first:
            ollama.append(f"# in {r.alias}/{f.modelfile}, change the FROM line to: FROM ./{r.name}")
        ollama.append(f"ollama create {r.alias} -f {r.alias}/{f.modelfile} && ollama run {r.alias}")
        lines = [
            "# llm (pip install llm && llm install llm-phi-gguf)",
            f"llm phi download {f.repo_id} --file {r.name}",
            f'llm -m {r.alias} "{EXAMPLE_PROMPT}"',
            *(["# Ollama, with the model's own chat template and stop strings", *ollama] if f.modelfile else []),
            *(["# llama.cpp (--jinja uses the chat template stored in the GGUF)"] if f.template_in_gguf else
              ["# llama.cpp (this GGUF has no chat template: add --chat-template-file with the model's Jinja template)"]),
            f"llama-cli --hf-repo {f.repo_id} --hf-file {r.name} --jinja -cnv",
        ]
        blocks.append(f"**{r.name}**\n\n" + fence("\n".join(lines), "sh"))
    return "\n\n".join(blocks)


def section(f: Facts) -> str:
    """Our part of the card, markers included."""
    stops = ", ".join(f"`{s}`" for s in f.stops)
    parts = [
        START,
        f"# {f.repo_id.split('/')[-1]}",
        f"GGUF files of [{f.base_model}](https://huggingface.co/{f.base_model}), quantized with llama.cpp by "
        f"llm-phi-gguf, which runs them as the Phi family `{f.family_key}`"
        + ("." if f.family_title == f.base_model else f" ({f.family_title})."),
        "## Files",
        files_table(f),
        quality_note(f),
        "## How these files were made",
        how_made(f),
        "## Chat format",
        "The prompt format is the model's own Hugging Face chat template ("
        + ("stored in each GGUF as `tokenizer.chat_template`" if f.template_in_gguf else
           f"these GGUFs carry none; llm-phi-gguf uses the template of {f.family_title}")
        + "). A system message and one user turn render as:",
        fence(f.chat_example, "text"),
        f"Generation stops at {stops}.",
        "## Run",
        run_section(f),
        END,
    ]
    return "\n\n".join(parts) + "\n"


def merged_body(existing_body: str, ours: str, where: str) -> str:
    """Our section in place of the old one, or first when the card has none; the rest as it was."""
    start, end = existing_body.find(START), existing_body.find(END)
    if start < 0 and end < 0:
        rest = existing_body.strip("\n")
        return ours + ("\n" + rest + "\n" if rest else "")
    if start < 0 or end < start:
        raise PhiError(f"The model card in {where} has a broken {START} ... {END} pair",
                       hint="fix README.md in the repo so both markers are there, in order, or remove them")
    return existing_body[:start] + ours.rstrip("\n") + existing_body[end + len(END):]


def render(f: Facts, existing: str | None = None) -> str:
    """The whole README.md: front matter (the old card's keys, ours on top), then the body."""
    from huggingface_hub import ModelCard, ModelCardData

    data, body = {}, ""
    if existing:
        try:  # huggingface_hub's own parser: what the hub will read
            card = ModelCard(existing, ignore_metadata_errors=True)
        except Exception:  # yaml's errors, or "metadata block should be a dict"
            raise PhiError(f"The model card in {f.repo_id} has front matter that is not a YAML mapping",
                           hint="fix README.md's metadata block in the repo, or delete README.md there") from None
        data, body = card.data.to_dict(), card.text
    data.update(metadata(f))
    yaml_text = ModelCardData(**data).to_yaml()
    return f"---\n{yaml_text}\n---\n\n" + merged_body(body.lstrip("\n"), section(f), f.repo_id)
