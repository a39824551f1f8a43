"""Hugging Face hub sources: a local folder/file as is, a repo id downloaded through the cache.

`download_model` is `llm phi download`: ask the hub what a repo holds, then either fetch the GGUF
for a quant type (all parts of a split GGUF) and register the cached file, or fetch a checkpoint
(config, tokenizer, *.safetensors: never pickles) and convert + quantize + register it.
`resolve_source` hands `llm phi quantize [convert]` a local folder or GGUF for a repo id.

Every transfer goes through huggingface_hub (its cache layout, progress bars, retries and
Range-resume, HF_TOKEN / `hf auth login`); its typed errors become one HubError line each.
huggingface_hub is imported inside the functions: `import llm_phi_gguf` stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError, PhiError
from .store import models_dir, output_path

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+))?$")
LOCAL_LOOKING = (".gguf", ".safetensors", ".json", "/")
# A checkpoint is these top-level files; never *.py (remote code) nor pickles.
CHECKPOINT_FILES = re.compile(r"^(?:[^/]+\.json|[^/]+\.safetensors|tokenizer\.model|[^/]+\.tiktoken|merges\.txt|vocab\.txt)$")
PICKLE_FILES = re.compile(r"\.(?:bin|pt|pth|ckpt|pkl|pickle)$")
SPLIT = re.compile(r"^(?P<base>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
NOT_MODEL_GGUF = re.compile(r"mmproj|imatrix", re.IGNORECASE)  # vision projectors, importance matrices
FILE_NAME_ALIASES = {"FP16": "F16", "FP32": "F32"}
SOURCE_TYPES = ("BF16", "F16", "F32")  # unquantized GGUFs worth quantizing, in order of preference
TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class Hub:
    """Where to talk to and cache into, read from the environment at call time: huggingface_hub
    reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE once at import, but llm (and the tests) may set
    them later in the same process."""

    endpoint: str
    cache_dir: str
    offline: bool

    @classmethod
    def from_env(cls) -> "Hub":
        from huggingface_hub import constants

        home = os.environ.get("HF_HOME")
        cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else constants.HF_HUB_CACHE)
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE or constants.HF_HUB_OFFLINE
        endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        return cls(endpoint, os.path.expanduser(cache), offline)


@dataclass
class Listing:
    repo_id: str
    revision: str
    commit: str
    files: dict[str, int | None]  # path -> size (None when unknown)
    gguf_arch: str | None = None


# ----------------------------------------------------------------------------- errors


def _gated(e, c) -> str:
    if e.response.status_code == 401:
        return f"{c['repo']} is gated and no Hugging Face token was sent"
    return f"{c['repo']} is gated and your token has no access to it"


UNREACHABLE = ("Cannot reach the Hugging Face hub at {endpoint}",
               "check your connection or proxy; HF_HUB_OFFLINE=1 uses files already in the cache")
OFFLINE_MISSING = ("{repo}@{revision}: the files needed are not in the Hugging Face cache ({cache}) and "
                   "HF_HUB_OFFLINE is set", "download them once while online, or unset HF_HUB_OFFLINE")
# (exception class name in huggingface_hub.errors or httpx2, message, next step); first match wins,
# so subclasses (GatedRepoError < RepositoryNotFoundError) come first.
ERRORS = (
    ("GatedRepoError", _gated,
     "accept its conditions at {endpoint}/{repo}, then set HF_TOKEN or run `hf auth login`"),
    ("RepositoryNotFoundError", "{no_repo} {repo} on {endpoint} (or it is private)",
     "check the name; for a private repo set HF_TOKEN or run `hf auth login`"),
    ("RevisionNotFoundError", "{repo} has no revision {revision!r}",
     "use a branch, tag or commit that exists, or leave out --revision"),
    ("RemoteEntryNotFoundError", "{repo}@{revision} lost a file while downloading", "try again"),
    ("CachedRepoTreeNotFoundError", "{repo}@{revision} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set",
     "download it once while online, or unset HF_HUB_OFFLINE"),
    ("LocalEntryNotFoundError", None, None),  # offline: not cached; online: unreachable (see _message)
    ("ConnectError", *UNREACHABLE),
    ("TimeoutException", "The Hugging Face hub at {endpoint} did not answer in time",
     "try again; HF_HUB_OFFLINE=1 uses files already in the cache"),
    ("HfHubHTTPError", "The hub answered HTTP {status} for {repo}",
     "try again later; HF_HUB_OFFLINE=1 uses files already in the cache"),
)


def _message(e: BaseException, ctx: dict, table=ERRORS) -> tuple[str, str] | None:
    """(message, next step) of the first row of `table` that names a class of e (or of what caused it:
    huggingface_hub wraps a failed upload in a RuntimeError). Message and hint are format strings
    or callables(e, ctx)."""
    while e is not None:
        names = {cls.__name__ for cls in type(e).__mro__}
        for name, message, hint in table:
            if name not in names:
                continue
            if name == "LocalEntryNotFoundError":
                message, hint = OFFLINE_MISSING if ctx["offline"] else UNREACHABLE
            status = getattr(getattr(e, "response", None), "status_code", "?")
            text = message(e, ctx) if callable(message) else message.format(status=status, **ctx)
            return text, hint(e, ctx) if callable(hint) else hint.format(**ctx)
        e = e.__cause__
    return None


@contextlib.contextmanager
def hub_errors(hub: Hub, repo: str, revision: str, no_repo: str = "No repo", table=ERRORS):
    """Turn huggingface_hub's (and its HTTP client's) errors into one HubError line with a next step,
    worded by `table` (downloads by default; publish.py has its own rows)."""
    ctx = dict(repo=repo, revision=revision, endpoint=hub.endpoint, cache=hub.cache_dir, offline=hub.offline,
               no_repo=no_repo)
    try:
        yield
    except PhiError:
        raise
    except Exception as e:
        found = _message(e, ctx, table)
        if found is None:
            if isinstance(e, OSError) and e.errno == 28:  # ENOSPC in the middle of a download
                raise HubError(f"Disk full while downloading {repo} into {hub.cache_dir}",
                               hint="free some space and run the command again") from None
            raise
        raise HubError(*found) from None


# ----------------------------------------------------------------------------- listing


def parse_repo_id(src: str, revision: str | None = None) -> tuple[str, str]:
    m = REPO_ID.match(src)
    if not m or ".." in src or "--" in m["repo"]:
        raise HubError(f"{src!r} is not a Hugging Face repo id", hint="use owner/name, e.g. microsoft/Phi-3.5-mini-instruct")
    if m["rev"] and revision and m["rev"] != revision:
        raise HubError(f"Two revisions given: {m['rev']} (in {src}) and {revision}")
    return m["repo"], m["rev"] or revision or "main"


def looks_like_repo_id(src: str) -> bool:
    return bool(REPO_ID.match(src)) and not src.startswith((".", "~")) and not src.endswith(LOCAL_LOOKING)


def list_repo(hub: Hub, repo: str, revision: str) -> Listing:
    """What the repo holds at `revision`: from the hub, or (offline) from the cache's tree listing."""
    if hub.offline:
        return cached_listing(hub, repo, revision)
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub.endpoint).model_info(repo, revision=revision, files_metadata=True)
    return Listing(repo, revision, info.sha, {s.rfilename: s.size for s in info.siblings or []},
                   gguf_arch=(info.gguf or {}).get("architecture"))


