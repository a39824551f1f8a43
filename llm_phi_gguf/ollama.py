"""Export a model to Ollama: Modelfiles with each family's exact template and stops, and a
client for Ollama's HTTP API (blobs, create, show, version, tags, generate).

Every fact about Ollama used here (routes, status codes, error strings, parameter types,
OLLAMA_HOST parsing, name rules, Modelfile quoting, version boundaries) is documented in
shared/reference/ollama/API.md; the section is cited where it matters. httpx and tqdm are
imported inside the functions that need them so `import llm_phi_gguf` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OllamaError, PhiError

DEFAULT_HOST = "http://127.0.0.1:11434"
# API.md 0: `/api/create` takes `files` since v0.5.5; older servers want a Modelfile with
# `FROM @sha256:...`. From v0.30.0 the server may prefer the GGUF's Jinja template (7.4).
FILES_FORM_SINCE = (0, 5, 5)
NATIVE_TEMPLATE_SINCE = (0, 30, 0)

HASH_CHUNK = 4 << 20  # 4 MiB reads keep sha256 at disk speed
UPLOAD_CHUNK = 1 << 20
UPLOAD_ATTEMPTS = 4
BACKOFF_S = 0.25  # doubled after each failed attempt: 0.25, 0.5, 1 s

# httpx's default (5 s for everything) fails a multi-GB upload whose reply waits for the
# server to finish hashing and storing, and a create or generate that loads a large model.
TIMEOUTS = {  # what -> (connect, read, write, pool) in seconds
    "api": (10, 60, 60, 10),
    "upload": (10, 900, 300, 60),
    "create": (10, 1800, 60, 60),
    "generate": (10, 900, 60, 60),
}

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

# API.md 4.7: [host/][namespace/]model[:tag]; each part starts with a letter, digit or _.
NAME_PARTS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
NAME_DEFAULTS = {"host": "registry.ollama.ai", "namespace": "library", "tag": "latest"}


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


def build_export(model: str, system: str | None = None, options=()) -> Export:
    """Everything the Modelfile and /api/create need, from the family's Modelfile plus the
    registry's num_ctx and the user's --system and -p values."""
    from .families import default_n_ctx, detect_family
    from .gguf_info import validate_gguf

    pairs = parse_parameter_options(options)  # bad -p values fail before any file is read
    path, entry = resolve_model(model)
    info = validate_gguf(path)
    family = entry.family if entry else getattr(detect_family(info.metadata), "key", None)
    if family is None:
        raise PhiError(f"Cannot tell which Phi family {path} belongs to",
                       hint="register it with `llm phi register --family ...`")
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


# ---------------------------------------------------------------- host and names


def parse_host(value: str | None) -> str:
    """OLLAMA_HOST as Ollama reads it (API.md 1.1) -> base URL."""
    s = (value or "").strip().strip("\"'")
    if not s:
        return DEFAULT_HOST
    scheme, sep, rest = s.partition("://")
    if not sep:
        scheme, rest = ("https", "ollama.com:443") if s == "ollama.com" else ("http", s)
    default_port = {"http": "80", "https": "443"}.get(scheme, "11434") if sep else "11434"
    hostport, slash, path = rest.partition("/")
    host, port = _split_host_port(hostport)
    if host is None:
        bare = hostport.strip("[]")
        host, port = (bare if bare else "127.0.0.1"), default_port
    if not port.isdigit() or int(port) > 65535:
        port = default_port
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}" + (f"/{path}" if slash else "")


def _split_host_port(hostport: str) -> tuple[str | None, str]:
    """Like Go's net.SplitHostPort: (None, "") when there is no valid host:port form."""
    m = re.fullmatch(r"\[([^\]]*)\]:(.*)|([^:\[\]]*):([^:]*)", hostport)
    if not m:
        return None, ""
    return (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))


def resolve_host(host: str | None) -> str:
    """--host, else OLLAMA_HOST, else the default; --host takes the same forms."""
    return parse_host(host if host else os.environ.get("OLLAMA_HOST"))


def _connect_url(base: str) -> str:
    # Ollama's client dials an empty host (OLLAMA_HOST=:1234) as the local machine.
    return base.replace("://:", "://127.0.0.1:", 1)


def parse_name(name: str) -> dict:
    """Split and check a model name with Ollama's rules (API.md 4.7); OllamaError if invalid."""
    parts = dict(NAME_DEFAULTS)
    rest = name
    if rest.rfind(":") > rest.rfind("/"):  # "/" cannot be in a tag, so a later ":" is a tag
        rest, parts["tag"] = rest.rsplit(":", 1)
    pieces = rest.split("/")
    if len(pieces) > 3:
        raise OllamaError(f"Invalid model name {name!r}: use [host/][namespace/]model[:tag]")
    parts.update(zip(("host", "namespace", "model")[3 - len(pieces):], pieces))
    for part, rule in NAME_PARTS.items():
        if not rule.fullmatch(parts[part]):
            raise OllamaError(
                f"Invalid model name {name!r}: the {part} {parts[part]!r} must be 1-"
                f"{350 if part == 'host' else 80} characters of letters, digits, _ -"
                f"{' .' if part != 'namespace' else ''}{' :' if part == 'host' else ''}"
                " and start with a letter, digit or _")
    return parts


