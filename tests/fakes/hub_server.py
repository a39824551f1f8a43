"""A fake Hugging Face hub: real HTTP on 127.0.0.1 answering the routes huggingface_hub 2.x calls,
with the headers and error codes its client reads (huggingface_hub/file_download.py,
hf_api.py model_info/list_repo_tree, utils/_http.py hf_raise_for_status).

Routes (hub origin):
  GET  /api/models/{repo}[/revision/{rev}]     model info: sha, gated, config, gguf, siblings
                                               (?blobs=true adds size, blobId, lfs like the hub)
  GET  /api/models/{repo}/tree/{rev}           recursive listing (one page: no Link header)
  HEAD/GET /{repo}/resolve/{rev}/{path}        small files: 200 + ETag (git blob sha1), X-Repo-Commit,
                                               Content-Length. LFS files: 302 to the CDN origin with
                                               X-Linked-Etag (sha256) and X-Linked-Size, as the hub does
CDN origin (a second port, so the client treats it as off-hub: no auth header, no HEAD follow):
  GET  /lfs/{sha256}                           200, or 206 + Content-Range for `Range: bytes=N-`

Errors as the hub sends them, in X-Error-Code / X-Error-Message headers:
  unknown or private repo: 401 RepoNotFound without a token, 404 with one
  gated repo: 401 GatedRepo without a token, 403 GatedRepo with a token not on the list
  unknown revision: 404 RevisionNotFound; unknown file: 404 EntryNotFound (+ X-Repo-Commit)

Write routes (huggingface_hub's create_repo / create_branch / create_commit path, hf_api.py and
_commit_api.py / lfs.py), all needing a token that `add_writer` allowed for the repo's namespace:
  POST /api/repos/create                       {name, organization, type, visibility}; 409 if it exists
  POST /api/models/{repo}/branch/{branch}      a branch at main's head; 409 if it exists
  POST /api/validate-yaml                      the README's front matter must parse as a YAML mapping
  POST /api/models/{repo}/preupload/{rev}      uploadMode (lfs / regular, the same rule the reads use)
                                               and the file's current oid, so unchanged files are skipped
  POST /{repo}.git/info/lfs/objects/batch      basic transfer: upload + verify actions for blobs the hub
                                               lacks, none for blobs it has (an earlier, failed run's too)
  PUT  (CDN) /upload/{sha256}                  the blob; its sha256 must match
  POST /{repo}.git/info/lfs/objects/verify     200 once the blob is stored
  POST /api/models/{repo}/commit/{rev}         ndjson header / file / lfsFile / deletedFile lines: one
                                               new commit, recorded in `commits`; lfsFile blobs must exist
`fail_upload(data, status)` makes every PUT of that blob fail; `drop_upload_once(data)` cuts the
connection after reading half of the next PUT of it.

No Xet: responses never carry X-Xet-Hash / xetHash, so the client takes the plain HTTP path
for downloads. Uploads take Xet whenever hf_xet is importable, so publish tests switch it off
(huggingface_hub.constants.HF_HUB_DISABLE_XET, see fixtures/publish_fixtures.py). `drop_once(path)` makes the CDN send the headers and half
of that file's body, then cut the connection, once. `hold(repo, path, after)` makes the CDN send
the first `after` bytes of that file, then wait until the returned event is set before sending the
rest, once (a download caught in the middle, for kill and Ctrl-C tests). `requests` records every
request.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Which files the hub stores in LFS: its default .gitattributes patterns, plus anything large.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".model", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict  # names lower-cased


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    private: bool = False
    tokens: tuple[str, ...] = ()  # tokens with access (private or gated repos)
    branches: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files (after commits)
    gguf_arch: str | None = None  # what the hub's model info reports as the GGUF architecture

    def __post_init__(self):
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.sha = digest.hexdigest()
        self.branches = {"main": self.sha, **self.branches}

    def commit(self, rev: str) -> str | None:
        return rev if rev == self.sha or rev in self.snapshots else self.branches.get(rev)

    def at(self, rev: str) -> "FakeRepo":
        """The repo as of `rev` (a branch or commit written by a commit); itself for main's head."""
        sha = self.commit(rev)
        if sha is None or sha == self.sha or sha not in self.snapshots:
            return self
        view = copy.copy(self)
        view.files, view.sha = self.snapshots[sha], sha
        return view

    def is_lfs(self, name: str) -> bool:
        return stored_in_lfs(name, len(self.files[name]))

    def blob_id(self, name: str) -> str:
        """git's blob id: of the content, or of the LFS pointer file for LFS files."""
        data = self.pointer(name) if self.is_lfs(name) else self.files[name]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def pointer(self, name: str) -> bytes:
        data = self.files[name]
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                f"size {len(data)}\n").encode()

    def lfs(self, name: str, key: str) -> dict | None:
        if not self.is_lfs(name):
            return None
        return {key: hashlib.sha256(self.files[name]).hexdigest(), "size": len(self.files[name]),
                "pointerSize": len(self.pointer(name))}


