"""`llm phi publish`: GGUF files, their quality reports, the importance matrix and the family's
Ollama Modelfile to a Hugging Face model repo, with a model card (model_card.py), in one commit.

Everything local is checked first (files, split parts, reports, one family); then the repo is
read (what it holds, its card); then one `create_commit` carries every file that is new or
changed. huggingface_hub uploads the large files to LFS storage before the commit, and skips blobs
the hub already has, so a failed run leaves no commit and the next run sends only what is missing.
Its errors become one HubError line (hub.hub_errors with our own table).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GGUFError, HubError, PhiError, RegistryError

CARD = "README.md"
MODELFILE = "Modelfile"
REPORT_SUFFIX = ".quality.json"
REPORT_KEYS = ("ppl", "kld_mean", "kld_p99", "top1")
OTHER_TYPES = re.compile(r"^(?:https?://[^/]+/)?(?P<kind>datasets|spaces)/")
HUB_URL = re.compile(r"^https?://[^/]+/(?:models/)?")
CACHE_REPO = re.compile(r"models--(?P<owner>[\w.-]+?)--(?P<name>[\w.-]+)(?:/|$)")
HF_REPO_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[\w.-]+/[\w.-]+?)/?$")
HASH_CHUNK = 4 << 20


@dataclass
class LocalModel:
    """One MODEL_OR_FILE: a GGUF (every part of a split one) with what we know about it."""

    parts: list[Path]
    family: str
    qtype: str
    metadata: dict
    bpw: float
    report: dict | None = None
    report_path: Path | None = None


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


# ----------------------------------------------------------------------------- local files


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


def find_file(arg: str):
    """(absolute GGUF path, registry entry or None) for a path or a registered alias."""
    from . import store

    candidate = Path(arg).expanduser()
    if candidate.is_file():
        path = candidate.absolute()
        return path, next((e for e in store.load().values() if Path(e.path).absolute() == path), None)
    if candidate.exists() or arg.endswith(".gguf") or os.sep in arg:
        raise GGUFError(f"{arg} does not exist" if not candidate.exists() else f"{arg} is not a file",
                        hint="give a GGUF file, or an alias from `llm phi models`")
    try:
        entry = store.get(arg)
    except RegistryError:
        raise PhiError(f"{arg} is neither a GGUF file nor a registered model",
                       hint="give a path to a .gguf file, or an alias from `llm phi models`") from None
    path = Path(entry.path).expanduser().absolute()
    if not path.is_file():
        raise GGUFError(f"{arg} is registered for {path}, which is missing",
                        hint="give the file's new path, or register it again")
    return path, entry


def split_parts(path: Path) -> list[Path]:
    """Every part of a split GGUF (in order) when `path` is one of them, else [path]."""
    from .hub import SPLIT

    m = SPLIT.match(path.name)
    if not m:
        return [path]
    parts = [path.with_name(f"{m['base']}-{i:05d}-of-{m['count']}.gguf") for i in range(1, int(m["count"]) + 1)]
    if missing := [p.name for p in parts if not p.is_file()]:
        raise GGUFError(f"{path.name} is part of a split GGUF, and {', '.join(missing)} is missing from {path.parent}",
                        hint="put every part in one folder before publishing")
    return parts


def read_report(path: Path) -> dict | None:
    """A `.quality.json` from `llm phi quantize`, checked; None when there is none."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text("utf-8"))
        rows = report["rows"]
        assert all(isinstance(rows[0][k], (int, float)) for k in (*REPORT_KEYS, "bpw"))
    except (OSError, ValueError, KeyError, IndexError, TypeError, AssertionError):
        raise PhiError(f"{path} is not a quality report from `llm phi quantize`",
                       hint="run the quantization again to rewrite it, or move it away") from None
    return report


def bits_per_weight(parts: list[Path]) -> float:
    from .gguf_info import read_gguf

    infos = [read_gguf(p) for p in parts]
    return 8.0 * sum(t.nbytes for i in infos for t in i.tensors) / max(sum(i.n_params for i in infos), 1)


