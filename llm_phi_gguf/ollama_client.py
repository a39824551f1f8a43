"""A client for Ollama's HTTP API: OLLAMA_HOST and model names parsed Ollama's way, and the
routes the exporter uses (version, blobs, create, show, generate, tags), each failure a one-line
OllamaError naming the server.

Facts: shared/reference/ollama/API.md, cited by section. httpx and tqdm are imported inside the
functions that need them so `import llm_phi_gguf` stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from .errors import OllamaError

DEFAULT_HOST = "http://127.0.0.1:11434"
# API.md 0: `/api/create` takes `files` since v0.5.5; older servers want a Modelfile with
# `FROM @sha256:...`. From v0.30.0 the server may prefer the GGUF's Jinja template (7.4).
FILES_FORM_SINCE = (0, 5, 5)
NATIVE_TEMPLATE_SINCE = (0, 30, 0)

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

# API.md 4.7: [host/][namespace/]model[:tag]; each part starts with a letter, digit or _.
NAME_PARTS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
NAME_DEFAULTS = {"host": "registry.ollama.ai", "namespace": "library", "tag": "latest"}


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


NOT_OLLAMA_HINT = "point --host or OLLAMA_HOST at the machine running `ollama serve` (port 11434 by default)"


def _json(response, cl, what: str):
    """The JSON object of an answer; anything else means the host is not (only) Ollama."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = " ".join(response.text.split())[:60]
        raise OllamaError(f"{cl.base_url} is not an Ollama server: {what} answered "
                          f"{response.headers.get('content-type') or 'no content type'} ({text!r})",
                          hint=NOT_OLLAMA_HINT)
    return data


def server_version(cl) -> tuple[int, ...]:
    """The server's version; the first call to any host, so it is where a host that answers but
    is not Ollama (a web page, a 404, garbage) is named as such."""
    response = request(cl, "GET", "/api/version")
    if response.status_code != 200:
        raise OllamaError(f"{cl.base_url} is not an Ollama server: GET /api/version answered "
                          f"{' '.join(_error_text(response).split())[:80]}", hint=NOT_OLLAMA_HINT)
    version = _json(response, cl, "GET /api/version").get("version")
    if not isinstance(version, str):
        raise OllamaError(f"{cl.base_url} is not an Ollama server: GET /api/version has no version string",
                          hint=NOT_OLLAMA_HINT)
    return parse_version(version)


def blob_exists(cl, digest: str) -> bool:
    response = request(cl, "HEAD", f"/api/blobs/{digest}")
    return _expect(response, 200, 404).status_code == 200


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


class ModelNotFound(OllamaError):
    """/api/show answered 404 for the name."""


def show_model(cl, name: str) -> dict:
    response = request(cl, "POST", "/api/show", json={"model": name})
    if response.status_code == 404:
        raise ModelNotFound(f"Ollama has no model {name!r}")
    return _json(_expect(response, 200), cl, "POST /api/show")


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


def generate_one(cl, name: str) -> str:
    """A one-token /api/generate: proves the model loads and its parameters are well typed."""
    response = request(cl, "POST", "/api/generate", "generate",
                       json={"model": name, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
    return _expect(response, 200).json().get("response", "")


def list_server_models(cl) -> list[dict]:
    return _json(_expect(request(cl, "GET", "/api/tags"), 200), cl, "GET /api/tags").get("models") or []


def model_blob_digest(shown: dict) -> str | None:
    """The model layer's digest, from the FROM line of /api/show's modelfile."""
    m = re.search(r"^FROM .*sha256[-:]([0-9a-f]{64})\s*$", shown.get("modelfile", ""), re.M)
    return f"sha256:{m.group(1)}" if m else None
