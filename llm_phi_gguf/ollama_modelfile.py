"""Ollama Modelfiles: parse and write them with Ollama's quoting rules, type PARAMETER values the
way Ollama decodes them, and build what we export for a model: its family's Modelfile from
modelfiles/ plus the registry's num_ctx and the user's --system and -p values.

Facts: shared/reference/ollama/API.md sections 5 and 6, cited where they matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PhiError

# API.md 5: option name -> JSON type Ollama decodes it as. A wrong type is stored without
# complaint by create and then fails every generate, so values are converted here.
PARAM_TYPES = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int",
    "num_thread": "int", "num_keep": "int", "seed": "int", "num_predict": "int",
    "top_k": "int", "repeat_last_n": "int", "draft_num_predict": "int",
    "temperature": "float", "top_p": "float", "min_p": "float", "typical_p": "float",
    "repeat_penalty": "float", "presence_penalty": "float", "frequency_penalty": "float",
    "use_mmap": "bool", "stop": "list",
}
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


# ---------------------------------------------------------------- Modelfiles


@dataclass
class Modelfile:
    """The instructions we use from a Modelfile (API.md 6)."""

    from_: str = ""
    template: str | None = None
    system: str | None = None
    parameters: dict = field(default_factory=dict)  # name -> typed value; stop -> list


def _read_value(lines: list[str], i: int, value: str) -> tuple[str, int]:
    """A value starting on line i: unquoted to the line end, or `"`/`\"\"\"`-quoted over lines.

    A quoted value ends at the first line end where the text, trimmed, ends with the closing
    delimiter; the inside is kept exactly, with no escape sequences."""
    delim = '"""' if value.startswith('"""') else '"' if value.startswith('"') else ""
    if not delim:
        return value.strip(), i
    text = value[len(delim):]
    while not text.rstrip().endswith(delim):
        i += 1
        if i >= len(lines):
            raise PhiError("Modelfile: unexpected EOF in a quoted value")
        text += "\n" + lines[i]
    return text.rstrip()[: -len(delim)], i


def parse_modelfile(text: str) -> Modelfile:
    """Parse FROM, TEMPLATE, SYSTEM and PARAMETER lines (other instructions are refused)."""
    lines = re.split(r"\r\n|\r|\n", text.lstrip("\ufeff"))
    out, i = Modelfile(), 0
    while i < len(lines):
        line = lines[i].lstrip(" \t")
        m = re.match(r"([A-Za-z]+)[ \t]+(.*)", line)
        if not line or line.startswith("#"):
            pass
        elif not m or m.group(1).lower() not in ("from", "template", "system", "parameter"):
            raise PhiError(f"Modelfile line {i + 1}: expected FROM, TEMPLATE, SYSTEM or PARAMETER")
        elif m.group(1).lower() == "parameter":
            p = re.match(r"([A-Za-z0-9_]+)[ \t]+(.*)", m.group(2))
            if not p:
                raise PhiError(f"Modelfile line {i + 1}: PARAMETER needs a name and a value")
            value, i = _read_value(lines, i, p.group(2).lstrip())
            add_parameter(out.parameters, p.group(1), value)
        else:
            value, i = _read_value(lines, i, m.group(2).lstrip())
            setattr(out, {"from": "from_"}.get(m.group(1).lower(), m.group(1).lower()), value)
        i += 1
    return out


def convert_parameter(name: str, text: str):
    """A PARAMETER value as the JSON type Ollama expects, with Ollama's error wording."""
    kind = PARAM_TYPES.get(name)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _BOOLS[text]
    except (ValueError, KeyError):
        raise PhiError(f"invalid {kind} value [{text}] for parameter {name}") from None
    if kind == "list":
        return text
    raise PhiError(f"unknown parameter '{name}' (known: {', '.join(sorted(PARAM_TYPES))})")


def add_parameter(params: dict, name: str, text: str) -> None:
    """Add one PARAMETER: stop values accumulate into a list, others replace."""
    value = convert_parameter(name, text)
    if PARAM_TYPES[name] == "list":
        params.setdefault(name, [])
        if value not in params[name]:
            params[name].append(value)
    else:
        params[name] = value


