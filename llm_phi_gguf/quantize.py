"""Quantize a Phi GGUF (or a Hugging Face checkpoint, converted first) with llama.cpp's quantizer.

`quantize_file` validates everything we can before the native call (type name, imatrix need
and fit, requantizing, disk space, output path), then runs `llama_model_quantize` in a child
process (_quantize_child.py): llama.cpp aborts the process on some inputs and a C call ignores
Ctrl-C, so an abort becomes a one-line QuantizationError, Ctrl-C kills the child, and the output
is written to a temporary file that only becomes OUT on success. The child relays llama.cpp's
log; we read tensor progress ("[  3/ 12] name ...") and shape fallbacks from it.

`quantize_source` is the `llm phi quantize` pipeline: resolve SRC, convert once, optional
imatrix, one quantization per type, the quality report, registration.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import GGUFError, PhiError, QuantizationError

CHILD = Path(__file__).with_name("_quantize_child.py")
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})  # tensor types llama.cpp quantizes from without requantizing
# A GGUF name's trailing type, dropped to name the outputs: phi-demo_F16.gguf -> phi-demo_Q4_K_M.gguf
TYPE_SUFFIX = re.compile(r"[-_.](f32|f16|bf16|q8_0)$", re.IGNORECASE)
PROGRESS_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
FALLBACK_LINE = re.compile(
    r"warning:\s+(\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\).*"
    r"-> falling back to\s+(\S+)"
)
FAILED_LINE = re.compile(r"failed to quantize: (.*)$")
SOURCE_HINT = "quantize takes a Phi GGUF (best F16/BF16/F32) or a Hugging Face checkpoint folder or repo id"
# Mixture rules can bump a tensor above the file type's nominal bits (Q6_K/Q8_0 output, attn_v);
# this head-room keeps the disk-space estimate an upper bound.
SIZE_HEADROOM = 1.25


@dataclass(frozen=True)
class Fallback:
    tensor: str
    wanted: str  # ggml type the rules chose, e.g. q4_K
    used: str  # what llama.cpp used because the row length is not a multiple of the block size
    ncols: int


@dataclass
class QuantResult:
    path: Path
    qtype: str
    source: Path
    size: int
    seconds: float
    fallbacks: list[Fallback] = field(default_factory=list)
    alias: str | None = None
    quality: dict | None = None


# ----------------------------------------------------------------------------- validation


def read_source(src: Path):
    """The parsed header of a GGUF we may quantize (a Phi model llama.cpp can load)."""
    from .gguf_info import validate_gguf

    if not src.is_file():
        raise GGUFError(f"{src} does not exist" if not src.exists() else f"{src} is not a file")
    return validate_gguf(src, hint=SOURCE_HINT)


def quantizable(t) -> bool:
    """llama.cpp's tensor_allows_quantization for Phi: matrices named *weight, except norms."""
    return len(t.shape) >= 2 and t.name.endswith("weight") and "_norm.weight" not in t.name


def check_requantize(info, allow: bool) -> None:
    quantized = sorted({t.type_name for t in info.tensors if quantizable(t)} - FLOAT_TYPES)
    if quantized and not allow:
        raise QuantizationError(
            f"{Path(info.path).name} is already quantized ({info.file_type_name or ', '.join(quantized)}); "
            "quantizing it again loses more quality",
            hint="start from the f16/bf16 GGUF or the Hugging Face folder, or pass --allow-requantize",
        )


def estimate_size(info, qt) -> int:
    """An upper bound of the output size: header + copied tensors + quantized ones at bpw (+ head-room)."""
    total = info.data_offset + 2**20
    for t in info.tensors:
        if quantizable(t):
            total += int(t.n_elements * qt.bpw / 8 * SIZE_HEADROOM)
        else:
            total += t.nbytes
    return total


def load_imatrix_for(imatrix, info, qt):
    """The Imatrix to use (read from a path if needed), checked against the model; None if none."""
    from .imatrix import Imatrix, check_against_model, read_imatrix

    if imatrix is None:
        if qt.needs_imatrix:
            raise QuantizationError(
                f"{qt.name} needs an importance matrix",
                hint="pass --imatrix FILE, or --calibration TEXTFILE to compute one",
            )
        return None
    im = imatrix if isinstance(imatrix, Imatrix) else read_imatrix(imatrix)
    source = "(computed)" if isinstance(imatrix, Imatrix) else str(imatrix)
    check_against_model(im, info.tensors, source, Path(info.path).name)
    return im


