"""Reliability: a full disk. convert, quantize and download into an 8 MiB file system must stop
with one clear error line before writing, and leave nothing behind.

The small file system is a real tmpfs (`mount -t tmpfs -o size=8m`) where we may mount one (root
in a container); elsewhere the commands run with a sitecustomize that makes shutil.disk_usage
report 8 MiB free under the target folder (a stdlib function: our own code is never patched).
With a real tmpfs a second set of tests makes the free-space check pass (the fake reading says
plenty) so the write itself hits ENOSPC: still one line, and no file at the final path.

All commands run the real `llm` CLI in a subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fakes import hub_server
from fixtures.hub_fixtures import FTYPES
from fixtures.gguf_builders import write_phi3

LLM = shutil.which("llm") or str(Path(sys.executable).with_name("llm"))
SIZE = 8 << 20
BIG = dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, dtype="float16")  # 86 MB of weights

SITECUSTOMIZE = textwrap.dedent("""
    import os, shutil
    _root, _free = os.environ.get("PHI_FAKE_DISK_ROOT"), int(os.environ.get("PHI_FAKE_DISK_FREE", "0"))
    if _root:
        _real = shutil.disk_usage

        def disk_usage(path):
            usage = _real(path)
            if os.path.abspath(os.fspath(path)).startswith(_root):
                return usage._replace(free=_free)
            return usage

        shutil.disk_usage = disk_usage
""")

pytestmark = pytest.mark.skipif(not Path(LLM).exists(), reason="the llm console script is not installed")


def try_mount(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    """(folder, mounted): an 8 MiB tmpfs when we can mount one, else a plain folder (fake reading)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = try_mount(folder)
    try:
        yield folder, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def fake_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return site


def llm(args, user_path, site, root, free, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env.update(LLM_LOAD_PLUGINS="llm-phi-gguf", LLM_USER_PATH=str(user_path), HF_HUB_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])),
               PHI_FAKE_DISK_ROOT=str(root), PHI_FAKE_DISK_FREE=str(free), **extra)
    return subprocess.run([LLM, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess, *needles: str, after_progress: bool = False) -> str:
    """The command failed with exactly one `Error: ...` line on stderr (after_progress: once the
    write has begun, progress-bar lines (tqdm writes them to stderr) may come before it)."""
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    if after_progress:
        lines = [ln for ln in lines if not re.match(r"^(Writing|Quantizing \S+):", ln)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def gguf_repo_hub(tmp_path: Path, mib: int):
    path = tmp_path / "repo.gguf"
    write_phi3(path, **{"general.file_type": FTYPES["Q4_K_M"]})
    with open(path, "ab") as f:
        f.write(b"\0" * (mib << 20))
    hub = hub_server.FakeHub()
    hub.add(hub_server.FakeRepo("tiny/phi-disk-GGUF", {"phi-disk-Q4_K_M.gguf": path.read_bytes()}))
    return hub


# ---------------------------------------------------------------- refused before writing


def test_convert_into_a_full_disk(checkpoint, small_fs, fake_site, user_path):
    folder, mounted = small_fs
    out = folder / "big.gguf"
    r = llm(["phi", "quantize", "convert", checkpoint("phi-3-mini-4k", **BIG), "-o", out], user_path, fake_site,
            folder if not mounted else "/nonexistent", SIZE)
    one_line_error(r, "Not enough disk space", str(folder))
    assert files_under(folder) == []


def test_quantize_into_a_full_disk(converted, small_fs, fake_site, user_path):
    folder, mounted = small_fs
    r = llm(["phi", "quantize", converted("phi-3-mini-4k", "f16", **BIG), "-q", "Q4_K_M", "-o",
             folder / "q4.gguf", "--no-report", "--threads", "1"],
            user_path, fake_site, folder if not mounted else "/nonexistent", SIZE)
    one_line_error(r, "Not enough disk space", "q4.gguf")
    assert files_under(folder) == []
    assert not (user_path / "llm-phi-gguf" / "models.json").exists()


def test_download_into_a_full_disk(tmp_path, small_fs, fake_site, user_path):
    folder, mounted = small_fs
    with gguf_repo_hub(tmp_path, 12) as hub:
        r = llm(["phi", "download", "tiny/phi-disk-GGUF"], user_path, fake_site,
                folder if not mounted else "/nonexistent", SIZE, HF_ENDPOINT=hub.url, HF_HOME=str(folder / "hf"))
        one_line_error(r, "Not enough disk space", "tiny/phi-disk-GGUF")
        assert not any(r.path.startswith("/lfs/") for r in hub.requests)  # nothing was fetched
    assert files_under(folder) == []
    assert not (user_path / "llm-phi-gguf" / "models.json").exists()


# ---------------------------------------------------------------- the write itself runs out of space


@pytest.fixture
def tmpfs(small_fs):
    folder, mounted = small_fs
    if not mounted:
        pytest.skip("cannot mount a tmpfs here: the ENOSPC-while-writing cases need a real small file system")
    return folder


PLENTY = 1 << 40  # what the fake reading says, so the pre-check passes and the write fails


def test_convert_hits_enospc_while_writing(checkpoint, tmpfs, fake_site, user_path):
    out = tmpfs / "big.gguf"
    r = llm(["phi", "quantize", "convert", checkpoint("phi-3-mini-4k", **BIG), "-o", out], user_path, fake_site,
            tmpfs, PLENTY)
    one_line_error(r, "No space left on device", str(out), after_progress=True)
    assert files_under(tmpfs) == []


def test_quantize_hits_enospc_while_writing(converted, tmpfs, fake_site, user_path):
    out = tmpfs / "q4.gguf"
    r = llm(["phi", "quantize", converted("phi-3-mini-4k", "f16", **BIG), "-q", "Q4_K_M", "-o", out, "--no-report",
             "--threads", "1"], user_path, fake_site, tmpfs, PLENTY)
    one_line_error(r, "could not quantize", "check the free disk space", after_progress=True)
    assert files_under(tmpfs) == []
    assert not (user_path / "llm-phi-gguf" / "models.json").exists()


def test_download_hits_enospc_while_writing(tmp_path, tmpfs, fake_site, user_path):
    with gguf_repo_hub(tmp_path, 12) as hub:
        r = llm(["phi", "download", "tiny/phi-disk-GGUF"], user_path, fake_site, tmpfs, PLENTY,
                HF_ENDPOINT=hub.url, HF_HOME=str(tmpfs / "hf"))
    one_line_error(r, "Disk full while downloading")
    # No snapshot file (the final path) and no complete blob: only huggingface_hub's own
    # bookkeeping (refs, tree listing, lock files) and its partial blob (*.incomplete)
    left = files_under(tmpfs)
    assert not any("/snapshots/" in n or ("/blobs/" in n and not n.endswith(".incomplete")) for n in left), left
    print("left behind by huggingface_hub:", left)
    assert not (user_path / "llm-phi-gguf" / "models.json").exists()