def display_name(name: str) -> str:
    """The short form /api/tags uses: default host and namespace dropped, tag always shown."""
    p = parse_name(name)
    prefix = "" if p["host"] == NAME_DEFAULTS["host"] else p["host"] + "/"
    if prefix or p["namespace"] != NAME_DEFAULTS["namespace"]:
        prefix += p["namespace"] + "/"
    return f"{prefix}{p['model']}:{p['tag']}"


# ---------------------------------------------------------------- HTTP


def client(base: str):
    import httpx

    return httpx.Client(base_url=_connect_url(base), timeout=timeout("api"))


def timeout(what: str):
    import httpx

    connect, read, write, pool = TIMEOUTS[what]
    return httpx.Timeout(connect=connect, read=read, write=write, pool=pool)


def _error_text(response) -> str:
    """The server's one-line reason: `{"error": ...}` (API.md 1.2) or the first text line."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    if not message:
        lines = response.text.strip().splitlines()
        message = lines[0] if lines else ""
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")


def request(cl, method: str, url: str, what: str = "api", **kwargs):
    """One API call; transport failures become one-line OllamaErrors naming the server."""
    import httpx

    try:
        return cl.request(method, url, timeout=timeout(what), **kwargs)
    except httpx.ConnectError as e:
        raise OllamaError(f"Cannot reach Ollama at {cl.base_url} ({e})",
                          hint="is `ollama serve` running? set --host or OLLAMA_HOST") from None
    except httpx.TimeoutException:
        raise OllamaError(f"Ollama at {cl.base_url} did not answer {method} {url} in time") from None
    except httpx.TransportError as e:
        raise OllamaError(f"{method} {url} to Ollama at {cl.base_url} failed: {e or type(e).__name__}") from None


def _expect(response, *ok: int):
    if response.status_code not in ok:
        raise OllamaError(f"Ollama refused {response.request.method} {response.request.url.path}: "
                          f"{_error_text(response)}")
    return response


def parse_version(text: str) -> tuple[int, ...]:
    """"0.5.7" -> (0, 5, 7). Dev builds report 0.0.0 (API.md 4.5): treated as the newest."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    if not m:
        raise OllamaError(f"Ollama reported an unreadable version {text!r}")
    version = tuple(int(x) for x in m.groups())
    return (999, 0, 0) if version == (0, 0, 0) else version


def server_version(cl) -> tuple[int, ...]:
    response = _expect(request(cl, "GET", "/api/version"), 200)
    return parse_version(response.json().get("version", ""))


def blob_exists(cl, digest: str) -> bool:
    response = request(cl, "HEAD", f"/api/blobs/{digest}")
    return _expect(response, 200, 404).status_code == 200


def sha256_file(path: Path, progress: bool = True) -> str:
    """"sha256:<hex>" of a file, read in 4 MiB chunks into one reused buffer."""
    from tqdm import tqdm

    digest, buf = hashlib.sha256(), bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f, tqdm(total=os.fstat(f.fileno()).st_size, unit="B", unit_scale=True,
                                     desc="sha256", disable=not progress or None, leave=False) as bar:
        while n := f.readinto(buf):
            digest.update(view[:n])
            bar.update(n)
    return "sha256:" + digest.hexdigest()


