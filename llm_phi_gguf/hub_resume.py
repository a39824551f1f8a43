"""Weights downloads that the next run resumes, after Ctrl-C or kill -9.

huggingface_hub 2.x writes each download to a temporary unique to the process
(`blobs/<etag>.<random>.incomplete`) and deletes it on Ctrl-C: a new run starts from byte 0, and
what a killed run left is never reused. For an LFS file (the weights: GGUF, safetensors) this
module fetches into one stable name per blob, `blobs/<etag>.incomplete`, under the same lock file
huggingface_hub takes for that blob; it asks only for the missing bytes (HTTP Range, through
huggingface_hub's own `http_get`: its retries, progress bar and headers), checks the sha256 the hub
announced for the file, and renames it to `blobs/<etag>`. huggingface_hub then finds the blob and
only links it into the snapshot. Nothing reaches the snapshot before its bytes are checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from .errors import HubError
from .files import sha256_hex

SHA256 = re.compile(r"[0-9a-f]{64}")
PARTIAL_SUFFIX = ".incomplete"


def prefetch(endpoint: str, storage: Path, locks: Path, repo: str, commit: str, names: list[str]) -> None:
    """Download the LFS files among `names` (repo at `commit`) into `storage`/blobs, resuming."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    for name in names:
        url = hf_hub_url(repo, name, revision=commit, endpoint=endpoint)
        meta = get_hf_file_metadata(url, endpoint=endpoint)
        # A git (non-LFS) file's etag is a sha1: small, left to huggingface_hub.
        if not meta.etag or not SHA256.fullmatch(meta.etag):
            continue
        blob = storage / "blobs" / meta.etag
        if blob.exists():
            continue
        blob.parent.mkdir(parents=True, exist_ok=True)
        (locks / storage.name).mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        with FileLock(str(locks / storage.name / f"{meta.etag}.lock"), mode=0o664):
            if not blob.exists():
                _fetch_blob(url, meta, blob, name)


def _fetch_blob(url: str, meta, blob: Path, name: str) -> None:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    headers = build_hf_headers()
    # An LFS file: straight from the CDN URL the hub redirected to (a signed URL: the token stays
    # with the hub). A Xet-stored one: from the hub's own URL, which serves it over plain HTTP too,
    # as huggingface_hub does without hf_xet; one resumable path whatever the storage.
    source = url if meta.xet_file_data is not None else meta.location
    if urlsplit(source).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)
    have = partial.stat().st_size if partial.exists() else 0
    if meta.size is not None and have > meta.size:  # not a prefix of this blob: start over
        partial.unlink()
        have = 0
    with open(partial, "ab") as f:
        http_get(source, f, resume_size=have, headers=headers, expected_size=meta.size,
                 displayed_filename=Path(name).name)
    if sha256_hex(partial) != meta.etag:
        partial.unlink()
        raise HubError(f"{name} arrived corrupted (its sha256 is not the one the hub announced); it was removed",
                       hint="run the command again")
    partial.replace(blob)

