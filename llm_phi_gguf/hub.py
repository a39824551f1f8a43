"""Hugging Face hub sources: a local folder/file as is, a repo id downloaded through the cache."""

from __future__ import annotations

from pathlib import Path

from .errors import PhiError


def resolve_source(src: str, want: str = "any", echo=print) -> Path:
    """A local path for SRC: a folder or GGUF as given (repo ids arrive with the hub stage)."""
    path = Path(src).expanduser()
    if path.exists():
        return path
    raise PhiError(f"{src} does not exist")