def stored_in_lfs(name: str, size: int) -> bool:
    return name.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def repo_from_folder(repo_id: str, folder: Path, **kwargs) -> FakeRepo:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return FakeRepo(repo_id, files, **kwargs)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        self.status, self.code, self.message, self.commit = status, code, message, commit


class FakeHub:
    """Start with `with FakeHub() as hub:`; `hub.url` is the HF_ENDPOINT."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.drops: set[str] = set()  # sha256 of LFS blobs to cut halfway, once
        self.holds: dict[str, tuple[int, threading.Event]] = {}  # sha256 -> (bytes sent first, go on)
        self.writers: dict[str, set[str]] = {}  # token -> namespaces it may write to
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> blob uploaded through the LFS batch API
        self.upload_failures: dict[str, int] = {}  # sha256 -> HTTP status every PUT of it gets
        self.upload_drops: set[str] = set()  # sha256 of blobs whose next PUT is cut halfway
        self.commits: list[Commit] = []
        self._servers = [self._server("hub"), self._server("cdn")]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)

    def _server(self, role: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.hub, server.role = self, role
        return server

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def drop_once(self, repo_id: str, path: str) -> None:
        self.drops.add(hashlib.sha256(self.repos[repo_id].files[path]).hexdigest())

    def hold(self, repo_id: str, path: str, after: int) -> threading.Event:
        go_on = threading.Event()
        self.holds[hashlib.sha256(self.repos[repo_id].files[path]).hexdigest()] = (after, go_on)
        return go_on

    def add_writer(self, token: str, *namespaces: str) -> None:
        """A token that may create repos in, and commit to, these namespaces (none: read only)."""
        self.writers[token] = set(namespaces)

    def fail_upload(self, data: bytes, status: int = 403) -> None:
        self.upload_failures[hashlib.sha256(data).hexdigest()] = status

    def drop_upload_once(self, data: bytes) -> None:
        self.upload_drops.add(hashlib.sha256(data).hexdigest())

    def start(self) -> "FakeHub":
        for s in self._servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ lookups

    def repo(self, repo_id: str, token: str | None) -> FakeRepo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token not in repo.tokens):
            raise HubError(404 if token else 401, "RepoNotFound", "Repository not found")
        return repo

    def check_gate(self, repo: FakeRepo, token: str | None) -> None:
        if not repo.gated or token in repo.tokens:
            return
        if token is None:
            raise HubError(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have access "
                           "to it and be authenticated to access it. Please log in.")
        raise HubError(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not in the "
                       f"authorized list. Visit https://huggingface.co/{repo.repo_id} to ask for access.")

    def commit(self, repo: FakeRepo, rev: str) -> str:
        sha = repo.commit(rev)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    def blob(self, sha256: str) -> bytes | None:
        if sha256 in self.lfs_store:
            return self.lfs_store[sha256]
        return next((data for repo in self.repos.values() for name, data in repo.files.items()
                     if repo.is_lfs(name) and repo.lfs(name, "sha256")["sha256"] == sha256), None)

    def check_write(self, namespace: str, token: str | None) -> None:
        if token is None:
            raise HubError(401, None, "Unauthorized: a token with write access is needed")
        if token not in self.writers:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if namespace not in self.writers[token]:
            raise HubError(403, None, f"You don't have the rights to write to the namespace {namespace}")


@dataclass
class Commit:
    repo_id: str
    revision: str
    summary: str
    description: str
    paths: list[str]  # added, changed or deleted
    sha: str


def model_info(repo: FakeRepo, blobs: bool) -> dict:
    siblings = []
    for name in sorted(repo.files):
        s = {"rfilename": name}
        if blobs:
            s |= {"size": len(repo.files[name]), "blobId": repo.blob_id(name)}
            if repo.is_lfs(name):
                s["lfs"] = repo.lfs(name, "sha256")
        siblings.append(s)
    info = {"_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": repo.sha, "lastModified": "2024-08-20T00:00:00.000Z", "private": repo.private,
            "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings, "createdAt": "2024-08-16T00:00:00.000Z"}
    if "config.json" in repo.files:
        config = json.loads(repo.files["config.json"])
        info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
    if any(n.endswith(".gguf") for n in repo.files):
        info["gguf"] = {"total": 0, **({"architecture": repo.gguf_arch} if repo.gguf_arch else {})}
    return info


def tree(repo: FakeRepo) -> list[dict]:
    folders = sorted({p for name in repo.files for p in _parents(name)})
    entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "path": f} for f in folders]
    for name in sorted(repo.files):
        entry = {"type": "file", "oid": repo.blob_id(name), "size": len(repo.files[name]), "path": name}
        if repo.is_lfs(name):
            entry["lfs"] = repo.lfs(name, "oid")
        entries.append(entry)
    return entries


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+)|/tree/(?P<tree>[^/]+)(?:/.*)?)?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
CDN = re.compile(r"^/lfs/(?P<sha>[0-9a-f]{64})$")
UPLOAD = re.compile(r"^/upload/(?P<sha>[0-9a-f]{64})$")
WRITE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|branch)/(?P<rev>[^/]+)$")
LFS_API = re.compile(r"^/(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/(?P<op>batch|verify)$")
RANGE = re.compile(r"^bytes=(\d+)-$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length, like the hub's front end

    def log_message(self, *args):
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def do_HEAD(self):
        self.route(body=False)

    def do_GET(self):
        self.route(body=True)

    def do_POST(self):
        self.write_route()

    def do_PUT(self):
        self.write_route()

    def route(self, body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            if self.server.role == "cdn":
                return self.cdn(path, body)
            if m := API.match(path):
                return self.api(m, parse_qs(url.query))
            if m := RESOLVE.match(path):
                return self.resolve(m, body)
            raise HubError(404, None, "Not found")
        except HubError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self.send(e.status, json.dumps({"error": e.message}).encode(), headers, body, "application/json")

    def api(self, m: re.Match, query: dict) -> None:
        repo = self.hub.repo(m["repo"], self.token())
        if m["tree"] is not None:
            self.hub.commit(repo, m["tree"])
            return self.send(200, json.dumps(tree(repo.at(m["tree"]))).encode(), {}, True, "application/json")
        if m["rev"] is not None:
            self.hub.commit(repo, m["rev"])
            repo = repo.at(m["rev"])
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        self.send(200, json.dumps(model_info(repo, blobs)).encode(), {}, True, "application/json")

    def resolve(self, m: re.Match, body: bool) -> None:
        token = self.token()
        repo = self.hub.repo(m["repo"], token)
        self.hub.check_gate(repo, token)
        sha = self.hub.commit(repo, m["rev"])
        repo = repo.at(m["rev"])
        name = m["path"]
        if name not in repo.files:
            raise HubError(404, "EntryNotFound", f"Entry not found: {name}", commit=sha)
        common = {"X-Repo-Commit": sha, "ETag": f'"{repo.blob_id(name)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(name):
            lfs = repo.lfs(name, "sha256")
            location = f"{self.hub.cdn_url}/lfs/{lfs['sha256']}?name={Path(name).name}"
            headers = {**common, "Location": location, "X-Linked-Etag": f'"{lfs["sha256"]}"',
                       "X-Linked-Size": str(lfs["size"])}
            return self.send(302, f"Found. Redirecting to {location}".encode(), headers, body, "text/plain")
        self.send(200, repo.files[name], common, body, "application/octet-stream")

    def cdn(self, path: str, body: bool) -> None:
        m = CDN.match(path)
        data = self.hub.blob(m["sha"]) if m else None
        if data is None:
            raise HubError(404, None, "NoSuchKey")
        headers = {"ETag": f'"{m["sha"]}"', "Accept-Ranges": "bytes"}
        start = 0
        if r := RANGE.match(self.headers.get("Range", "")):
            start = int(r[1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if start else 200
        if body and m["sha"] in self.hub.drops:
            self.hub.drops.discard(m["sha"])
            return self.cut(status, data[start:], headers)
        if body and m["sha"] in self.hub.holds:
            return self.held(status, data[start:], headers, *self.hub.holds.pop(m["sha"]))
        self.send(status, data[start:], headers, body, "application/octet-stream")

    def cut(self, status: int, data: bytes, headers: dict) -> None:
        """Promise the whole body, send half of it, then drop the connection."""
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def held(self, status: int, data: bytes, headers: dict, after: int, go_on: threading.Event) -> None:
        """Send `after` bytes, wait for `go_on` (a minute at most), then the rest if the client is still there."""
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data[:after])
            self.wfile.flush()
            go_on.wait(60)
            self.wfile.write(data[after:])
        except (BrokenPipeError, ConnectionResetError):  # the client was killed or interrupted
            self.close_connection = True

    def send(self, status: int, data: bytes, headers: dict, body: bool, ctype: str) -> None:
        self.send_response(status)
        for k, v in {"Content-Type": ctype, **headers, "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    # ------------------------------------------------------------------ the write routes

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def write_route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            if self.server.role == "cdn":
                return self.upload(path)
            data = self.read_body()
            if path == "/api/repos/create":
                return self.create_repo(json.loads(data))
            if path == "/api/validate-yaml":
                return self.validate_yaml(json.loads(data))
            if m := WRITE.match(path):
                repo = self.hub.repo(m["repo"], self.token())
                self.hub.check_write(m["repo"].split("/")[0], self.token())
                return getattr(self, m["op"])(repo, m["rev"], data)
            if m := LFS_API.match(path):
                repo = self.hub.repo(m["repo"], self.token())
                self.hub.check_write(m["repo"].split("/")[0], self.token())
                return self.lfs_batch(json.loads(data)) if m["op"] == "batch" else self.lfs_verify(json.loads(data))
            raise HubError(404, None, "Not found")
        except HubError as e:  # the body may be unread: close, and say so, or the client reuses the connection
            headers = {"X-Error-Message": e.message, "Connection": "close", **({"X-Error-Code": e.code} if e.code else {})}
            self.send(e.status, json.dumps({"error": e.message}).encode(), headers, True, "application/json")

    def reply(self, payload, status: int = 200) -> None:
        self.send(status, json.dumps(payload).encode(), {}, True, "application/json")

    def create_repo(self, body: dict) -> None:
        namespace, name = body.get("organization"), body["name"]
        token = self.token()
        if namespace is None:  # the token's own namespace
            namespace = next(iter(self.hub.writers.get(token) or ["anonymous"]))
        repo_id = f"{namespace}/{name}"
        self.hub.check_write(namespace, token)
        if body.get("type", "model") != "model":
            raise HubError(400, None, "This fake hub only holds model repos")
        if repo_id in self.hub.repos:  # the hub's 409 carries the url too (create_repo(exist_ok=True) reads it)
            message = "You already created this model repo"
            return self.send(409, json.dumps({"error": message, "url": f"{self.hub.url}/{repo_id}"}).encode(),
                             {"X-Error-Message": message}, True, "application/json")
        private = body.get("visibility") == "private" or bool(body.get("private"))
        attributes = b"*.gguf filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.hub.add(FakeRepo(repo_id, {".gitattributes": attributes}, private=private, tokens=(token,)))
        self.reply({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, body: dict) -> None:
        from huggingface_hub import ModelCard

        try:
            ModelCard(body.get("content", ""))
        except Exception as e:  # yaml's errors, or "metadata block should be a dict"
            return self.reply({"errors": [{"message": f"Invalid YAML metadata: {e}"}]}, 400)
        self.reply({"errors": [], "warnings": []})

    def branch(self, repo: FakeRepo, branch: str, data: bytes) -> None:
        if branch in repo.branches:
            raise HubError(409, None, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = repo.sha
        repo.snapshots.setdefault(repo.sha, dict(repo.files))
        self.reply({})

    def preupload(self, repo: FakeRepo, rev: str, data: bytes) -> None:
        self.hub.commit(repo, rev)
        current = repo.at(rev)
        files = []
        for f in json.loads(data)["files"]:
            lfs = stored_in_lfs(f["path"], f["size"])
            oid = None
            if f["path"] in current.files:
                oid = (current.lfs(f["path"], "sha256") or {}).get("sha256") if lfs else current.blob_id(f["path"])
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self.reply({"files": files, "commitOid": current.sha})

    def lfs_batch(self, body: dict) -> None:
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if self.hub.blob(obj["oid"]) is None:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.cdn_url}/upload/{obj['oid']}"},
                    "verify": {"href": f"{self.hub.url}/{self.path.split('.git/')[0].lstrip('/')}"
                               ".git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        self.reply({"transfer": "basic", "objects": objects})

    def lfs_verify(self, body: dict) -> None:
        if self.hub.blob(body["oid"]) is None:
            raise HubError(404, None, f"Object {body['oid']} was never uploaded")
        self.reply({})

    def upload(self, path: str) -> None:
        m = UPLOAD.match(path)
        if not m or self.command != "PUT":
            raise HubError(404, None, "NoSuchKey")
        sha = m["sha"]
        if sha in self.hub.upload_drops:  # the network goes down halfway through the body
            self.hub.upload_drops.discard(sha)
            self.rfile.read(max(int(self.headers.get("Content-Length") or 2) // 2, 1))
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        data = self.read_body()
        if sha in self.hub.upload_failures:
            raise HubError(self.hub.upload_failures[sha], None, "Request has expired")
        if hashlib.sha256(data).hexdigest() != sha:
            raise HubError(400, None, "BadDigest: the body does not match its sha256")
        self.hub.lfs_store[sha] = data
        self.send(200, b"", {"ETag": f'"{sha}"'}, True, "text/plain")

    def commit(self, repo: FakeRepo, rev: str, data: bytes) -> None:
        parent = self.hub.commit(repo, rev)
        files = dict(repo.at(rev).files)
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        paths = []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                blob = self.hub.blob(value["oid"])
                if blob is None:
                    raise HubError(422, None, f"Your push was rejected because an LFS pointer pointed to a file "
                                   f"that does not exist ({value['path']})")
                files[value["path"]] = blob
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
            else:
                continue
            paths.append(value["path"])
        sha = hashlib.sha1(parent.encode() + data).hexdigest()
        repo.snapshots[sha] = files
        repo.branches[rev] = sha
        if rev == "main":
            repo.files, repo.sha = files, sha
        self.hub.commits.append(Commit(repo.repo_id, rev, header["summary"], header.get("description", ""), paths, sha))
        self.reply({"commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{sha}", "commitOid": sha, "success": True})