# ----------------------------------------------------------------------------- the child


class LogReader:
    """Parses the child's relayed llama.cpp log: progress, fallbacks, the failure message."""

    def __init__(self, on_progress: Callable[[int, int, str], None] | None):
        self.on_progress = on_progress
        self.fallbacks: list[Fallback] = []
        self.failure: str | None = None
        self.assertion: str | None = None  # ggml's "file:line: GGML_ASSERT(...) failed" before an abort
        self.tail: deque[str] = deque(maxlen=40)

    def feed(self, line: str) -> None:
        self.tail.append(line)
        if failed := FAILED_LINE.search(line):  # may share a line with the tensor being written
            self.failure = failed[1].strip()
        if m := PROGRESS_LINE.match(line):
            if self.on_progress:
                self.on_progress(int(m[1]), int(m[2]), m[3])
        elif m := FALLBACK_LINE.search(line):
            self.fallbacks.append(Fallback(m[1], m[4], m[5], int(m[2])))
        elif not failed and self.assertion is None and ("GGML_ASSERT" in line or "GGML_ABORT" in line):
            self.assertion = line[line.find("GGML_"):].strip()

    def crash_detail(self) -> str:
        if self.assertion:
            return self.assertion
        lines = [ln.strip() for ln in self.tail if ln.strip()]
        return lines[-1] if lines else "no output"


def _stop(proc: subprocess.Popen) -> None:
    """Kill the child (SIGTERM works even inside the C call) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_child(job: dict, reader: LogReader) -> int:
    """Run the quantizer child, feeding its log lines to `reader`; return its exit status."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(job)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        # ggml's abort would otherwise run gdb for a backtrace: seconds of noise before we learn of it
        env={"GGML_NO_BACKTRACE": "1", **os.environ},
    )
    try:
        for raw in iter(proc.stdout.readline, b""):
            reader.feed(raw.decode("utf-8", errors="replace").rstrip("\n"))
        return proc.wait()
    except BaseException:  # Ctrl-C (or a progress callback's error): stop the native work now
        _stop(proc)
        raise
    finally:
        proc.stdout.close()


def _failure(rc: int, reader: LogReader, src: Path, qname: str) -> QuantizationError:
    what = f"{src.name} to {qname}"
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        return QuantizationError(f"llama.cpp crashed ({sig}) while quantizing {what}; no file was written "
                                 f"(last message: {reader.crash_detail()})")
    if reader.failure:
        # libstdc++'s message when a write fails (ENOSPC, EIO, EFBIG), which is all llama.cpp says
        hint = "writing the output failed: check the free disk space" if "iostream error" in reader.failure else None
        return QuantizationError(f"llama.cpp could not quantize {what}: {reader.failure}", hint=hint)
    return QuantizationError(f"Quantizing {what} failed with exit status {rc}: {reader.crash_detail()}")


@contextlib.contextmanager
def _weights_file(im, out: Path) -> Iterator[str | None]:
    """The imatrix as final per-column weights in a legacy file the child can read: a scratch
    file beside `out`, deleted in every case, and by the next run if a kill -9 left it."""
    if im is None:
        yield None
        return
    from .files import atomic_output
    from .imatrix_dat import write_dat

    with atomic_output(out.with_name(out.name + ".imatrix-weights"), keep=False) as path:
        write_dat(path, [(n, 1, w) for n, w in im.weights().items()], im.chunk_count, "weights")
        yield str(path)