def cached_listing(hub: Hub, repo: str, revision: str) -> Listing:
    """What the cache holds of the repo at `revision`, with no network: the tree listing that
    snapshot_download caches, else (files fetched one by one with hf_hub_download, as transformers'
    from_pretrained does: snapshot links, no listing) the files present in the snapshot folder."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    storage = repo_storage(hub, repo)
    ref = storage / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    try:
        files = get_cached_repo_tree(repo, revision=revision, cache_dir=hub.cache_dir)
        return Listing(repo, revision, commit, {f.path: f.size for f in files})
    except CachedRepoTreeNotFoundError:
        snapshot = storage / "snapshots" / commit
        present = {p.relative_to(snapshot).as_posix(): p.stat().st_size
                   for p in sorted(snapshot.rglob("*")) if p.is_file()}  # is_file: follows the blob link
        if not present:
            raise
        return Listing(repo, revision, commit, present)


def repo_storage(hub: Hub, repo: str) -> Path:
    """The cache folder of a model repo (models--owner--name), by huggingface_hub's own naming."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(hub.cache_dir, repo_folder_name(repo_id=repo, repo_type="model"))


# ----------------------------------------------------------------------------- choosing files


def _type_pattern() -> re.Pattern:
    from .quant_types import QUANT_TYPES

    names = sorted({t.name for t in QUANT_TYPES} | set(FILE_NAME_ALIASES), key=len, reverse=True)
    # longest names first, so Q4_K_M wins over Q4_K and IQ4_XS over Q4_*; not glued to letters/digits
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9])", re.IGNORECASE)


