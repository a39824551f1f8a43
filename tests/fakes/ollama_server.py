"""A fake Ollama server: a real HTTP server on 127.0.0.1 (random port, one thread per request)
that answers the routes the exporter uses exactly as shared/reference/ollama/API.md documents
them: status codes, error strings, NDJSON create statuses, old (< v0.5.5) and new create forms,
show/tags/version/generate, and blob storage that never exposes a partial blob.

Fault injection for uploads (`FakeOllama.upload_faults`, consumed one per POST /api/blobs):
  Fault("500", after=n)      read n bytes, answer 500 {"error"} and close
  Fault("drop", after=n)     read n bytes, close the connection without an answer
  Fault("corrupt", after=n)  flip the byte at offset n, so the digest check fails (400)
  Fault("slow", seconds=s)   read everything, wait s seconds, then answer
`create_errors`: messages sent as an {"error"} line right after "parsing GGUF".

Servers >= 0.30 store a re-written copy of the GGUF (another digest) and may prefer the GGUF's
Jinja template over the Go TEMPLATE (`prefers_chat_template`, API.md 7.4); /api/show reports
capabilities the way Ollama derives them from the template in use (gotemplate.capabilities,
checked against the Go harness in tests/test_ollama_harness.py).

Not modelled: template autodetection from the GGUF (the exporter always sends a template),
quantize, adapters, licenses, messages, the host-check middleware.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fakes import gotemplate

DIGEST = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
CHUNK = 1 << 20
OPTION_TYPES = {  # API.md 5
    **dict.fromkeys(["num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep",
                     "seed", "num_predict", "top_k", "repeat_last_n", "draft_num_predict"], "integer"),
    **dict.fromkeys(["temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
                     "presence_penalty", "frequency_penalty"], "float32"),
    "use_mmap": "boolean", "stop": "array",
}
CREATE_FIELDS = {  # field -> (Go type name, Python type) for decode errors (API.md 1.2)
    "model": ("string", str), "name": ("string", str), "from": ("string", str),
    "files": ("map[string]string", dict), "adapters": ("map[string]string", dict),
    "template": ("string", str), "system": ("string", str), "modelfile": ("string", str),
    "parameters": ("map[string]interface {}", dict), "stream": ("bool", bool),
    "quantize": ("string", str),
}
NAME_RULES = {"host": r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}", "namespace": r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}",
              "model": r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", "tag": r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"}


@dataclass
class Fault:
    kind: str  # "500" | "drop" | "corrupt" | "slow"
    after: int = 0
    seconds: float = 0.0


class CreateFailed(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def go_json(obj) -> bytes:
    """Go's encoding/json output: compact, HTML-safe escapes (API.md 1.2)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def version_tuple(v: str) -> tuple:
    t = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)\.(\d+)", v).groups())
    return (999, 0, 0) if t == (0, 0, 0) else t


def normalize(name: str) -> str | None:
    """Display form of a valid name (`x:latest`, `user/x:latest`), None when invalid."""
    parts = {"host": "registry.ollama.ai", "namespace": "library", "tag": "latest"}
    if name.rfind(":") > name.rfind("/"):
        name, parts["tag"] = name.rsplit(":", 1)
    pieces = name.split("/")
    if len(pieces) > 3:
        return None
    parts.update(zip(["host", "namespace", "model"][3 - len(pieces):], pieces))
    if not all(re.fullmatch(rule, parts[k]) for k, rule in NAME_RULES.items()):
        return None
    prefix = "" if parts["host"] == "registry.ollama.ai" else parts["host"] + "/"
    if prefix or parts["namespace"] != "library":
        prefix += parts["namespace"] + "/"
    return f"{prefix}{parts['model']}:{parts['tag']}"


def valid_path(p: str) -> bool:
    """Go's io/fs.ValidPath."""
    return p == "." or (p != "" and not p.startswith("/") and all(s not in ("", ".", "..") for s in p.split("/")))


