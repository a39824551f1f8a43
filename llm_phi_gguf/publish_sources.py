"""The local side of `llm phi publish`: the GGUF files given (every part of a split one), their
quality reports, importance matrices, and the facts the model card states about them.

Everything here reads local files only; publish.py talks to the hub.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import GGUFError, PhiError, RegistryError

MODELFILE = "Modelfile"
REPORT_SUFFIX = ".quality.json"
REPORT_KEYS = ("ppl", "kld_mean", "kld_p99", "top1")
CACHE_REPO = re.compile(r"models--(?P<owner>[\w.-]+?)--(?P<name>[\w.-]+)(?:/|$)")
HF_REPO_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[\w.-]+/[\w.-]+?)/?$")


@dataclass
class LocalModel:
    """One MODEL_OR_FILE: a GGUF (every part of a split one) with what we know about it."""

    parts: list[Path]
    family: str
    qtype: str
    metadata: dict
    bpw: float
    report: dict | None = None
    report_path: Path | None = None



# ----------------------------------------------------------------------------- local files


def find_file(arg: str):
    """(absolute GGUF path, registry entry or None) for a path or a registered alias."""
    from . import store

    candidate = Path(arg).expanduser()
    if candidate.is_file():
        path = candidate.absolute()
        return path, next((e for e in store.load().values() if Path(e.path).absolute() == path), None)
    if candidate.exists() or arg.endswith(".gguf") or os.sep in arg:
        raise GGUFError(f"{arg} does not exist" if not candidate.exists() else f"{arg} is not a file",
                        hint="give a GGUF file, or an alias from `llm phi models`")
    try:
        entry = store.get(arg)
    except RegistryError:
        raise PhiError(f"{arg} is neither a GGUF file nor a registered model",
                       hint="give a path to a .gguf file, or an alias from `llm phi models`") from None
    path = Path(entry.path).expanduser().absolute()
    if not path.is_file():
        raise GGUFError(f"{arg} is registered for {path}, which is missing",
                        hint="give the file's new path, or register it again")
    return path, entry


def split_parts(path: Path) -> list[Path]:
    """Every part of a split GGUF (in order) when `path` is one of them, else [path]."""
    from .hub import SPLIT

    m = SPLIT.match(path.name)
    if not m:
        return [path]
    parts = [path.with_name(f"{m['base']}-{i:05d}-of-{m['count']}.gguf") for i in range(1, int(m["count"]) + 1)]
    if missing := [p.name for p in parts if not p.is_file()]:
        raise GGUFError(f"{path.name} is part of a split GGUF, and {', '.join(missing)} is missing from {path.parent}",
                        hint="put every part in one folder before publishing")
    return parts


def read_report(path: Path) -> dict | None:
    """A `.quality.json` from `llm phi quantize`, checked; None when there is none."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text("utf-8"))
        rows = report["rows"]
        assert all(isinstance(rows[0][k], (int, float)) for k in (*REPORT_KEYS, "bpw"))
    except (OSError, ValueError, KeyError, IndexError, TypeError, AssertionError):
        raise PhiError(f"{path} is not a quality report from `llm phi quantize`",
                       hint="run the quantization again to rewrite it, or move it away") from None
    return report


def bits_per_weight(parts: list[Path]) -> float:
    from .gguf_info import read_gguf

    infos = [read_gguf(p) for p in parts]
    return 8.0 * sum(t.nbytes for i in infos for t in i.tensors) / max(sum(i.n_params for i in infos), 1)


def load_model(arg: str) -> LocalModel:
    from .families import detect_family
    from .gguf_info import validate_gguf

    path, entry = find_file(arg)
    parts = split_parts(path)
    info = validate_gguf(parts[0])
    family = entry.family if entry else getattr(detect_family(info.metadata), "key", None)
    if family is None:
        raise PhiError(f"Cannot tell which Phi family {path.name} is",
                       hint=f"register it with its family first: llm phi register {path} --family FAMILY")
    report_path = Path(str(parts[0]) + REPORT_SUFFIX)
    report = read_report(report_path)
    bpw = report["rows"][0]["bpw"] if report else bits_per_weight(parts)
    return LocalModel(parts, family, info.file_type_name or "unknown", info.metadata, bpw, report,
                      report_path if report else None)


def load_models(args: list[str]) -> list[LocalModel]:
    models, seen = [], set()
    for arg in args:
        model = load_model(arg)
        if model.parts[0] not in seen:
            seen.add(model.parts[0])
            models.append(model)
    if not models:
        raise PhiError("Give at least one GGUF file or registered model to publish")
    families = sorted({m.family for m in models})
    if len(families) > 1:
        raise PhiError(f"These files are of different Phi families ({', '.join(families)}); a repo holds one model",
                       hint="publish each family to its own --repo")
    return models


