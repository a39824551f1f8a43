"""`llm phi publish`: GGUF files, their quality reports, the importance matrix and the family's
Ollama Modelfile to a Hugging Face model repo, with a model card (model_card.py), in one commit.

Everything local is checked first (files, split parts, reports, one family); then the repo is
read (what it holds, its card); then one `create_commit` carries every file that is new or
changed. huggingface_hub uploads the large files to LFS storage before the commit, and skips blobs
the hub already has, so a failed run leaves no commit and the next run sends only what is missing.
Its errors become one HubError line (hub.hub_errors with our own table).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HubError, PhiError
from .files import sha256_hex
from .publish_sources import MODELFILE, REPORT_SUFFIX, LocalModel

CARD = "README.md"
OTHER_TYPES = re.compile(r"^(?:https?://[^/]+/)?(?P<kind>datasets|spaces)/")
HUB_URL = re.compile(r"^https?://[^/]+/(?:models/)?")


@dataclass
class Upload:
    path_in_repo: str
    what: str
    local: Path | None = None
    data: bytes | None = None  # generated files (card, Modelfile)
    status: str = "new"  # new, changed or unchanged (compared with the repo)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.local.stat().st_size


@dataclass
class Published:
    repo_id: str
    revision: str
    card: str
    uploads: list[Upload]
    commit_url: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[Upload]:
        return [u for u in self.uploads if u.status != "unchanged"]


# ----------------------------------------------------------------------------- errors


def _http(e, c) -> str:
    status = e.response.status_code
    if not str(e.response.url).startswith(c["endpoint"]):  # the LFS storage server, not the hub
        return f"The upload to {c['repo']} failed at the storage server (HTTP {status}); nothing was published"
    if status == 401:
        return f"The hub at {c['endpoint']} refused your Hugging Face token"
    if status == 403:
        return f"Your Hugging Face token has no write access to {c['repo']}"
    return f"The hub answered HTTP {status} while publishing to {c['repo']}; nothing was published"


def _http_hint(e, c) -> str:
    status = e.response.status_code
    if not str(e.response.url).startswith(c["endpoint"]):
        return "run the command again: files already uploaded are not sent again"
    if status == 401:
        return f"create a write token at {c['endpoint']}/settings/tokens, then set HF_TOKEN or run `hf auth login`"
    if status == 403:
        return (f"log in with a write token of {c['repo'].split('/')[0]} (`hf auth login`), or publish to your own "
                f"namespace: --repo YOUR-NAME/{c['repo'].split('/')[1]}")
    return "try again later; nothing was published"


ERRORS = (  # for hub.hub_errors: (class name, message, next step), first match wins
    ("RepositoryNotFoundError", "{repo} is not a repo on {endpoint}, or your token cannot see it",
     "check --repo; a new repo is created only in a namespace your token may write to"),
    ("HfHubHTTPError", _http, _http_hint),
    ("TransportError", "The connection to the hub at {endpoint} failed while publishing to {repo}; "
     "nothing was published", "check your connection and run the command again: files already uploaded "
     "are not sent again"),
)


def no_token(endpoint: str) -> HubError:
    return HubError("Publishing needs a Hugging Face token with write access, and none is set",
                    hint=f"create one at {endpoint}/settings/tokens, then set HF_TOKEN or run `hf auth login`")


# ----------------------------------------------------------------------------- the repo


def parse_target(repo: str) -> str:
    """The model repo id of --repo (owner/name, or its hub URL); refuse datasets and spaces."""
    from .hub import REPO_ID

    if m := OTHER_TYPES.match(repo):
        raise HubError(f"{repo} is a {m['kind'][:-1]} repo; publish writes GGUF files to model repos",
                       hint="give a model repo: --repo OWNER/NAME")
    repo_id = HUB_URL.sub("", repo).strip("/")
    m = REPO_ID.match(repo_id)
    if not m or m["rev"] or ".." in repo_id or "--" in repo_id:
        raise HubError(f"{repo!r} is not a Hugging Face repo id",
                       hint="use --repo OWNER/NAME (and --revision for a branch)")
    return repo_id


def find_token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` saved. huggingface_hub fixes the token file's path
    at import, from HF_HOME: read it here, from the environment as it is now."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if (value := os.environ.get(var, "").strip()):
            return value
    home = os.environ.get("HF_HOME")
    path = os.environ.get("HF_TOKEN_PATH") or (os.path.join(os.path.expanduser(home), "token") if home else None)
    if path is None:
        from huggingface_hub import get_token

        return get_token()
    try:
        return Path(path).read_text("utf-8").strip() or None
    except FileNotFoundError:
        return None


@dataclass
class RepoState:
    exists: bool
    private: bool = False
    files: dict = field(default_factory=dict)  # path -> (size, sha256 of an LFS file or None, git blob id)
    card: str | None = None
    sha: str | None = None


def repo_state(api, hub, token, repo_id: str, revision: str) -> RepoState:
    """What the repo holds at `revision` (main's files for a branch still to be made), and its card."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        try:
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
        except RevisionNotFoundError:
            revision = "main"
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except RepositoryNotFoundError:
        return RepoState(False)
    files = {s.rfilename: (s.size, s.lfs.sha256 if s.lfs else None, s.blob_id) for s in info.siblings or []}
    state = RepoState(True, bool(info.private), files, sha=info.sha)
    if CARD in files:
        state.card = read_text(hub, token, repo_id, state, CARD)
    return state


def read_text(hub, token, repo_id: str, state: RepoState, name: str) -> str:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, name, revision=state.sha, cache_dir=hub.cache_dir, endpoint=hub.endpoint,
                           token=token)
    return Path(path).read_text("utf-8")