def read_gguf_meta(path: Path) -> dict:
    """General metadata of a GGUF (scalars and strings only); ValueError when malformed."""
    data = path.read_bytes()
    if data[:4] not in (b"GGUF", b"FUGG"):
        raise TypeError("supplied file was not in GGUF format")
    pos, meta = 24, {}
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def take(fmt):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise ValueError("unexpected EOF")
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return value

    def value(t):
        nonlocal pos
        if t == 8:
            n = take("Q")
            if pos + n > len(data):
                raise ValueError("unexpected EOF")
            pos += n
            return data[pos - n:pos].decode("utf-8", "replace")
        if t == 9:
            inner, n = take("I"), take("Q")
            return [value(inner) for _ in range(n)]
        if t not in scalar:
            raise ValueError(f"invalid type {t}")
        return take(scalar[t])

    if len(data) < 24:
        raise ValueError("unexpected EOF")
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    for _ in range(n_kv):
        key = value(8)
        meta[key] = value(take("I"))
    return meta


class _Served:
    """A server on 127.0.0.1 (self.httpd) run in a thread while the `with` block lasts."""

    httpd: "_Server"
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOllama(_Served):
    def __init__(self, root: Path, version: str = "0.6.8"):
        self.root, self.version = Path(root), version
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, dict] = {}  # lower-cased display name -> model
        self.upload_faults: list[Fault] = []
        self.create_errors: list[str] = []
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.blob_bytes_received = 0
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _handler_class(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def requests(self, method: str, prefix: str) -> list:
        return [entry for entry in self.log if entry[0] == method and entry[1].startswith(prefix)]

    def is_new(self) -> bool:
        return version_tuple(self.version) >= (0, 5, 5)

    def write_layer(self, data: bytes, media: str) -> tuple[dict, str]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        verb = "using existing" if path.exists() else "creating new"
        if not path.exists():
            path.write_bytes(data)
        return {"mediaType": media, "digest": digest, "size": len(data)}, f"{verb} layer {digest}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # dropped connections are part of the tests; Go's server does not log them either


def _handler_class(fake: FakeOllama):
    class Handler(_Handler):
        server_fake = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOllama

    def log_message(self, *args):  # keep test output clean
        pass

    # ------------------------------------------------------------ plumbing

    def send(self, status: int, body: bytes = b"", ctype: str = "application/json; charset=utf-8",
             close: bool = False):
        self.send_response(status)
        if body or ctype.startswith("text"):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server_fake.log.append((self.command, self.path, status))

    def error(self, status: int, message: str, close: bool = False):
        self.send(status, go_json({"error": message}), close=close)

    def body_chunks(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(CHUNK, left))
            if not chunk:
                raise ConnectionError("client went away")
            left -= len(chunk)
            yield chunk

    def json_body(self):
        raw = b"".join(self.body_chunks())
        if not raw.strip():
            raise CreateFailed(400, "missing request body")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise CreateFailed(400, f"invalid character in JSON: {e.msg}") from None

    def route(self, method: str):
        routes = {
            "/": {"GET": self.root, "HEAD": self.root},
            "/api/version": {"GET": self.version, "HEAD": self.version},
            "/api/tags": {"GET": self.tags, "HEAD": self.tags},
            "/api/show": {"POST": self.show},
            "/api/create": {"POST": self.create},
            "/api/generate": {"POST": self.generate},
        }
        path = self.path.split("?")[0]
        if path.startswith("/api/blobs/") and path.count("/") == 3:
            handlers = {"HEAD": self.head_blob, "POST": self.post_blob}
        else:
            handlers = routes.get(path)
        if handlers is None:
            return self.send(404, b"404 page not found", "text/plain")
        if method not in handlers:
            return self.send(405, b"405 method not allowed", "text/plain")
        try:
            handlers[method]()
        except CreateFailed as e:
            self.error(e.status, str(e))

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("HEAD")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    # ------------------------------------------------------------ simple routes

    def root(self):
        self.send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def version(self):
        self.send(200, go_json({"version": self.server_fake.version}))

    def tags(self):
        fake = self.server_fake
        models = sorted(fake.models.values(), key=lambda m: m["modified"], reverse=True)
        self.send(200, go_json({"models": [{
            "name": m["name"], "model": m["name"], "modified_at": m["modified_at"],
            "size": sum(layer["size"] for layer in m["manifest"]["layers"]),
            "digest": hashlib.sha256(go_json(m["manifest"])).hexdigest(), "details": m["details"],
        } for m in models]}))

    # ------------------------------------------------------------ blobs

    def head_blob(self):
        digest = self.path.rsplit("/", 1)[1]
        if not DIGEST.match(digest):
            return self.error(400, "invalid digest format")
        if not self.server_fake.blob_path(digest).exists():
            return self.error(404, f'blob "{digest}" not found')
        self.send(200)

    def post_blob(self):
        fake = self.server_fake
        digest = self.path.rsplit("/", 1)[1]
        if not DIGEST.match(digest):
            return self.error(400, "invalid digest format", close=True)
        if fake.blob_path(digest).exists():  # answered without reading the body (since v0.1.32)
            return self.send(200, close=True)
        with fake.lock:
            fault = fake.upload_faults.pop(0) if fake.upload_faults else None
        tmp = fake.blobs / f".upload-{threading.get_ident()}-{time.monotonic_ns()}"
        try:
            computed = self.receive(tmp, fault)
            if computed is None:
                return
            fault and fault.kind == "slow" and time.sleep(fault.seconds)
            os.replace(tmp, fake.blob_path(computed))  # kept under its real digest (API.md 2)
        finally:
            tmp.unlink(missing_ok=True)
        if computed != digest:
            return self.error(400, f'digest mismatch, expected "{digest}", got "{computed}"')
        self.send(201)

    def receive(self, tmp: Path, fault: Fault | None) -> str | None:
        """Stream the body to tmp while hashing; None when a fault ended the request."""
        sha, received = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for chunk in self.body_chunks():
                if fault and fault.kind in ("500", "drop") and received + len(chunk) > fault.after:
                    return self.fail(fault)
                if fault and fault.kind == "corrupt" and received <= fault.after < received + len(chunk):
                    i = fault.after - received
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                sha.update(chunk)
                out.write(chunk)
                received += len(chunk)
                with self.server_fake.lock:
                    self.server_fake.blob_bytes_received += len(chunk)
        return "sha256:" + sha.hexdigest()

    def fail(self, fault: Fault) -> None:
        if fault.kind == "500":
            self.error(500, "write /root/.ollama/models/blobs/sha256-partial: no space left on device", close=True)
        else:
            self.close_connection = True
            self.server_fake.log.append((self.command, self.path, 0))
            self.connection.shutdown(2)  # the socket, not the server
        return None

    # ------------------------------------------------------------ create

    def create(self):
        fake = self.server_fake
        req = self.json_body()
        for key, (gotype, pytype) in CREATE_FIELDS.items():
            if key in req and req[key] is not None and (not isinstance(req[key], pytype) or
                                                         (pytype is not bool and isinstance(req[key], bool))):
                jtype = {str: "string", bool: "bool", dict: "object", list: "array"}.get(type(req[key]), "number")
                raise CreateFailed(400, f"json: cannot unmarshal {jtype} into Go struct field "
                                        f"CreateRequest.{key} of type {gotype}")
        steps = self.new_form(req) if fake.is_new() else self.old_form(req)
        self.stream(steps, req.get("stream", True) is not False)

    def stream(self, steps, streaming: bool):
        """Run the create steps; the first message decides between an HTTP error and a stream."""
        try:
            first = next(steps)
        except CreateFailed as e:
            return self.error(e.status, str(e))
        if not streaming:
            try:
                last = [first, *steps][-1]
            except CreateFailed as e:
                return self.error(e.status, str(e))
            return self.send(200, go_json(last))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.server_fake.log.append((self.command, self.path, 200))
        message = first
        while message is not None:
            self.chunk(go_json(message) + b"\n")
            try:
                message = next(steps, None)
            except CreateFailed as e:
                message = None
                self.chunk(go_json({"error": str(e)}) + b"\n")
        self.chunk(b"")

    def chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def new_form(self, req: dict):
        """The v0.5.5+ JSON form (API.md 3.3, 3.4): synchronous checks, then the status steps."""
        fake = self.server_fake
        files = req.get("files") or {}
        if any(not valid_path(k) for k in files):
            raise CreateFailed(400, "file path must be relative")
        if version_tuple(fake.version) >= (0, 17, 6) and any(v == "" for v in files.values()):
            raise CreateFailed(400, "invalid digest format")
        name = normalize(req.get("model") or req.get("name") or "")
        if name is None:
            raise CreateFailed(400, "invalid model name")
        return self.new_steps(req, name, files)

    def new_steps(self, req: dict, name: str, files: dict):
        fake = self.server_fake
        if not files and not req.get("from"):
            raise CreateFailed(400, "neither 'from' or 'files' was specified")
        yield {"status": "parsing GGUF"}
        if fake.create_errors:
            raise CreateFailed(500, fake.create_errors.pop(0))
        (fname, digest), = files.items()
        meta = self.check_gguf(digest)
        layers = []
        status = f"using existing layer {digest}"
        if version_tuple(fake.version) >= (0, 30, 0):
            size = fake.blob_path(digest).stat().st_size
            for done in (size // 2, size):
                yield {"status": "validating GGUF model", "digest": "0" * 19, "total": size, "completed": done}
            yield {"status": "verifying conversion"}
            digest, status = self.rewrite_gguf(digest)
        layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": digest,
                       "size": fake.blob_path(digest).stat().st_size})
        yield {"status": status}
        yield from self.common_layers(req, name, meta, layers, with_config_status=False)

    def rewrite_gguf(self, digest: str) -> tuple[str, str]:
        """v0.30+ stores a copy re-written by llama-quantize (API.md 3.4): same metadata, other
        bytes (here: alignment padding), so the model layer's digest is not the uploaded one."""
        data = self.server_fake.blob_path(digest).read_bytes() + b"\0" * 32
        layer, status = self.server_fake.write_layer(data, "application/vnd.ollama.image.model")
        return layer["digest"], status

    def check_gguf(self, digest: str) -> dict:
        if not DIGEST.match(digest):
            raise CreateFailed(500, "invalid digest format")
        path = self.server_fake.blob_path(digest)
        if not path.exists():
            raise CreateFailed(500, f"open {path}: no such file or directory")
        try:
            return read_gguf_meta(path)
        except TypeError as e:
            raise CreateFailed(400, str(e)) from None
        except (ValueError, UnicodeDecodeError, struct.error):
            raise CreateFailed(500, "unexpected EOF") from None

    def common_layers(self, req, name, meta, layers, with_config_status):
        fake = self.server_fake
        template, system, params = req.get("template"), req.get("system"), req.get("parameters") or {}
        if template is not None:
            try:
                gotemplate.parse(template)
            except gotemplate.GoTemplateError as e:
                raise CreateFailed(400, f"template error: {e}") from None
        for text, media in ((template, "template"), (system, "system")):
            if text:
                layer, status = fake.write_layer(text.encode(), f"application/vnd.ollama.image.{media}")
                layers.append(layer)
                yield {"status": status}
        if params:
            params_bytes = go_json(dict(sorted(params.items()))) + b"\n"
            layer, status = fake.write_layer(params_bytes, "application/vnd.ollama.image.params")
            layers.append(layer)
            yield {"status": status}
        details = {"parent_model": "", "format": "gguf", "family": meta.get("general.architecture", ""),
                   "families": [meta.get("general.architecture", "")], "parameter_size": "3.8B",
                   "quantization_level": "F16"}
        config, status = fake.write_layer(go_json({"model_format": "gguf", **details}),
                                          "application/vnd.docker.container.image.v1+json")
        if with_config_status:
            yield {"status": status}
        yield {"status": "writing manifest"}
        now = datetime.now(timezone.utc)
        with fake.lock:
            fake.models[name.lower()] = {
                "name": name, "manifest": {"schemaVersion": 2, "config": config, "layers": layers},
                "template": template, "system": system, "params": params, "meta": meta,
                "details": details, "modified": time.time(), "modified_at": now.isoformat()}
        yield {"status": "success"}

    def old_form(self, req: dict):
        """Servers before v0.5.5: a Modelfile with FROM @sha256:... (API.md 3.2)."""
        if not req.get("modelfile") and not req.get("path"):
            raise CreateFailed(400, "path or Modelfile are required")
        name = normalize(req.get("model") or req.get("name") or "")
        if name is None:
            raise CreateFailed(400, "invalid model name")
        parsed = parse_old_modelfile(req["modelfile"])  # raises CreateFailed (400/500)
        digest = parsed["from"][1:] if parsed["from"].startswith("@") else ""
        return self.old_steps(parsed, name, digest)

    def old_steps(self, parsed, name, digest):
        fake = self.server_fake
        if not fake.blob_path(digest).exists():
            raise CreateFailed(500, f"open {fake.blob_path(digest)}: no such file or directory")
        meta = self.check_gguf(digest)
        layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": digest,
                   "size": fake.blob_path(digest).stat().st_size}]
        yield {"status": f"using existing layer {digest}"}
        req = {"template": parsed.get("template"), "system": parsed.get("system"), "parameters": parsed["params"]}
        yield from self.common_layers(req, name, meta, layers, with_config_status=True)

    # ------------------------------------------------------------ show and generate

    def lookup(self, req: dict):
        fake = self.server_fake
        sent = req.get("model") or req.get("name") or ""
        if not sent:
            raise CreateFailed(400, "model is required")
        norm = normalize(sent)
        model = fake.models.get((norm or "").lower())
        if model is None:
            shown = norm if version_tuple(fake.version) >= (0, 30, 0) and norm else sent
            raise CreateFailed(404, f"model '{shown}' not found")
        return model

    def show(self):
        model = self.lookup(self.json_body())
        template = model["template"]
        jinja = model["meta"].get("tokenizer.chat_template")
        caps = gotemplate.capabilities(template) if template else ["completion"]
        if version_tuple(self.server_fake.version) >= (0, 30, 0) and jinja and template:
            if prefers_chat_template(jinja, template):  # native mode (API.md 7.4)
                template, caps = jinja, chat_template_capabilities(jinja) + ["completion"]
        params = model["params"]
        lines = [f"{k:<30} {go_value(item)}" for k, v in shuffled(params.items())
                 for item in (v if isinstance(v, list) else [v])]
        info = {k: v for k, v in model["meta"].items()
                if k not in ("general.name", "tokenizer.chat_template") and not isinstance(v, list)}
        blob = self.server_fake.blob_path(model["manifest"]["layers"][0]["digest"])
        body = {"modelfile": show_modelfile(model, blob), "parameters": "\n".join(lines),
                "template": template, "system": model["system"], "details": model["details"],
                "model_info": info, "capabilities": caps, "modified_at": model["modified_at"]}
        self.send(200, go_json({k: v for k, v in body.items() if v}))

    def generate(self):
        req = self.json_body()
        model = self.lookup(req)
        for source in (model["params"], req.get("options") or {}):
            for key, value in source.items():
                problem = option_type_error(key, value)
                if problem:
                    raise CreateFailed(500, problem)
        now = datetime.now(timezone.utc).isoformat()
        done = {"model": req["model"], "created_at": now, "done": True}
        if not req.get("prompt"):
            return self.send(200, go_json({**done, "response": "", "done_reason": "load"}))
        self.send(200, go_json({**done, "response": "Hello", "done_reason": "length", "context": [1, 2],
                                "total_duration": 1, "load_duration": 1, "prompt_eval_count": 1,
                                "prompt_eval_duration": 1, "eval_count": 1, "eval_duration": 1}))