def parse_parameter_options(options: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """`-p name=value` options as (name, text) pairs."""
    pairs = []
    for option in options:
        name, eq, text = option.partition("=")
        if not eq or not name.strip():
            raise PhiError(f"Bad parameter {option!r}: use -p name=value, e.g. -p temperature=0.7")
        pairs.append((name.strip(), text))
    return pairs


def family_modelfile(family_key: str) -> Modelfile:
    """The family's Modelfile from modelfiles/, the single source of templates and stops."""
    from .families import get_family

    name = get_family(family_key).modelfile
    try:
        from importlib import resources

        text = resources.files("llm_phi_gguf.modelfiles").joinpath(name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # A source checkout that was never installed: modelfiles/ sits next to the package.
        text = (Path(__file__).resolve().parent.parent / "modelfiles" / name).read_text("utf-8")
    return parse_modelfile(text)


def quote_value(value: str) -> str:
    """Quote a value the way `ollama show` does, so it reads back unchanged (API.md 4.1, 6)."""
    if "\n" not in value and value == value.strip() and not value.startswith('"') and value:
        return value
    delim = '"""' if '"' in value else '"'
    if '"""' in value:
        raise PhiError(f"Cannot write {value[:40]!r} in a Modelfile: it contains triple quotes")
    return f"{delim}{value}{delim}"


def format_parameter(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def format_modelfile(spec: Modelfile) -> str:
    lines = [f"FROM {spec.from_}"]
    if spec.template is not None:
        lines.append(f'TEMPLATE """{spec.template}"""')
    if spec.system:
        lines.append(f"SYSTEM {quote_value(spec.system)}")
    for name, value in spec.parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {name} {quote_value(format_parameter(item))}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- what we export


@dataclass
class Export:
    path: Path  # absolute path of the GGUF
    family: str
    template: str
    system: str | None
    parameters: dict  # typed, ready for JSON
    chat_template: str | None = None  # the GGUF's own Jinja template (Ollama >= 0.30 may use it)

    def modelfile(self, from_: str | None = None) -> Modelfile:
        return Modelfile(from_ or str(self.path), self.template, self.system, dict(self.parameters))


def resolve_model(model: str):
    """(absolute GGUF path, registry entry or None) for an alias or a GGUF path."""
    from . import store

    candidate = Path(model).expanduser()
    if candidate.is_file() or model.endswith(".gguf"):
        path = candidate.absolute()
        entry = next((e for e in store.load().values() if Path(e.path).absolute() == path), None)
        return path, entry
    entry = store.get(model)
    return Path(entry.path).expanduser().absolute(), entry


def build_export(model: str, system: str | None = None, options=(), check=None) -> Export:
    """Everything the Modelfile and /api/create need, from the family's Modelfile plus the
    registry's num_ctx and the user's --system and -p values. `check(path)` runs on the file
    before it is validated (push refuses split GGUFs there)."""
    from .families import default_n_ctx, detect_family, get_family
    from .gguf_info import validate_gguf

    pairs = parse_parameter_options(options)  # bad -p values fail before any file is read
    path, entry = resolve_model(model)
    if check is not None:
        check(path)
    info = validate_gguf(path)
    family = entry.family if entry else getattr(detect_family(info.metadata), "key", None)
    if family is None:
        raise PhiError(f"Cannot tell which Phi family {path} belongs to",
                       hint="register it with `llm phi register --family ...`")
    if system and not get_family(family).supports_system:
        raise PhiError(f"The {family} chat template drops system prompts, so --system would be ignored",
                       hint="put the instructions in the first user message")
    base = family_modelfile(family)
    params = {"stop": list(base.parameters.get("stop", []))}
    params["num_ctx"] = (entry.n_ctx if entry and entry.n_ctx else None) or default_n_ctx(info.metadata)
    params.update({k: v for k, v in base.parameters.items() if k != "stop"})
    for name, text in pairs:
        add_parameter(params, name, text)
    return Export(path, family, base.template, system if system is not None else base.system,
                  params, info.chat_template)


def modelfile_text(export: Export) -> str:
    from .families import get_family

    header = (f"# Modelfile for {export.path.name}, family {export.family} "
              f"({get_family(export.family).title}), written by llm-phi-gguf\n")
    return header + format_modelfile(export.modelfile())
