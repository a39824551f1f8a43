"""Catalog models: listed by `llm models` before any download, fetched by their first prompt.

A catalog row (catalog.py) whose alias no registered model has becomes an llm model with the
same id a download would give it (phi-gguf/ALIAS). Its first prompt prints one line to stderr
(what is fetched, from where, how big, where it will live, how to cancel), runs the same path as
`llm phi download` (hub.download_model: Microsoft's GGUF where there is one, else safetensors ->
our converter -> llama.cpp's quantizer), registers the result and answers. Interrupted downloads
resume (hub_resume.py); outputs are written atomically (files.atomic_output).

LLM_PHI_AUTO_DOWNLOAD=0, or `llm phi auto-download off`, turns the download off: the prompt then
fails with one line naming the command that downloads the model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import store
from .catalog import CatalogRow, gb
from .errors import PhiError
from .model import PhiAsyncModel, PhiModel

AUTO_DOWNLOAD_ENV = "LLM_PHI_AUTO_DOWNLOAD"
OFF = {"0", "off", "no", "false"}


# ----------------------------------------------------------------------------- the setting


def settings_path() -> Path:
    return store.registry_dir() / "settings.json"


def read_settings() -> dict:
    from .files import read_json_dict

    return read_json_dict(settings_path())


def set_auto_download(on: bool) -> None:
    from .files import write_json_atomic

    write_json_atomic(settings_path(), {**read_settings(), "auto_download": on})


def auto_download() -> tuple[bool, str]:
    """(on?, where that comes from): the environment wins over `llm phi auto-download`."""
    env = os.environ.get(AUTO_DOWNLOAD_ENV, "").strip().lower()
    if env:
        return env not in OFF, f"{AUTO_DOWNLOAD_ENV}={os.environ[AUTO_DOWNLOAD_ENV].strip()}"
    on = read_settings().get("auto_download", True) is not False
    return on, "llm phi auto-download " + ("on" if on else "off")


# ----------------------------------------------------------------------------- downloading a row


def download_command(row: CatalogRow) -> str:
    return f"llm phi download {row.alias}"


def destination(row: CatalogRow, cache_dir: str) -> str:
    """Where the row's GGUF will live: the HF cache for a GGUF repo, else llm's models folder."""
    if row.gguf_repo:
        return f"the Hugging Face cache ({cache_dir})"
    return str(store.output_path(row.source, row.quant))


def announcement(row: CatalogRow, hub) -> str:
    """The one line a first use prints before it downloads anything."""
    if row.gguf_repo:
        what = f"{row.gguf_repo} {row.gguf_file} ({gb(row.download_gb)})"
    else:
        what = (f"{row.source} ({gb(row.download_gb)} of safetensors, converted here to a "
                f"{gb(row.file_gb)} {row.quant} GGUF)")
    source = f"the Hugging Face cache (HF_HUB_OFFLINE is set)" if hub.offline else hub.endpoint
    return (f"{row.alias} is not downloaded yet: fetching {what} from {source} into "
            f"{destination(row, hub.cache_dir)}. Ctrl-C cancels (the next run resumes); "
            f"{AUTO_DOWNLOAD_ENV}=0 turns this off.")


def download_row(row: CatalogRow, force: bool = False, keep_source: bool = False, echo=print) -> store.ModelEntry:
    """`llm phi download ALIAS`: the row's GGUF, fetched (or built) and registered under its alias."""
    from .hub import download_model

    built = store.output_path(row.source, row.quant)
    if not row.gguf_repo and built.exists() and not force and row.alias not in store.load():
        return store.register_file(built, alias=row.alias)  # built before, registry lost since
    return download_model(row.repo, quant=row.quant, file=row.gguf_file, alias=row.alias, keep_source=keep_source,
                          force=force, echo=echo)


def ensure_local(row: CatalogRow) -> store.ModelEntry:
    """The registered entry of the row's alias; downloads it first (announced on stderr) if needed."""
    entry = store.load().get(row.alias)
    if entry is not None and Path(entry.path).exists():
        return entry
    on, why = auto_download()
    if not on:
        raise PhiError(f"{row.alias} is not downloaded yet and automatic download is off ({why})",
                       hint=f"run: {download_command(row)}")
    from .hub import Hub

    print(announcement(row, Hub.from_env()), file=sys.stderr, flush=True)
    try:
        return download_row(row, echo=lambda *a, **k: None)  # progress bars say the rest
    except KeyboardInterrupt:
        print(f"Interrupted: nothing half-written was left where a model goes; what was downloaded stays in the "
              f"Hugging Face cache, and `llm -m {row.alias}` or `{download_command(row)}` carries on from there",
              file=sys.stderr, flush=True)
        raise


def local_state(row: CatalogRow, entries: dict, hub) -> str:
    """What of the row is on this machine, from the registry and the file system only."""
    from .hub import repo_storage

    entry = entries.get(row.alias)
    if entry is not None:
        return f"registered: {entry.path}" + ("" if Path(entry.path).exists() else " [MISSING FILE]")
    if row.gguf_repo and any(repo_storage(hub, row.gguf_repo).glob(f"snapshots/*/{row.gguf_file}")):
        return "in the Hugging Face cache, not registered (first use registers it)"
    if not row.gguf_repo and store.output_path(row.source, row.quant).exists():
        return f"built, not registered: {store.output_path(row.source, row.quant)}"
    return status(row)


# ----------------------------------------------------------------------------- the llm models


def placeholder(row: CatalogRow) -> store.ModelEntry:
    return store.ModelEntry(alias=row.alias, path="", family=row.family, quant=row.quant, size=row.file_bytes)


def status(row: CatalogRow) -> str:
    keeps = "" if row.gguf_repo else f", keeps {gb(row.file_gb)}"
    return f"not downloaded: first use fetches {gb(row.download_gb)}{keeps}"


class _FirstUse:
    """Mixed into PhiModel / PhiAsyncModel: a catalog row until its first prompt downloads it."""

    def __init__(self, row: CatalogRow):
        super().__init__(placeholder(row))
        self.row = row

    def __str__(self) -> str:
        return f"Phi GGUF: {self.model_id} ({status(self.row)})"

    def prepare(self, prompt, conversation=None):
        self.entry = ensure_local(self.row)
        return super().prepare(prompt, conversation)


class CatalogModel(_FirstUse, PhiModel):
    pass


class CatalogAsyncModel(_FirstUse, PhiAsyncModel):
    pass