def shuffled(items):
    items = list(items)
    random.shuffle(items)  # Go map order is not stable (API.md 4.1)
    return items


def go_value(v) -> str:
    """Go's %#v of a decoded JSON value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return json.dumps(v, ensure_ascii=False)


def option_type_error(key: str, value) -> str | None:
    kind = OPTION_TYPES.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"integer": number, "float32": number, "boolean": isinstance(value, bool),
          "array": isinstance(value, list)}.get(kind, True)
    if value is None or ok and not (kind == "array" and not all(isinstance(x, str) for x in value)):
        return None
    if kind == "array" and isinstance(value, list):
        return f'option "{key}" must be of an array of strings'
    return f'option "{key}" must be of type {kind}'


def chat_template_capabilities(text: str) -> list:
    """What a GGUF's Jinja template advertises (server/images.go chatTemplateCapabilities)."""
    caps = []
    if "tools" in text or "tool_call" in text:
        caps.append("tools")
    splits = "content.split('</think>')" in text or 'content.split("</think>")' in text
    if ("<think>" in text and "</think>" in text) or (
            splits and "reasoning_content" not in text and "<SPECIAL_12>" not in text):
        caps.append("thinking")
    return caps


def _chat_round_trip(text: str) -> bool:
    calls = "tool_calls" in text or "assistant_tool_call" in text
    results = ("tool_response", "tool_results", "role'] == 'tool'", "role'] == \"tool\"", "role\"] == 'tool'",
               'role"] == "tool"', "message.role == 'tool'", 'message.role == "tool"', "ipython")
    return "tools" in chat_template_capabilities(text) and calls and any(r in text for r in results)


