"""Export a model to Ollama: push (hash, upload only what is missing, create, check what the
server made of it) and list which registered models a server has.

The Modelfile side is ollama_modelfile, the HTTP side ollama_client, digests ollama_digests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import OllamaError
from .ollama_client import (FILES_FORM_SINCE, NATIVE_TEMPLATE_SINCE, OldServerError, client, create_model,
                            display_name, generate_one, list_server_models, ModelNotFound, model_blob_digest, parse_name,
                            parse_show_parameters, resolve_host, server_version, show_model, upload_blob)
from .ollama_digests import cached_digest, pushed_models, remember_push
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


# llama.cpp's split files: NAME-00001-of-00003.gguf (llama-gguf-split), with split.count inside.
SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def refuse_split(path: Path) -> None:
    """A split GGUF is several files; Ollama creates a model from one. Refused before any upload."""
    from .gguf_info import read_gguf

    m = SPLIT_NAME.search(path.name)
    count = int(m.group(2)) if m else int(read_gguf(path).metadata.get("split.count") or 1)
    if count > 1:
        first = SPLIT_NAME.sub("-00001-of-%05d.gguf" % count, path.name) if m else path.name
        raise OllamaError(f"{path.name} is one part of a GGUF split into {count} files; Ollama needs a "
                          "single file", hint=f"merge it first: llama-gguf-split --merge {first} merged.gguf, "
                                               "then push merged.gguf")


def with_chat_template(export: Export, embed: bool, echo) -> Export:
    """Ollama >= 0.30 may run the GGUF's own Jinja template (API.md 7.4), so what we push should
    carry the family's Hugging Face template; --embed-template writes a copy that does."""
    from .families import get_family, read_template
    from .ollama_embed import embed_template, embedded_path

    if export.chat_template is not None:
        return export
    if not embed:
        echo(f"Note: {export.path.name} has no tokenizer.chat_template; Ollama >= 0.30 may then format "
             "chats without our template. Push with --embed-template to send a copy that carries "
             f"the {export.family} Hugging Face template")
        return export
    template = read_template(get_family(export.family))
    out = embedded_path(export.path)
    ours = out.is_file() and read_gguf_template(out) == template  # an earlier --embed-template copy
    if not (ours and out.stat().st_mtime_ns >= export.path.stat().st_mtime_ns):
        embed_template(export.path, out, template, force=ours)  # anything else there is not replaced
        echo(f"Wrote {out} (the model with the {export.family} chat template added)")
    return replace(export, path=out, chat_template=template)


def read_gguf_template(path: Path) -> str | None:
    from .gguf_info import read_gguf

    return read_gguf(path).chat_template


def push(model: str, name: str, host: str | None = None, system: str | None = None, options=(),
         verify: bool = False, echo=print, progress: bool = True, embed_template: bool = False,
         force: bool = False) -> PushResult:
    """Hash, upload (only if missing), create, then check the model on the server."""
    parse_name(name)  # before anything is read or sent
    base = resolve_host(host)
    export = build_export(model, system, options, check=refuse_split)
    with client(base) as cl:
        version = server_version(cl)
        export = with_chat_template(export, embed_template, echo)
        digest = cached_digest(export.path, progress)
        check_name_free(cl, base, name, digest, force)
        sent = upload_blob(cl, export.path, digest, progress)
        echo(f"Uploaded {sent} bytes" if sent else f"Blob {digest[:19]}... already on the server")
        statuses = _create(cl, export, name, digest, version, echo)
        shown = show_model(cl, name)
        notes = check_shown(export, shown, version)
        remember_push(base, display_name(name), digest, export.family, shown)
        if verify:
            generate_one(cl, name)
            notes.append("one-token generate succeeded")
    return PushResult(name, digest, sent, version, statuses, notes)


def check_name_free(cl, base: str, name: str, digest: str, force: bool) -> None:
    """Creating over an existing model replaces it silently: only with --force, or when it is
    our own earlier push of the same file (pushing again is then an update)."""
    try:
        show_model(cl, name)
    except ModelNotFound:
        return
    ours = pushed_models(base).get(display_name(name))
    if force or (ours and ours.get("source_digest") == digest):
        return
    raise OllamaError(f"{name} already exists on {base}", hint="choose another --name, or add --force to replace it")


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
    """(alias, digest, server names) for every registered model whose file exists.

    A server model matches when its model layer has the file's digest, or when we pushed that
    file under that name (our push record) and the server still shows the details it showed
    then: servers >= 0.30 store a re-written GGUF (API.md 3.4) whose digest is not the file's."""
    from . import store

    base = resolve_host(host)
    with client(base) as cl:
        server_version(cl)  # a host that is not Ollama fails here, in one line
        pushed = pushed_models(base)
        by_digest: dict[str, list[str]] = {}
        for m in list_server_models(cl):
            shown = show_model(cl, m["name"])
            record = pushed.get(display_name(m["name"]))
            digests = {model_blob_digest(shown)}
            if record and record.get("details") == shown.get("details"):
                digests.add(record["source_digest"])
            for digest in digests - {None}:
                by_digest.setdefault(digest, []).append(m["name"])
    rows = []
    for alias, entry in sorted(store.load().items()):
        path = Path(entry.path).expanduser().absolute()
        if path.is_file():
            digest = cached_digest(path, progress)
            rows.append((alias, digest, by_digest.get(digest, [])))
    return rows