def file_type(name: str, pattern: re.Pattern) -> str | None:
    """The llama.cpp type named in a GGUF file name (the last one), e.g. Phi-3.5-mini-Q4_K_M.gguf -> Q4_K_M."""
    found = pattern.findall(Path(name).name)
    return FILE_NAME_ALIASES.get(found[-1].upper(), found[-1].upper()) if found else None


def gguf_groups(listing: Listing) -> dict[str, list[str]]:
    """Model GGUFs by display name; a split GGUF is one group of all its parts (in order)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(listing.files):
        if not name.endswith(".gguf") or NOT_MODEL_GGUF.search(Path(name).name):
            continue
        m = SPLIT.match(name)
        key = f"{m['base']}-*-of-{m['count']}.gguf" if m else name
        groups.setdefault(key, []).append(name)
    return groups


def _complete(key: str, parts: list[str], repo: str) -> list[str]:
    m = SPLIT.match(parts[0])
    if m and len(parts) != int(m["count"]):
        raise HubError(f"{repo} has only {len(parts)} of the {int(m['count'])} parts of {key}",
                       hint="the repo is incomplete; pick another file with --file")
    return parts


def _available(groups: dict[str, list[str]]) -> str:
    return ", ".join(groups) or "none"


def choose_gguf(listing: Listing, quant: str, file: str | None) -> list[str]:
    """The file(s) to fetch: --file (with its split siblings), else the one GGUF whose name has `quant`."""
    groups = gguf_groups(listing)
    if file is not None:
        key = next((k for k, parts in groups.items() if file in parts or file == k), None)
        if key is None:
            raise HubError(f"{listing.repo_id} has no GGUF file {file!r}", hint=f"available: {_available(groups)}")
        return _complete(key, groups[key], listing.repo_id)
    pattern = _type_pattern()
    matches = [k for k in groups if file_type(k, pattern) == quant]
    if not matches:
        raise HubError(f"{listing.repo_id} has no {quant} GGUF",
                       hint=f"choose --quant or --file from: {_available(groups)}")
    if len(matches) > 1:
        raise HubError(f"{listing.repo_id} has several {quant} GGUFs: {', '.join(matches)}",
                       hint="pick one with --file NAME")
    return _complete(matches[0], groups[matches[0]], listing.repo_id)


def checkpoint_names(listing: Listing) -> list[str]:
    """config/tokenizer/safetensors files of a checkpoint repo; refuse pickle-only and empty repos."""
    names = [n for n in sorted(listing.files) if CHECKPOINT_FILES.match(n)]
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return names
    pickles = [n for n in sorted(listing.files) if PICKLE_FILES.search(n)]
    if pickles:
        raise HubError(f"{listing.repo_id} has only pickle weights ({', '.join(pickles[:4])}), which can run code "
                       "when loaded; they are never downloaded",
                       hint="use a repo with *.safetensors or GGUF files")
    raise HubError(f"{listing.repo_id} has neither GGUF files nor a safetensors checkpoint (config.json + *.safetensors)",
                   hint="check the repo name")


def quant_name(quant: str) -> str:
    from .quant_types import ALIASES, BY_NAME

    name = ALIASES.get(quant.upper(), quant.upper())
    if name not in BY_NAME:
        raise PhiError(f"Unknown quantization type {quant!r}", hint="see: llm phi quantize types")
    return name


# ----------------------------------------------------------------------------- fetching


def _cached(hub: Hub, listing: Listing, name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(listing.repo_id, name, cache_dir=hub.cache_dir, revision=listing.commit), str)


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def fetch(hub: Hub, listing: Listing, names: list[str], echo) -> Path:
    """Download `names` into the cache (or, offline, find them there); return the snapshot folder."""
    from huggingface_hub import snapshot_download

    from .files import check_free_space

    if not hub.offline:
        missing = [n for n in names if not _cached(hub, listing, n)]
        need = sum(listing.files.get(n) or 0 for n in missing)
        check_free_space(_existing_parent(Path(hub.cache_dir)), need, what=f"the download of {listing.repo_id}")
        if missing:
            echo(f"Downloading {len(missing)} file(s), {need / 1e6:.1f} MB, from {listing.repo_id}")
            from .hub_resume import prefetch

            prefetch(hub.endpoint, repo_storage(hub, listing.repo_id), Path(hub.cache_dir, ".locks"),
                     listing.repo_id, listing.commit, missing)
    folder = snapshot_download(listing.repo_id, revision=listing.revision, allow_patterns=names,
                               cache_dir=hub.cache_dir, endpoint=hub.endpoint, local_files_only=hub.offline)
    return Path(folder)


def check_phi_config(folder: Path, repo: str) -> None:
    import json

    from .families import SEE_FAMILIES, SUPPORTED_ARCHITECTURES, refusal, unsupported_model

    known = sorted(SUPPORTED_ARCHITECTURES)
    try:
        archs = json.loads((folder / "config.json").read_text("utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        raise HubError(f"{repo}: config.json is missing or not valid JSON") from None
    if (model := unsupported_model(archs)) is not None:
        raise HubError(refusal(model, repo), hint=SEE_FAMILIES)
    if not set(archs) & set(known):
        raise HubError(f"{repo} is not a Phi model (architectures: {', '.join(archs) or 'none'})",
                       hint=f"this plugin handles {', '.join(known)}")


def fetch_checkpoint(hub: Hub, listing: Listing, echo) -> Path:
    """config.json first (refuse non-Phi repos before the big download), then the rest."""
    names = checkpoint_names(listing)
    check_phi_config(fetch(hub, listing, ["config.json"], echo), listing.repo_id)
    return fetch(hub, listing, names, echo)


def _check_gguf_arch(listing: Listing) -> None:
    from .families import GGUF_ARCHITECTURES as phi
    from .families import SEE_FAMILIES, refusal, unsupported_model

    if (model := unsupported_model(name=listing.repo_id)) is not None:
        raise HubError(refusal(model, listing.repo_id), hint=SEE_FAMILIES)
    if listing.gguf_arch and listing.gguf_arch not in phi:
        raise HubError(f"{listing.repo_id} is not a Phi model (GGUF architecture {listing.gguf_arch})",
                       hint=f"this plugin runs {', '.join(sorted(phi))}")


# ----------------------------------------------------------------------------- the two entry points


def resolve_source(src: str, want: str = "any", echo=print) -> Path:
    """A local path for SRC: a folder or GGUF as given, or a repo id (owner/name[@rev]) downloaded.

    want="checkpoint": the snapshot folder of a safetensors checkpoint. want="gguf": an
    unquantized (BF16/F16/F32) GGUF of the repo. want="any": the checkpoint if the repo has one,
    else its unquantized GGUF.
    """
    path = Path(src).expanduser()
    if path.exists():
        return path
    if not looks_like_repo_id(src):
        raise PhiError(f"{src} does not exist", hint="give a local file or folder, or a Hugging Face repo id owner/name")
    hub = Hub.from_env()
    repo, revision = parse_repo_id(src)
    with hub_errors(hub, repo, revision, no_repo=f"{src} is not a local path and there is no repo"):
        listing = list_repo(hub, repo, revision)
        has_checkpoint = any(n.endswith(".safetensors") for n in listing.files) and "config.json" in listing.files
        if want == "checkpoint" or (want == "any" and (has_checkpoint or not gguf_groups(listing))):
            if not has_checkpoint and gguf_groups(listing):
                raise HubError(f"{repo} holds GGUF files, not a Hugging Face checkpoint",
                               hint=f"run: llm phi download {repo}")
            return fetch_checkpoint(hub, listing, echo)
        _check_gguf_arch(listing)
        names = _source_gguf(listing)
        return fetch(hub, listing, names, echo) / names[0]


def resolve_for_quantize(src, out, echo) -> tuple[Path, object, str | None]:
    """`llm phi quantize`'s source: (local path, output folder or file, output base name).

    A repo id's files live in the Hugging Face cache under a commit-hash folder: its outputs
    default to llm's models folder (<user dir>/llm-phi-gguf/models/<owner>/), named after the repo.
    """
    local = Path(resolve_source(str(src), want="any", echo=echo)).expanduser().absolute()
    if Path(str(src)).expanduser().exists():
        return local, out, None
    owner, _, repo = str(src).split("@")[0].partition("/")
    if out is None:
        out = models_dir() / owner
        out.mkdir(parents=True, exist_ok=True)
    return local, out, repo


def _source_gguf(listing: Listing) -> list[str]:
    pattern = _type_pattern()
    for qtype in SOURCE_TYPES:
        if any(file_type(k, pattern) == qtype for k in gguf_groups(listing)):
            return choose_gguf(listing, qtype, None)
    raise HubError(f"{listing.repo_id} has only quantized GGUFs ({_available(gguf_groups(listing))}); "
                   "quantizing them again loses quality",
                   hint=f"use one as is: llm phi download {listing.repo_id} --quant TYPE")


def download_model(repo_id: str, quant: str = "Q4_K_M", file: str | None = None, revision: str | None = None,
                   alias: str | None = None, keep_source: bool = False, force: bool = False, echo=print):
    """`llm phi download`: the repo's GGUF for `quant` (registered from the cache), or its checkpoint
    converted, quantized to `quant` and registered. Returns the registry's ModelEntry."""
    quant = quant_name(quant)
    hub = Hub.from_env()
    repo, revision = parse_repo_id(repo_id, revision)
    with hub_errors(hub, repo, revision):
        listing = list_repo(hub, repo, revision)
        if file is not None or gguf_groups(listing):
            _check_gguf_arch(listing)
            names = choose_gguf(listing, quant, file)
            return register_cached(fetch(hub, listing, names, echo) / names[0], alias, force, echo)
        if (entry := already_built(repo, quant, alias, force, echo)) is not None:
            return entry
        names = checkpoint_names(listing)
        new = [] if hub.offline else [n for n in names if n.endswith(".safetensors") and not _cached(hub, listing, n)]
        folder = fetch_checkpoint(hub, listing, echo)
    entry = quantize_checkpoint(folder, repo, quant, alias, force, echo)
    if not keep_source:
        drop_weights(folder, new, echo)
    return entry


