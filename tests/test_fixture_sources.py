"""The suite stands alone: vendored reference data is what SOURCES.md says it is, and no test,
script or benchmark reads outside the repository."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SOURCES = FIXTURES / "reference" / "SOURCES.md"
# SOURCES.md section heading -> the folder its table describes
FOLDERS = {"tests/fixtures/reference/chat-templates/": FIXTURES / "reference" / "chat-templates",
           "tests/fixtures/ollama/": FIXTURES / "ollama"}


def _listed() -> dict[Path, str]:
    """Every file named in SOURCES.md's tables, with its sha256 prefix."""
    listed, folder = {}, None
    for line in SOURCES.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            folder = next((path for head, path in FOLDERS.items() if head in line), None)
        row = re.match(r"\| (\S+) \| ([0-9a-f]{16}) \|", line)
        if row and folder is not None:
            listed[folder / row[1]] = row[2]
    return listed


def test_every_vendored_file_is_listed_with_its_hash():
    listed = _listed()
    present = {p for folder in FOLDERS.values() for p in folder.rglob("*") if p.is_file()}
    assert present, "no vendored reference files found"
    assert present == set(listed), {str(p.relative_to(FIXTURES)) for p in present ^ set(listed)}
    for path, prefix in listed.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == prefix, path


# Ways code can reach outside the checkout: the workspace's reference folder, absolute machine
# paths, or climbing above the repository root.
OUTSIDE = re.compile(r"""["'/]shared["'/]|["']/(work|tmp|home|root|mnt)/|parents\[(\d+)\]""")


def _code_files():
    for folder in ("tests", "scripts", "benchmarks", ".ci"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and (path.suffix == ".py" or path.parent.name == ".ci"):
                yield path


@pytest.mark.parametrize("path", sorted(_code_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_no_code_reads_outside_the_repository(path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for hit in OUTSIDE.finditer(line):
            if hit[2] is not None:
                # parents[n] of a file n+1 folders below the root is the root; more is outside
                depth = len(path.relative_to(REPO).parts) - 1
                if int(hit[2]) <= depth:
                    continue
            pytest.fail(f"{path.relative_to(REPO)}:{number}: reaches outside the repository: {line.strip()}")
