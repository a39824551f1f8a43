"""Export a model to Ollama: push (hash, upload only what is missing, create, check what the
server made of it) and list which registered models a server has.

The Modelfile side is ollama_modelfile, the HTTP side ollama_client, digests ollama_digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import OllamaError
from .ollama_client import (FILES_FORM_SINCE, NATIVE_TEMPLATE_SINCE, OldServerError, client, create_model,
                            generate_one, list_server_models, model_blob_digest, parse_name,
                            parse_show_parameters, resolve_host, server_version, show_model, upload_blob)
from .ollama_digests import cached_digest
from .ollama_modelfile import Export, build_export, format_modelfile

def create_payload(export: Export, name: str, digest: str) -> dict:
    """The JSON create request (v0.5.5+). The key ends in .gguf: the server picks the file type
    from the suffix (API.md 3.1); it must be a plain relative name (3.3)."""
    key = export.path.name if export.path.name.endswith(".gguf") else "model.gguf"
    payload = {"model": name, "files": {key: digest}, "template": export.template,
               "parameters": export.parameters, "stream": True}
    if export.system:
        payload["system"] = export.system
    return payload


def legacy_create_payload(export: Export, name: str, digest: str) -> dict:
    """The create request for servers before v0.5.5: a Modelfile naming the uploaded blob."""
    modelfile = format_modelfile(export.modelfile(from_=f"@{digest}"))
    return {"model": name, "name": name, "modelfile": modelfile, "stream": True}


def check_shown(export: Export, shown: dict, version: tuple[int, ...]) -> list[str]:
    """Compare /api/show with what we sent; raise on a real difference, return notes."""
    notes = []
    if shown.get("template") != export.template:
        native = version >= NATIVE_TEMPLATE_SINCE and shown.get("template") == export.chat_template
        if not native:
            raise OllamaError("The created model does not carry the template we sent")
        notes.append("Ollama >= 0.30 uses the GGUF's own chat template for this model "
                     "(it advertises tools or thinking); the stops still apply")
    got = parse_show_parameters(shown.get("parameters", ""))
    for name, value in export.parameters.items():
        same = sorted(got.get(name) or []) == sorted(value) if name == "stop" else got.get(name) == value
        if not same:
            raise OllamaError(f"The created model has {name}={got.get(name)!r}, we sent {value!r}")
    return notes


# ---------------------------------------------------------------- push and list


@dataclass
class PushResult:
    name: str
    digest: str
    bytes_sent: int
    version: tuple[int, ...]
    statuses: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def push(model: str, name: str, host: str | None = None, system: str | None = None, options=(),
         verify: bool = False, echo=print, progress: bool = True) -> PushResult:
    """Hash, upload (only if missing), create, then check the model on the server."""
    parse_name(name)  # before anything is read or sent
    export = build_export(model, system, options)
    with client(resolve_host(host)) as cl:
        version = server_version(cl)
        digest = cached_digest(export.path, progress)
        sent = upload_blob(cl, export.path, digest, progress)
        echo(f"Uploaded {sent} bytes" if sent else f"Blob {digest[:19]}... already on the server")
        statuses = _create(cl, export, name, digest, version, echo)
        notes = check_shown(export, show_model(cl, name), version)
        if verify:
            generate_one(cl, name)
            notes.append("one-token generate succeeded")
    return PushResult(name, digest, sent, version, statuses, notes)


def _create(cl, export: Export, name: str, digest: str, version, echo) -> list[dict]:
    def show(status: dict) -> None:
        if not status.get("total"):  # progress lines (quantize, validate) would flood the output
            echo(status.get("status", ""))

    if version >= FILES_FORM_SINCE:
        try:
            return create_model(cl, create_payload(export, name, digest), show)
        except OldServerError:  # a server whose version string lies: fall back (API.md 3.2)
            pass
    return create_model(cl, legacy_create_payload(export, name, digest), show)


def registered_on_server(host: str | None = None, progress: bool = True) -> list[tuple[str, str, list[str]]]:
    """(alias, digest, server names) for every registered model whose file exists, matched
    by the model layer's digest. Ollama >= 0.30 stores a re-written GGUF (API.md 3.4), whose
    digest differs, so models created by such a server are not matched."""
    from . import store

    with client(resolve_host(host)) as cl:
        by_digest: dict[str, list[str]] = {}
        for m in list_server_models(cl):
            digest = model_blob_digest(show_model(cl, m["name"]))
            if digest:
                by_digest.setdefault(digest, []).append(m["name"])
    rows = []
    for alias, entry in sorted(store.load().items()):
        path = Path(entry.path).expanduser().absolute()
        if path.is_file():
            digest = cached_digest(path, progress)
            rows.append((alias, digest, by_digest.get(digest, [])))
    return rows