def register_cached(path: Path, alias: str | None, force: bool, echo):
    """Register the GGUF where the cache holds it (no second copy); re-running is a no-op."""
    from . import store

    same = [e for e in store.load().values() if Path(e.path) in (path, path.resolve())]
    if same and (alias is None or alias == same[0].alias):
        echo(f"{path.name} is already registered as {same[0].alias}")
        return same[0]
    return store.register_file(path, alias=alias, force=force)


def already_built(repo: str, quant: str, alias: str | None, force: bool, echo):
    """The entry of an earlier download of this repo and quant, if nothing asks to redo it."""
    from . import store

    out = output_path(repo, quant)
    same = [e for e in store.load().values() if Path(e.path) == out and out.exists()]
    if same and not force and (alias is None or alias == same[0].alias):
        echo(f"{out.name} is already built and registered as {same[0].alias} (--force rebuilds it)")
        return same[0]
    return None


def quantize_checkpoint(folder: Path, repo: str, quant: str, alias: str | None, force: bool, echo):
    """Convert + quantize the downloaded checkpoint into the plugin's models folder and register it."""
    from . import store
    from .quantize import quantize_source

    out = output_path(repo, quant)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The quality report needs a second pass over the model: `llm phi quantize` offers it.
    results = quantize_source(folder, [quant], out=out, alias=alias, register=True, report=False, force=force,
                              progress=True, echo=echo)
    return store.get(results[0].alias)


def drop_weights(folder: Path, names: list[str], echo) -> None:
    """Delete the safetensors this download added to the cache (the GGUF is built; they are large)."""
    freed = 0
    for n in names:
        link = folder / n
        blob = link.resolve()
        with contextlib.suppress(FileNotFoundError):
            freed += blob.stat().st_size
            blob.unlink()
        link.unlink(missing_ok=True)
    if names:
        echo(f"Removed the downloaded safetensors ({freed / 1e6:.1f} MB) from the Hugging Face cache "
             "(--keep-source keeps them)")