def remote_rows(hub, token, repo_id: str, state: RepoState, local: list[LocalModel]) -> list:
    """Card rows for the GGUFs the repo holds besides the ones published now, with their reports."""
    import json

    from .hub import Listing, file_type, gguf_groups, _type_pattern
    from .model_card import FileRow
    from .store import default_alias

    ours = {p.name for m in local for p in m.parts}
    listing = Listing(repo_id, "", state.sha or "", {k: v[0] for k, v in state.files.items()})
    rows, pattern = [], _type_pattern()
    for parts in gguf_groups(listing).values():
        if set(parts) & ours:
            continue
        qtype = file_type(parts[0], pattern) or "unknown"
        report = None
        if parts[0] + REPORT_SUFFIX in state.files:
            try:
                report = json.loads(read_text(hub, token, repo_id, state, parts[0] + REPORT_SUFFIX))
                report["rows"][0]["bpw"]
            except (ValueError, KeyError, IndexError, TypeError):
                report = None  # someone else's file: the card shows n/a rather than failing the publish
        quality = report["rows"] if report else [None, None]
        rows.append(FileRow(parts[0], parts, qtype, sum(state.files[p][0] or 0 for p in parts),
                            quality[0]["bpw"] if report else float("nan"), default_alias(local[0].family, qtype),
                            quality[0], quality[-1] if report else None, (report or {}).get("n_tokens")))
    return rows


def source_card(hub, token, repo_id: str) -> dict:
    """license and pipeline_tag of the source model's card, from the cache or the hub; {} if unknown."""
    from huggingface_hub import ModelCard, hf_hub_download, try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, CARD, cache_dir=hub.cache_dir)
    try:
        if not isinstance(path, str) and not hub.offline:
            path = hf_hub_download(repo_id, CARD, cache_dir=hub.cache_dir, endpoint=hub.endpoint, token=token)
        data = ModelCard(Path(path).read_text("utf-8"), ignore_metadata_errors=True).data
    except Exception:  # the source card is optional: gated, missing, offline, malformed
        return {}
    return {"license": data.license, "pipeline_tag": data.pipeline_tag}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def compare(upload: Upload, remote: dict) -> str:
    """new, changed or unchanged: by size, then by the hub's sha256 (LFS) or git blob id."""
    if upload.path_in_repo not in remote:
        return "new"
    size, sha256, blob_id = remote[upload.path_in_repo]
    if size is not None and size != upload.size:
        return "changed"
    if sha256:
        same = (hashlib.sha256(upload.data).hexdigest() if upload.data is not None else sha256_hex(upload.local)) == sha256
    else:
        same = git_blob_id(upload.data if upload.data is not None else upload.local.read_bytes()) == blob_id
    return "unchanged" if same else "changed"


def plan_uploads(models: list[LocalModel], imatrix_files: list[Path], card: str, modelfile: str) -> list[Upload]:
    uploads = []
    for m in models:
        uploads += [Upload(p.name, "GGUF " + m.qtype, local=p) for p in m.parts]
        if m.report_path:
            uploads.append(Upload(m.parts[0].name + REPORT_SUFFIX, "quality report", local=m.report_path))
    uploads += [Upload(p.name, "importance matrix", local=p) for p in imatrix_files]
    uploads += [Upload(MODELFILE, "Ollama Modelfile", data=modelfile.encode()),
                Upload(CARD, "model card", data=card.encode())]
    names: dict[str, Upload] = {}
    for u in uploads:
        if (other := names.setdefault(u.path_in_repo, u)) is not u:
            raise PhiError(f"Two files would be {u.path_in_repo} in the repo ({other.local or other.what} and "
                           f"{u.local or u.what})", hint="rename one of them")
    return uploads