def imatrix_line(path: Path) -> str:
    from .imatrix import read_imatrix

    im = read_imatrix(path)
    return (f"`{path.name}`: {im.chunk_count} chunks of {im.chunk_size} tokens from "
            f"{', '.join(im.datasets) or 'an unnamed text'}")


def recorded_imatrix(models: list[LocalModel]) -> list[str]:
    """What llama-quantize records in a GGUF it quantized with an importance matrix."""
    lines = set()
    for m in models:
        name = m.metadata.get("quantize.imatrix.file")
        if isinstance(name, str):
            dataset = m.metadata.get("quantize.imatrix.dataset")
            chunks = m.metadata.get("quantize.imatrix.chunks_count")
            lines.add(f"`{Path(name).name}`" + (f" from {dataset}" if dataset else "")
                      + (f", {chunks} chunks" if chunks else "") + f" (recorded in {m.parts[0].name})")
    return sorted(lines)


# ----------------------------------------------------------------------------- the card's facts


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def base_model(models: list[LocalModel], family) -> str:
    """The source repo: the GGUF's own record, else the HF cache folder it was converted from, else
    the family's official repo."""
    for m in models:
        for key in ("general.base_model.0.repo_url", "general.source.repo_url"):
            if isinstance(url := m.metadata.get(key), str) and (found := HF_REPO_URL.match(url)):
                return found["repo"]
        source = str(((m.report or {}).get("rows") or [{}, {}])[-1].get("path", ""))
        if found := CACHE_REPO.search(source):
            return f"{found['owner']}/{found['name']}"
    return family.title


def converter(models: list[LocalModel]) -> str:
    sources = {str(m.report["rows"][-1].get("path", "")) for m in models if m.report}
    if not sources:
        return "unknown (no quality report names the source)"
    if all(Path(s).suffix.lower() != ".gguf" for s in sources):
        return "llm-phi-gguf's streaming converter, from the Hugging Face safetensors checkpoint"
    return "none of ours: quantized from an existing GGUF (" + ", ".join(sorted(Path(s).name for s in sources)) + ")"


def chat_example(model: LocalModel, family) -> str:
    """The example conversation rendered by the template the GGUF carries (or the family's)."""
    from . import chat
    from .model_card import EXAMPLE_PROMPT, EXAMPLE_SYSTEM

    fmt = chat.chat_format(chat.gguf_metadata(model.parts[0]), family)
    system = [{"role": "system", "content": EXAMPLE_SYSTEM}] if family.supports_system else []
    return fmt.render(system + [{"role": "user", "content": EXAMPLE_PROMPT}], add_generation_prompt=True)


def modelfile_text(model: LocalModel) -> str:
    """The family's Ollama Modelfile, FROM the GGUF beside it in the repo."""
    from .ollama_modelfile import build_export, format_modelfile

    export = build_export(str(model.parts[0]))
    return (f"# Ollama Modelfile for {model.parts[0].name} (family {model.family}), written by llm-phi-gguf.\n"
            f"# Download it next to the GGUF, then: ollama create NAME -f {MODELFILE}\n"
            + format_modelfile(export.modelfile(from_=f"./{model.parts[0].name}")))


def file_row(m: LocalModel, first: bool):
    from .model_card import FileRow
    from .store import default_alias

    rows = (m.report or {}).get("rows") or [None, None]
    return FileRow(
        name=m.parts[0].name, parts=[p.name for p in m.parts], qtype=m.qtype,
        size=sum(p.stat().st_size for p in m.parts), bpw=m.bpw, alias=default_alias(m.family, m.qtype),
        quality=rows[0], source=rows[-1] if m.report else None,
        eval_tokens=(m.report or {}).get("n_tokens"), modelfile_from=first,
    )


def facts(repo_id: str, models: list[LocalModel], imatrix: list[str], source: dict, base: str, others=()):
    """The card's facts; `others` are FileRows of GGUFs the repo already holds and this run leaves
    as they are, so the card keeps listing them. Rows go smallest first."""
    from .families import get_family
    from .model_card import Facts

    family = get_family(models[0].family)
    license_ = source.get("license") or models[0].metadata.get("general.license")
    return Facts(
        repo_id=repo_id, family_key=family.key, family_title=family.title, base_model=base,
        rows=sorted([file_row(m, i == 0) for i, m in enumerate(models)] + list(others), key=lambda r: (r.size, r.name)),
        chat_example=chat_example(models[0], family), stops=family.stops,
        template_in_gguf=isinstance(models[0].metadata.get("tokenizer.chat_template"), str),
        tool_version=package_version("llm-phi-gguf"), llama_cpp_version=package_version("llama-cpp-python"),
        converter=converter(models), license=license_ if isinstance(license_, str) else None,
        pipeline_tag=source.get("pipeline_tag"), quantized_by=repo_id.split("/")[0],
        imatrix=imatrix, modelfile=MODELFILE,
    )
