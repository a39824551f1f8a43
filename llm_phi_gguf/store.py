"""The model registry: which GGUF files llm knows by which alias, with their load settings.

Stored as JSON in llm.user_dir()/llm-phi-gguf/models.json. Every change takes a file lock,
re-reads the file, and replaces it atomically, so parallel `llm phi register` calls lose
nothing and a crash never leaves half a file. A registry that is not valid JSON is reported
with its path and never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from .errors import RegistryError

REGISTRY_VERSION = 1

# Short alias suffixes for the file types people use most; any other type is lower-cased.
QUANT_SUFFIX = {
    "Q4_K_M": "q4",
    "Q5_K_M": "q5",
    "Q6_K": "q6",
    "Q8_0": "q8",
    "F16": "f16",
    "BF16": "bf16",
    "F32": "f32",
}


@dataclass
class ModelEntry:
    alias: str
    path: str
    family: str
    quant: str | None = None
    size: int = 0
    template: str | None = None  # a user's template file; None = the GGUF's own (or the family's)
    gpu_layers: int | None = None
    n_ctx: int | None = None
    registered: float = field(default_factory=time.time)

    @classmethod
    def from_json(cls, data: dict) -> "ModelEntry":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_alias(family_key: str, quant: str | None) -> str:
    if not quant:
        return family_key
    return f"{family_key}-{QUANT_SUFFIX.get(quant.upper(), quant.lower())}"


def registry_dir() -> Path:
    try:
        import llm

        base = Path(llm.user_dir())
    except ImportError:  # runtime used without llm (benchmarks on a bare GPU machine)
        import click

        base = Path(os.environ.get("LLM_USER_PATH") or click.get_app_dir("io.datasette.llm"))
    path = base / "llm-phi-gguf"
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_path() -> Path:
    return registry_dir() / "models.json"


def models_dir() -> Path:
    """Where the plugin builds the GGUFs it makes from downloaded checkpoints."""
    return registry_dir() / "models"


def output_path(repo: str, quant: str) -> Path:
    """The GGUF `llm phi download` builds for `repo` (owner/name) at `quant`."""
    owner, name = repo.split("/")
    return models_dir() / owner / f"{name}_{quant}.gguf"


def _read(path: Path) -> dict[str, ModelEntry]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RegistryError(f"Cannot read the model registry {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
        models = data["models"]
        return {alias: ModelEntry.from_json({**entry, "alias": alias}) for alias, entry in models.items()}
    except json.JSONDecodeError as e:
        raise RegistryError(
            f"The model registry {path} is not valid JSON (line {e.lineno}, column {e.colno})",
            hint="fix it by hand or move it away; it was left untouched",
        ) from None
    except (KeyError, TypeError, AttributeError):
        raise RegistryError(
            f"The model registry {path} does not have the expected layout",
            hint="fix it by hand or move it away; it was left untouched",
        ) from None


def _write(path: Path, entries: dict[str, ModelEntry]) -> None:
    payload = {
        "version": REGISTRY_VERSION,
        "models": {a: {k: v for k, v in asdict(e).items() if k != "alias"} for a, e in sorted(entries.items())},
    }
    from .files import write_json_atomic

    write_json_atomic(path, payload)


@contextlib.contextmanager
def _locked() -> Iterator[tuple[Path, dict[str, ModelEntry]]]:
    """Hold the registry lock; yield (path, entries) to read-modify-write."""
    from filelock import FileLock

    path = registry_path()
    with FileLock(str(path) + ".lock", timeout=60):
        yield path, _read(path)


def load() -> dict[str, ModelEntry]:
    """All registered models by alias (no lock: replacement is atomic)."""
    return _read(registry_path())


def add(entry: ModelEntry, force: bool = False) -> ModelEntry:
    with _locked() as (path, entries):
        old = entries.get(entry.alias)
        if old and not force:
            raise RegistryError(
                f"Alias {entry.alias!r} is already registered for {old.path}",
                hint="choose another --alias or use --force to replace it",
            )
        entries[entry.alias] = entry
        _write(path, entries)
    return entry


def remove(alias: str) -> ModelEntry:
    with _locked() as (path, entries):
        entry = _pop(entries, alias)
        _write(path, entries)
    return entry


def _pop(entries: dict[str, ModelEntry], alias: str) -> ModelEntry:
    if alias.startswith(MODEL_ID_PREFIX):
        alias = alias[len(MODEL_ID_PREFIX):]
    try:
        return entries.pop(alias)
    except KeyError:
        known = ", ".join(sorted(entries)) or "none registered"
        raise RegistryError(f"Unknown model {alias!r} (registered: {known})") from None


def get(name: str) -> ModelEntry:
    """A registered model by alias (or by its llm model id)."""
    return _pop(dict(load()), name)


MODEL_ID_PREFIX = "phi-gguf/"


def model_id(alias: str) -> str:
    """The llm model id of an alias; the alias itself is registered as an llm alias too."""
    return MODEL_ID_PREFIX + alias


def register_file(
    path: str | Path,
    *,
    alias: str | None = None,
    family: str | None = None,
    template: str | None = None,
    gpu_layers: int | None = None,
    n_ctx: int | None = None,
    force: bool = False,
) -> ModelEntry:
    """Validate a GGUF (header only, no weights), work out its family and alias, register it."""
    from . import chat, families
    from .gguf_info import validate_gguf

    # absolute, not resolved: a symlink (the HF cache's snapshot names) is kept as given
    path = Path(path).expanduser().absolute()
    info = validate_gguf(path, hint="register takes a Phi GGUF file; llm phi download or llm phi quantize make one")
    if not family and (model := families.unsupported_model(name=families.gguf_name(info.metadata))):
        raise RegistryError(families.refusal(model, path.name),
                            hint=f"{families.SEE_FAMILIES}; pass --family if it is one of them under another name")
    fam = families.get_family(family) if family else families.detect_family(info.metadata)
    if fam is None:
        raise RegistryError(
            f"Cannot tell which Phi family {path.name} is",
            hint=f"pass --family, one of: {', '.join(families.BY_KEY)}",
        )
    if template:
        chat.read_template_file(template)
        template = str(Path(template).expanduser().resolve())
    quant = info.file_type_name
    entry = ModelEntry(
        alias=alias or default_alias(fam.key, quant),
        path=str(path),
        family=fam.key,
        quant=quant,
        size=path.stat().st_size,
        template=template,
        gpu_layers=gpu_layers,
        n_ctx=n_ctx,
    )
    return add(entry, force=force)