def publish(models: list[str], repo: str, *, private: bool = False, revision: str | None = None,
            message: str | None = None, dry_run: bool = False, imatrix: list | None = None,
            base: str | None = None, echo=print) -> Published:
    """`llm phi publish`: plan the files and the card, then (unless dry_run) one commit to `repo`."""
    from huggingface_hub import HfApi

    from .hub import Hub, hub_errors
    from .publish_sources import load_models

    repo_id, revision = parse_target(repo), revision or "main"
    local = load_models(models)  # local problems first: nothing is sent before they are ruled out
    imatrix_files = [Path(p).expanduser().absolute() for p in imatrix or []]
    hub = Hub.from_env()
    token = find_token()
    if token is None and not dry_run:
        raise no_token(hub.endpoint)
    if hub.offline and not dry_run:
        raise HubError("HF_HUB_OFFLINE is set, and publishing needs the hub", hint="unset HF_HUB_OFFLINE")
    api = HfApi(endpoint=hub.endpoint, token=token or False)
    with hub_errors(hub, repo_id, revision, table=ERRORS):
        state = RepoState(False) if hub.offline else repo_state(api, hub, token, repo_id, revision)
        result = plan(hub, token, repo_id, revision, state, local, imatrix_files, base)
        if hub.offline:
            result.notes.append("HF_HUB_OFFLINE is set: the repo was not read, so every file shows as new")
        if state.exists and private and not state.private:
            result.notes.append(f"{repo_id} already exists and is public; --private does not change that "
                                "(change it in the repo's settings)")
        if dry_run:
            return result
        if not result.changed:
            result.notes.append(f"{repo_id}@{revision} already holds these files; nothing was committed")
            return result
        if not state.exists:  # exist_ok still: someone may create it meanwhile
            api.create_repo(repo_id, private=private, exist_ok=True)
    with created_empty(repo_id, hub.endpoint, not state.exists), hub_errors(hub, repo_id, revision, table=ERRORS):
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        echo(f"Uploading {len(result.changed)} file(s), {sum(u.size for u in result.changed) / 1e6:.1f} MB, "
             f"to {repo_id}@{revision}")
        result.commit_url = commit(api, repo_id, revision, result.changed, message, local).commit_url
    return result


@contextlib.contextmanager
def created_empty(repo_id: str, endpoint: str, created: bool):
    """A failure after this command created the repo says so: the repo stays (deleting it would
    throw away the blobs already uploaded, which the next run does not send again), empty."""
    try:
        yield
    except PhiError as e:
        if not created:
            raise
        raise HubError(f"{e}; {repo_id} was created by this command and stays empty until a publish "
                       f"succeeds (delete it at {endpoint}/{repo_id}/settings if you give up)") from None


def plan(hub, token, repo_id: str, revision: str, state: RepoState, local: list[LocalModel],
         imatrix_files: list[Path], base: str | None) -> Published:
    """The card and every file with its status (new, changed, unchanged) against the repo."""
    from . import model_card
    from .families import get_family
    from .publish_sources import base_model, facts, imatrix_line, modelfile_text, recorded_imatrix

    lines = [imatrix_line(p) for p in imatrix_files] or recorded_imatrix(local)
    base = base or base_model(local, get_family(local[0].family))
    others = remote_rows(hub, token, repo_id, state, local) if state.exists else []
    card = model_card.render(facts(repo_id, local, lines, source_card(hub, token, base), base, others), state.card)
    uploads = plan_uploads(local, imatrix_files, card, modelfile_text(local[0]))
    for u in uploads:
        u.status = compare(u, state.files)
    return Published(repo_id, revision, card, uploads)


def commit(api, repo_id: str, revision: str, changed: list[Upload], message: str | None, models: list[LocalModel]):
    """One commit of the new and changed files (huggingface_hub uploads the LFS ones first)."""
    from huggingface_hub import CommitOperationAdd

    from .publish_sources import package_version

    ops = [CommitOperationAdd(u.path_in_repo, u.data if u.data is not None else str(u.local)) for u in changed]
    types = ", ".join(dict.fromkeys(m.qtype for m in models))
    summary = message or f"Publish {types} GGUF with llm-phi-gguf {package_version('llm-phi-gguf')}"
    description = "\n".join(f"- {u.path_in_repo} ({u.what}, {u.status})" for u in changed)
    return api.create_commit(repo_id, ops, commit_message=summary, commit_description=description,
                             revision=revision)