def _go_round_trip(template: str) -> bool:
    return (gotemplate.uses(template, "Tools") and gotemplate.uses(template, "ToolCalls")
            and any(r in template for r in ('eq .Role "tool"', "tool_response", "TOOL_RESULTS")))


def prefers_chat_template(jinja: str, template: str) -> bool:
    """Whether a v0.30+ server runs the GGUF's Jinja template instead of the Go TEMPLATE
    (server/images.go shouldPreferChatTemplate): it advertises more, unless the Go template
    round-trips tool calls and it does not; or the same set with tools and only it round-trips."""
    chat = chat_template_capabilities(jinja)
    go = [c for c in gotemplate.capabilities(template) if c != "completion"]
    if len(chat) > len(go):
        return not _go_round_trip(template) or _chat_round_trip(jinja)
    if set(chat) != set(go) or "tools" not in chat:
        return False
    return _chat_round_trip(jinja) and not _go_round_trip(template)


def show_quote(v: str) -> str:
    if "\n" in v or v != v.strip():
        return f'"""{v}"""' if '"' in v else f'"{v}"'
    return v


def show_modelfile(model: dict, blob: Path) -> str:
    lines = ['# Modelfile generated by "ollama show"',
             "# To build a new Modelfile based on this, replace FROM with:",
             f"# FROM {model['name']}", "", f"FROM {blob}"]
    if model["template"]:
        lines.append(f"TEMPLATE {show_quote(model['template'])}")
    if model["system"]:
        lines.append(f"SYSTEM {show_quote(model['system'])}")
    for k, v in model["params"].items():
        for item in v if isinstance(v, list) else [v]:
            lines.append(f"PARAMETER {k} {show_quote(item if isinstance(item, str) else go_value(item))}")
    return "\n".join(lines) + "\n"