def _file_chunks(path: Path, bar, sent: list[int]):
    with open(path, "rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            sent[0] += len(chunk)
            bar.update(len(chunk))
            yield chunk


def _upload_once(cl, path: Path, digest: str, size: int, bar, sent: list[int]) -> str | None:
    """POST the file once. None on success, else why it failed (worth retrying)."""
    import httpx

    try:
        response = cl.post(f"/api/blobs/{digest}", content=_file_chunks(path, bar, sent),
                           headers={"Content-Length": str(size)}, timeout=timeout("upload"))
    except httpx.ConnectError as e:
        raise OllamaError(f"Cannot reach Ollama at {cl.base_url} ({e})") from None
    except httpx.TransportError as e:
        return f"connection failed ({e or type(e).__name__})"
    if response.status_code in (200, 201):  # 200: the blob was already there (API.md 2)
        return None
    if response.status_code >= 500 or "digest mismatch" in response.text:
        return _error_text(response)  # server trouble, or bytes changed on the way: try again
    raise OllamaError(f"Ollama refused the upload of {digest}: {_error_text(response)}")


def upload_blob(cl, path: Path, digest: str, progress: bool = True) -> int:
    """Upload a file as a blob unless the server has it; returns the bytes sent.

    Retries connection failures, 5xx and digest mismatches with backoff. Ollama's blob API has
    no partial uploads, so a retry starts again from byte 0, after a HEAD that skips it if the
    earlier attempt did complete on the server."""
    from tqdm import tqdm

    size, sent = path.stat().st_size, [0]
    for attempt in range(UPLOAD_ATTEMPTS):
        if blob_exists(cl, digest):
            return sent[0]
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        with tqdm(total=size, unit="B", unit_scale=True, desc="upload", leave=False,
                  disable=not progress or None) as bar:
            failure = _upload_once(cl, path, digest, size, bar, sent)
        if failure is None and blob_exists(cl, digest):
            return sent[0]
        failure = failure or "the server does not list the blob after the upload"
    hint = "the file changed during the upload, or the network corrupts data" if "mismatch" in failure else None
    raise OllamaError(f"Upload of {path.name} to {cl.base_url} failed after {UPLOAD_ATTEMPTS} "
                      f"attempts: {failure}", hint=hint)


class OldServerError(OllamaError):
    """The server predates the `files` form of /api/create (API.md 3.2)."""


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


def create_model(cl, payload: dict, on_status=lambda status: None) -> list[dict]:
    """POST /api/create and follow its NDJSON statuses; errors come as an HTTP error before
    the stream or as an {"error"} line inside it (API.md 3.3)."""
    import httpx

    statuses: list[dict] = []
    try:
        with cl.stream("POST", "/api/create", json=payload, timeout=timeout("create")) as response:
            if response.status_code != 200:
                response.read()
                reason = _error_text(response)
                cls = OldServerError if "path or Modelfile are required" in reason else OllamaError
                raise cls(f"Ollama could not create {payload['model']}: {reason}")
            for line in response.iter_lines():
                if line.strip():
                    statuses.append(_status(json.loads(line), payload["model"]))
                    on_status(statuses[-1])
    except httpx.TransportError as e:
        raise OllamaError(f"Creating {payload['model']} on {cl.base_url} failed: {e or type(e).__name__}") from None
    if not statuses or statuses[-1].get("status") != "success":
        raise OllamaError(f"Ollama ended the create stream for {payload['model']} without success")
    return statuses


def _status(message: dict, name: str) -> dict:
    if "error" in message:
        raise OllamaError(f"Ollama could not create {name}: {message['error']}")
    return message


def show_model(cl, name: str) -> dict:
    response = request(cl, "POST", "/api/show", json={"model": name})
    if response.status_code == 404:
        raise OllamaError(f"Ollama has no model {name!r}")
    return _expect(response, 200).json()


def parse_show_parameters(text: str) -> dict:
    """/api/show's `parameters` text (`%-30s %#v` lines, API.md 4.1) back into values."""
    params: dict = {}
    for line in (text or "").splitlines():
        name, _, raw = line.strip().partition(" ")
        raw = raw.strip()
        if not name:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if name == "stop":
            params.setdefault(name, []).append(value)
        else:
            params[name] = value
    return params


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


def generate_one(cl, name: str) -> str:
    """A one-token /api/generate: proves the model loads and its parameters are well typed."""
    response = request(cl, "POST", "/api/generate", "generate",
                       json={"model": name, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
    return _expect(response, 200).json().get("response", "")


def list_server_models(cl) -> list[dict]:
    return _expect(request(cl, "GET", "/api/tags"), 200).json().get("models") or []


def model_blob_digest(shown: dict) -> str | None:
    """The model layer's digest, from the FROM line of /api/show's modelfile."""
    m = re.search(r"^FROM .*sha256[-:]([0-9a-f]{64})\s*$", shown.get("modelfile", ""), re.M)
    return f"sha256:{m.group(1)}" if m else None


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


def digest_cache_path() -> Path:
    from .store import registry_dir

    return registry_dir() / "ollama-digests.json"


def _read_cache() -> dict:
    try:
        return json.loads(digest_cache_path().read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def remember_digest(path: Path, digest: str) -> None:
    """Cache a file's digest by (size, mtime) so `list` need not re-hash multi-GB files."""
    cache = _read_cache()
    cache[str(path)] = {"stamp": _stamp(path), "digest": digest}
    from .files import write_json_atomic

    write_json_atomic(digest_cache_path(), cache)


def cached_digest(path: Path, progress: bool = True) -> str:
    """The file's sha256 without reading it where we can: our cache (by size and mtime), or the
    Hugging Face cache, whose LFS blobs are named by their sha256. A wrong digest cannot slip
    through: Ollama checks the bytes it receives against the digest in the URL."""
    hit = _read_cache().get(str(path))
    if hit and hit.get("stamp") == _stamp(path):
        return hit["digest"]
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return "sha256:" + blob.name
    digest = sha256_file(path, progress)
    remember_digest(path, digest)
    return digest


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