def load_model(arg: str) -> LocalModel:
    from .families import detect_family
    from .gguf_info import validate_gguf

    path, entry = find_file(arg)
    parts = split_parts(path)
    info = validate_gguf(parts[0])
    family = entry.family if entry else getattr(detect_family(info.metadata), "key", None)
    if family is None:
        raise PhiError(f"Cannot tell which Phi family {path.name} is",
                       hint=f"register it with its family first: llm phi register {path} --family FAMILY")
    report_path = Path(str(parts[0]) + REPORT_SUFFIX)
    report = read_report(report_path)
    bpw = report["rows"][0]["bpw"] if report else bits_per_weight(parts)
    return LocalModel(parts, family, info.file_type_name or "unknown", info.metadata, bpw, report,
                      report_path if report else None)


def load_models(args: list[str]) -> list[LocalModel]:
    models, seen = [], set()
    for arg in args:
        model = load_model(arg)
        if model.parts[0] not in seen:
            seen.add(model.parts[0])
            models.append(model)
    if not models:
        raise PhiError("Give at least one GGUF file or registered model to publish")
    families = sorted({m.family for m in models})
    if len(families) > 1:
        raise PhiError(f"These files are of different Phi families ({', '.join(families)}); a repo holds one model",
                       hint="publish each family to its own --repo")
    return models


def imatrix_line(path: Path) -> str:
    from .imatrix import read_imatrix

    im = read_imatrix(path)
    return (f"`{path.name}`: {im.chunk_count} chunks of {im.chunk_size} tokens from "
            f"{', '.join(im.datasets) or 'an unnamed text'}")


def recorded_imatrix(models: list[LocalModel]) -> list[str]:
    """What llama-quantize records in a GGUF it quantized with an importance matrix."""
    lines = set()
    for m in models:
        name = m.metadata.get("quantize.imatrix.file")
        if isinstance(name, str):
            dataset = m.metadata.get("quantize.imatrix.dataset")
            chunks = m.metadata.get("quantize.imatrix.chunks_count")
            lines.add(f"`{Path(name).name}`" + (f" from {dataset}" if dataset else "")
                      + (f", {chunks} chunks" if chunks else "") + f" (recorded in {m.parts[0].name})")
    return sorted(lines)


# ----------------------------------------------------------------------------- the card's facts


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def base_model(models: list[LocalModel], family) -> str:
    """The source repo: the GGUF's own record, else the HF cache folder it was converted from, else
    the family's official repo."""
    for m in models:
        for key in ("general.base_model.0.repo_url", "general.source.repo_url"):
            if isinstance(url := m.metadata.get(key), str) and (found := HF_REPO_URL.match(url)):
                return found["repo"]
        source = str(((m.report or {}).get("rows") or [{}, {}])[-1].get("path", ""))
        if found := CACHE_REPO.search(source):
            return f"{found['owner']}/{found['name']}"
    return family.title


def converter(models: list[LocalModel]) -> str:
    sources = {str(m.report["rows"][-1].get("path", "")) for m in models if m.report}
    if not sources:
        return "unknown (no quality report names the source)"
    if all(Path(s).suffix.lower() != ".gguf" for s in sources):
        return "llm-phi-gguf's streaming converter, from the Hugging Face safetensors checkpoint"
    return "none of ours: quantized from an existing GGUF (" + ", ".join(sorted(Path(s).name for s in sources)) + ")"


def chat_example(model: LocalModel, family) -> str:
    """The example conversation rendered by the template the GGUF carries (or the family's)."""
    from . import chat
    from .model_card import EXAMPLE_PROMPT, EXAMPLE_SYSTEM

    fmt = chat.chat_format(chat.gguf_metadata(model.parts[0]), family)
    system = [{"role": "system", "content": EXAMPLE_SYSTEM}] if family.supports_system else []
    return fmt.render(system + [{"role": "user", "content": EXAMPLE_PROMPT}], add_generation_prompt=True)


def modelfile_text(model: LocalModel) -> str:
    """The family's Ollama Modelfile, FROM the GGUF beside it in the repo."""
    from .ollama import build_export, format_modelfile

    export = build_export(str(model.parts[0]))
    return (f"# Ollama Modelfile for {model.parts[0].name} (family {model.family}), written by llm-phi-gguf.\n"
            f"# Download it next to the GGUF, then: ollama create NAME -f {MODELFILE}\n"
            + format_modelfile(export.modelfile(from_=f"./{model.parts[0].name}")))


