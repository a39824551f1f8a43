"""Safe output files: write to a temporary file in the target folder, rename at the end.

Every command that writes a large file goes through `atomic_output`, so an error, Ctrl-C or a
crash never leaves a half-written file at the final path, and nothing is overwritten without
--force.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DiskSpaceError, OutputExistsError, PhiError

# Temporary outputs are named like this, in the target folder, so a crash leaves at worst a
# clearly named leftover (never a file at the final path) and `rename` stays on one file system.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"
HASH_CHUNK = 4 << 20  # 4 MiB reads keep sha256 at disk speed


def sha256_hex(path: Path, progress: bool = False) -> str:
    """A file's sha256 (hex), read in 4 MiB chunks into one reused buffer; optional progress bar."""
    from tqdm import tqdm

    digest, buf = hashlib.sha256(), bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f, tqdm(total=os.fstat(f.fileno()).st_size, unit="B", unit_scale=True,
                                     desc="sha256", disable=not progress or None, leave=False) as bar:
        while n := f.readinto(buf):
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()


def check_output_path(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """Refuse an output that exists (without force) or that is one of the inputs."""
    out = Path(out).expanduser().absolute()
    for src in inputs:
        try:
            if Path(src).exists() and out.exists() and os.path.samefile(out, src):
                raise PhiError(f"Output {out} is the same file as the input {src}")
        except OSError:
            pass
        if Path(src).expanduser().absolute() == out:
            raise PhiError(f"Output {out} is the same file as the input {src}")
    if out.is_dir():
        raise PhiError(f"Output {out} is a directory")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", hint="use --force to overwrite it")
    if not out.parent.is_dir():
        raise PhiError(f"Output folder {out.parent} does not exist")
    return out


def check_free_space(folder: Path, needed_bytes: int, what: str = "the output") -> None:
    """Fail before writing when the target file system cannot hold `needed_bytes`."""
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise DiskSpaceError(
            f"Not enough disk space in {folder} for {what}: need {_gib(needed_bytes)}, "
            f"{_gib(free)} free"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# A temporary that nobody has written to for this long belongs to a killed run: a live writer
# (converter, llama.cpp's quantizer) touches its file every few seconds.
STALE_AFTER_S = 15 * 60


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temporaries of `out` left by runs that were killed (SIGKILL cannot clean up)."""
    import time

    removed = []
    for tmp in Path(out).parent.glob(f"{TEMP_PREFIX}{glob.escape(Path(out).name)}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > STALE_AFTER_S:
                tmp.unlink()
                removed.append(tmp)
    return removed


def read_json_dict(path: Path) -> dict:
    """A small JSON state file written by write_json_atomic: its object, or {} when it is missing,
    unreadable or not an object (a cache or setting is never worth an error)."""
    import json

    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomic(path: Path, data) -> None:
    """Replace `path` with `data` as JSON in one step: readers see the old file or the new one."""
    import json

    with atomic_output(Path(path), force=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(out: Path, force: bool = False, keep: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `out`; on success rename it to `out`, else delete it.

    KeyboardInterrupt and any exception delete the temporary file and propagate. keep=False: a
    scratch file for `out` that is deleted in every case (named like every temporary, so a
    killed run's scratch file is cleaned up like any other).
    """
    out = Path(out)
    if keep and out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", hint="use --force to overwrite it")
    remove_stale_temporaries(out)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + out.name + ".", suffix=TEMP_SUFFIX, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    renamed = False
    try:
        yield tmp
        if keep:
            os.replace(tmp, out)
            renamed = True
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                tmp.unlink()