def parse_old_modelfile(text: str) -> dict:
    """The old server-side Modelfile handling: parse, then convert PARAMETERs (API.md 3.2, 5, 6)."""
    out: dict = {"from": None, "params": {}}
    lines, i = re.split(r"\r\n|\r|\n", text), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, rest = re.match(r"(\S+)[ \t]*(.*)", line).groups()
        if word.lower() not in ("from", "template", "system", "parameter", "adapter", "license", "message"):
            raise CreateFailed(400, f'(line {i}): command must be one of "from", "license", "template", '
                                    f'"system", "adapter", "parameter", or "message"')
        key = None
        if word.lower() == "parameter":
            key, _, rest = rest.partition(" ")
            rest = rest.strip()
        for delim in ('"""', '"'):
            if rest.startswith(delim):
                value = rest[len(delim):]
                while not value.rstrip().endswith(delim):
                    if i >= len(lines):
                        raise CreateFailed(400, "unexpected EOF")
                    value += "\n" + lines[i]
                    i += 1
                rest = value.rstrip()[:-len(delim)]
                break
        if key is not None:
            add_old_param(out["params"], key, rest)
        else:
            out[word.lower()] = rest
    if not out["from"]:
        raise CreateFailed(400, "no FROM line")
    return out


def add_old_param(params: dict, key: str, text: str) -> None:
    kind = OPTION_TYPES.get(key)
    converters = {"integer": ("int", int), "float32": ("float", float),
                  "boolean": ("bool", lambda s: {"true": True, "false": False}[s.lower()])}
    if kind is None:
        raise CreateFailed(500, f"unknown parameter '{key}'")
    if kind == "array":
        params.setdefault(key, []).append(text)
        return
    label, convert = converters[kind]
    try:
        params[key] = convert(text)
    except (ValueError, KeyError):
        raise CreateFailed(500, f"invalid {label} value [{text}]") from None


class NotOllama(_Served):
    """A host that answers HTTP but is not Ollama: "html" (a web page for every path), "404"
    (every path not found, as a proxy or another service answers) or "garbage" (200 with a
    body that is not JSON)."""

    ANSWERS = {"html": (200, "text/html; charset=utf-8", b"<!DOCTYPE html>\n<html><body>Welcome to nginx!</body></html>"),
               "404": (404, "text/plain; charset=utf-8", b"404 page not found"),
               "garbage": (200, "application/json", b"{\"version\": 0.5.7,,")}

    def __init__(self, kind: str):
        status, ctype, body = self.ANSWERS[kind]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length) if length < (1 << 20) else None
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = answer

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)


if __name__ == "__main__":  # python tests/fakes/ollama_server.py ROOT [VERSION]: serve until stdin closes
    import sys

    with FakeOllama(Path(sys.argv[1]), *sys.argv[2:3]) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()