def file_row(m: LocalModel, first: bool):
    from .model_card import FileRow
    from .store import default_alias

    rows = (m.report or {}).get("rows") or [None, None]
    return FileRow(
        name=m.parts[0].name, parts=[p.name for p in m.parts], qtype=m.qtype,
        size=sum(p.stat().st_size for p in m.parts), bpw=m.bpw, alias=default_alias(m.family, m.qtype),
        quality=rows[0], source=rows[-1] if m.report else None,
        eval_tokens=(m.report or {}).get("n_tokens"), modelfile_from=first,
    )


def facts(repo_id: str, models: list[LocalModel], imatrix: list[str], source: dict, base: str):
    from .families import get_family
    from .model_card import Facts

    family = get_family(models[0].family)
    license_ = source.get("license") or models[0].metadata.get("general.license")
    return Facts(
        repo_id=repo_id, family_key=family.key, family_title=family.title, base_model=base,
        rows=[file_row(m, i == 0) for i, m in enumerate(models)],
        chat_example=chat_example(models[0], family), stops=family.stops,
        tool_version=package_version("llm-phi-gguf"), llama_cpp_version=package_version("llama-cpp-python"),
        converter=converter(models), license=license_ if isinstance(license_, str) else None,
        pipeline_tag=source.get("pipeline_tag"), quantized_by=repo_id.split("/")[0],
        imatrix=imatrix, modelfile=MODELFILE,
    )


# ----------------------------------------------------------------------------- the hub


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


def repo_state(api, hub, token, repo_id: str, revision: str) -> RepoState:
    """What the repo holds at `revision` (main's files for a branch still to be made), and its card."""
    from huggingface_hub import hf_hub_download
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
    card = None
    if CARD in files:
        path = hf_hub_download(repo_id, CARD, revision=info.sha, cache_dir=hub.cache_dir, endpoint=hub.endpoint,
                               token=token)
        card = Path(path).read_text("utf-8")
    return RepoState(True, bool(info.private), files, card)


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        same = (hashlib.sha256(upload.data).hexdigest() if upload.data is not None else sha256_file(upload.local)) == sha256
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
    from . import model_card
    from .hub import Hub, hub_errors

    repo_id, revision = parse_target(repo), revision or "main"
    local = load_models(models)
    imatrix_files = [Path(p).expanduser().absolute() for p in imatrix or []]
    lines = [imatrix_line(p) for p in imatrix_files] or recorded_imatrix(local)
    hub = Hub.from_env()
    token = find_token()
    if token is None and not dry_run:
        raise no_token(hub.endpoint)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=token or False)
    with hub_errors(hub, repo_id, revision, table=ERRORS):
        state = repo_state(api, hub, token, repo_id, revision)
        from .families import get_family

        base = base or base_model(local, get_family(local[0].family))
        card = model_card.render(facts(repo_id, local, lines, source_card(hub, token, base), base), state.card)
        uploads = plan_uploads(local, imatrix_files, card, modelfile_text(local[0]))
        for u in uploads:
            u.status = compare(u, state.files)
        result = Published(repo_id, revision, card, uploads)
        if state.exists and private and not state.private:
            result.notes.append(f"{repo_id} already exists and is public; --private does not change that "
                                "(change it in the repo's settings)")
        if dry_run:
            return result
        if not result.changed:
            result.notes.append(f"{repo_id}@{revision} already holds these files; nothing was committed")
            return result
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        result.commit_url = commit(api, repo_id, revision, result.changed, message, local).commit_url
    return result


def commit(api, repo_id: str, revision: str, changed: list[Upload], message: str | None, models: list[LocalModel]):
    """One commit of the new and changed files (huggingface_hub uploads the LFS ones first)."""
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(u.path_in_repo, u.data if u.data is not None else str(u.local)) for u in changed]
    types = ", ".join(dict.fromkeys(m.qtype for m in models))
    summary = message or f"Publish {types} GGUF with llm-phi-gguf {package_version('llm-phi-gguf')}"
    description = "\n".join(f"- {u.path_in_repo} ({u.what}, {u.status})" for u in changed)
    return api.create_commit(repo_id, ops, commit_message=summary, commit_description=description,
                             revision=revision)