def _progress_bar(progress, out: Path):
    """(callback, closer) for progress: True -> a tqdm bar on stderr, a callable -> itself."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=f"Quantizing {out.name}", unit="tensor", leave=False)

    def update(n: int, total: int, name: str) -> None:
        bar.total = total
        bar.n = n
        bar.set_postfix_str(name, refresh=False)
        bar.refresh()

    return update, bar.close


# ----------------------------------------------------------------------------- quantize one file


def quantize_file(
    src_gguf,
    out,
    qtype: str,
    *,
    imatrix=None,
    threads: int | None = None,
    allow_requantize: bool = False,
    pure: bool = False,
    force: bool = False,
    progress=True,
) -> QuantResult:
    """Quantize the GGUF `src_gguf` to `out` as `qtype` (e.g. "Q4_K_M").

    imatrix: None, a path (GGUF or legacy .dat, ours or llama.cpp's) or an Imatrix.
    progress: True (a progress bar), False, or a callable(n, total, tensor_name).
    """
    from .files import atomic_output, check_free_space, check_output_path
    from .quant_types import get_quant_type
    from .runtime import all_cores

    qt = get_quant_type(qtype)
    src = Path(src_gguf).expanduser().absolute()
    out = check_output_path(Path(out), force, inputs=(src,))
    info = read_source(src)
    check_requantize(info, allow_requantize)
    im = load_imatrix_for(imatrix, info, qt)
    check_free_space(out.parent, estimate_size(info, qt), what=out.name)
    on_progress, close_bar = _progress_bar(progress, out)
    reader = LogReader(on_progress)
    start = time.perf_counter()
    try:
        with atomic_output(out, force=force) as tmp, _weights_file(im, out) as weights:
            job = dict(src=str(src), dst=str(tmp), ftype=qt.ftype, nthread=threads or all_cores(),
                       allow_requantize=allow_requantize, pure=pure, imatrix=weights)
            rc = run_child(job, reader)
            if rc != 0:
                raise _failure(rc, reader, src, qt.name)
    finally:
        close_bar()
    return QuantResult(out, qt.name, src, out.stat().st_size, time.perf_counter() - start, reader.fallbacks)


# ----------------------------------------------------------------------------- the pipeline


def base_name(src: Path) -> str:
    """The name outputs are derived from: a folder's name, a GGUF's stem without its type suffix."""
    return src.name if src.is_dir() else TYPE_SUFFIX.sub("", src.stem)


def plan_outputs(src: Path, qtypes: list, out, name: str | None = None) -> list[Path]:
    """`<name>_<TYPE>.gguf` next to the source, or in the folder `out` (created if missing), or
    exactly `out` (one type)."""
    name = name or base_name(src)
    if out is not None and str(out).lower().endswith(".gguf"):
        if len(qtypes) > 1:
            raise PhiError(f"With several -q types, -o must be a folder, not the file {out}")
        return [Path(out).expanduser().absolute()]
    folder = Path(out).expanduser().absolute() if out is not None else src.parent
    if folder.exists() and not folder.is_dir():
        raise PhiError(f"-o {out} is a file, not a folder", hint="give a folder, or one -q type and OUT.gguf")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PhiError(f"Cannot create the output folder {folder}: {e.strerror}") from None
    return [folder / f"{name}_{qt.name}.gguf" for qt in qtypes]


def local_source(src, out, echo) -> tuple[Path, object, str | None]:
    """(local source, output folder or file, output base name) for a local folder or GGUF.

    The default `resolve` of quantize_source; `llm phi quantize` passes hub.resolve_for_quantize,
    which also takes Hugging Face repo ids (the hub stage sits above this one).
    """
    path = Path(str(src)).expanduser()
    if not path.exists():
        raise PhiError(f"{src} does not exist", hint="give a local Hugging Face folder or GGUF file")
    return path.absolute(), out, None


@contextlib.contextmanager
def source_gguf(src: Path, folder: Path, keep_f16: bool, force: bool, progress, echo) -> Iterator[Path]:
    """The GGUF to quantize: src itself, or src (a HF folder) converted once into `folder`.

    The conversion is atomic_output's temporary for `<name>_F16.gguf` / `_BF16.gguf` beside the
    outputs: renamed to it with keep_f16, else deleted (a killed run's is cleaned up later).
    """
    if not src.is_dir():
        yield src
        return
    from .convert import convert_checkpoint
    from .files import atomic_output, check_output_path

    kept = folder / f"{src.name}_{converted_type(src)}.gguf"
    if keep_f16:
        check_output_path(kept, force)  # before the conversion, not after it
    with atomic_output(kept, force=force, keep=keep_f16) as tmp:
        echo(f"Converting {src} to GGUF")
        convert_checkpoint(src, tmp, outtype="auto", force=True, progress=bool(progress))
        yield tmp
    if keep_f16:
        echo(f"Kept the converted model as {kept}")


def converted_type(src: Path) -> str:
    """The file type convert_checkpoint(outtype="auto") writes for src: F16 or BF16."""
    from .convert import OUTTYPES, index_weights, resolve_outtype

    ftype, _ = resolve_outtype("auto", index_weights(src))
    return next(name.upper() for name, (f, _) in OUTTYPES.items() if f == ftype)


def check_aliases(info, outs: list[Path], qtypes: list, alias: str | None, force: bool) -> list[str]:
    """The alias each output will get; refuse (before any work) one that names another file."""
    from . import families, store
    from .errors import RegistryError

    fam = families.detect_family(info.metadata)
    if fam is None:
        raise RegistryError(f"Cannot tell which Phi family {Path(info.path).name} is",
                            hint="pass --no-register, then llm phi register OUT --family FAMILY")
    base = alias or fam.key
    names = [alias if alias and len(qtypes) == 1 else store.default_alias(base, qt.name) for qt in qtypes]
    existing = store.load()
    for name, out in zip(names, outs):
        old = existing.get(name)
        if old and Path(old.path) != out and not force:
            raise RegistryError(f"Alias {name!r} is already registered for {old.path}",
                                hint="choose another --alias, --no-register, or --force to replace it")
    return names


def quantize_source(
    src,
    qtypes,
    *,
    out=None,
    imatrix=None,
    calibration=None,
    alias: str | None = None,
    register: bool = True,
    keep_f16: bool = False,
    threads: int | None = None,
    allow_requantize: bool = False,
    report: bool = True,
    eval_text=None,
    force: bool = False,
    progress=True,
    echo: Callable[[str], None] = print,
    resolve: Callable = local_source,
) -> list[QuantResult]:
    """`llm phi quantize`: SRC (HF folder, GGUF; a repo id through `resolve`) -> one GGUF per type,
    report, registration. resolve(src, out, echo) -> (local path, out, base name), called after
    the cheap checks and before any conversion."""
    from .files import check_output_path

    types = check_request(qtypes, imatrix, calibration)
    texts = _read_texts(calibration, eval_text)
    im = _read_imatrix(imatrix)  # a bad file fails now, not after a long conversion
    src, out, name = resolve(src, out, echo)
    outs = plan_outputs(src, types, out, name)
    for o in outs:
        check_output_path(o, force, inputs=(src,))
    with source_gguf(src, outs[0].parent, keep_f16, force, progress, echo) as gguf_path:
        info = read_source(gguf_path)
        check_requantize(info, allow_requantize)
        aliases = check_aliases(info, outs, types, alias, force) if register else [None] * len(types)
        if "calibration" in texts:
            im = _compute_imatrix(gguf_path, texts["calibration"], threads, echo)
        results = [quantize_file(gguf_path, o, t.name, imatrix=im, threads=threads, allow_requantize=allow_requantize,
                                 force=force, progress=progress)
                   for o, t in zip(outs, types)]
        if report:
            _quality(gguf_path, src, results, texts.get("eval"), echo)
    for r, name in zip(results, aliases):
        if name:
            from .store import register_file

            r.alias = register_file(r.path, alias=name, force=True).alias
    return results


def check_request(qtypes, imatrix, calibration) -> list:
    """The distinct QuantTypes asked for; refuse what cannot work before any conversion."""
    from .quant_types import get_quant_type

    types = list({t.name: t for t in (get_quant_type(q) for q in qtypes)}.values())
    if not types:
        raise PhiError("Give at least one -q type")
    if imatrix is not None and calibration is not None:
        raise PhiError("Use either --imatrix or --calibration, not both")
    if calibration is None and imatrix is None and (needy := [t.name for t in types if t.needs_imatrix]):
        raise QuantizationError(f"{', '.join(needy)} need an importance matrix",
                                hint="pass --imatrix FILE, or --calibration TEXTFILE to compute one")
    return types


def _read_texts(calibration, eval_text) -> dict[str, str]:
    texts = {}
    for key, path in (("calibration", calibration), ("eval", eval_text)):
        if path is not None:
            try:
                texts[key] = Path(path).expanduser().read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise PhiError(f"Cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return texts


def _read_imatrix(imatrix):
    if imatrix is None:
        return None
    from .imatrix import read_imatrix

    return read_imatrix(imatrix)


def _compute_imatrix(gguf_path: Path, text: str, threads, echo):
    from .imatrix import compute_imatrix

    echo("Computing an importance matrix from the calibration text")
    return compute_imatrix(gguf_path, text, threads=threads)


def _quality(gguf_path: Path, src: Path, results: list[QuantResult], text, echo) -> None:
    from . import quality

    rep = quality.evaluate(gguf_path, [r.path for r in results], text, labels=[r.path.name for r in results])
    rep.source.label = f"source {base_name(src)} ({read_source(gguf_path).file_type_name})"
    rep.source.path = str(src)
    quality.save_reports(rep)
    for r, row in zip(results, rep.rows):
        r.quality = quality.report_json(rep, row)
    echo(quality.format_table(rep))
