"""The quality report: how far each quantized model is from its f16/bf16 source.

On an evaluation text, run the source and every quantized model with llama-cpp-python and
compare token distributions position by position, as llama.cpp's `llama-perplexity
--kl-divergence` does: perplexity of each model, mean and 99th-percentile KL divergence
KL(source || quantized), and top-1 agreement (same most likely next token).

The text is cut into chunks of n_ctx tokens (BOS first where the model adds one); every position
of a chunk predicts the next token. The source's log-probabilities are kept in a temporary
memory-mapped file (tokens x vocab floats can be hundreds of MB for a 200k vocabulary), so only
one model is in memory at a time.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from .errors import PhiError
from .fmt import human_size

DEFAULT_N_CTX = 512
MAX_TOKENS = 4096  # caps the evaluation's cost and the reference file's size

# (header, width, format) of the printed table, in order
COLUMNS = (
    ("model", 36, "{label}"),
    ("size", 9, "{size_h}"),
    ("bpw", 6, "{bpw:.2f}"),
    ("PPL", 9, "{ppl:.3f}"),
    ("KLD mean", 9, "{kld_mean:.5f}"),
    ("KLD p99", 9, "{kld_p99:.5f}"),
    ("top-1", 7, "{top1:.2%}"),
)


@dataclass
class QualityRow:
    label: str
    path: str
    size: int  # file bytes
    bpw: float  # tensor data bits per weight, as llama.cpp reports it
    ppl: float
    kld_mean: float
    kld_p99: float
    top1: float  # share of positions where the argmax agrees with the source


@dataclass
class QualityReport:
    source: QualityRow
    rows: list[QualityRow]
    eval_text: str
    n_tokens: int
    n_ctx: int
    seconds: float


def builtin_eval_text() -> str:
    return resources.files("llm_phi_gguf.data").joinpath("eval.txt").read_text("utf-8")


def bits_per_weight(path) -> float:
    from .gguf_reader import read_gguf

    info = read_gguf(path)
    return 8.0 * sum(t.nbytes for t in info.tensors) / max(info.n_params, 1)


def _chunks(llama, text: str, n_ctx: int) -> list[list[int]]:
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)[:MAX_TOKENS]
    bos = [llama.token_bos()] if llama._model.add_bos_token() else []
    body = n_ctx - len(bos)
    pieces = [tokens[i: i + body] for i in range(0, len(tokens), body)]
    chunks = [bos + p for p in pieces if len(p) >= 2]
    if not chunks:
        raise PhiError(f"The evaluation text is too short ({len(tokens)} tokens)")
    return chunks


ROW_BLOCK = 64  # positions per numpy step: bounds memory to ~64 x vocab doubles


def _log_softmax(logits):
    import numpy as np

    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _logprob_blocks(path, chunks_or_text, n_ctx: int):
    """Yield (chunk index, chunk, first position, log-probs [block, vocab]) over all chunks.

    Position i's distribution predicts token i + 1. Only this model is loaded; it is freed after.
    """
    from .runtime import LoadOptions, all_cores, load_llama

    # batch work: all cores (llama-cpp-python's default is half of them, tuned for generation)
    llama = load_llama(path, LoadOptions(n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=all_cores()))
    try:
        chunks = _chunks(llama, chunks_or_text, n_ctx) if isinstance(chunks_or_text, str) else chunks_or_text
        for c, chunk in enumerate(chunks):
            llama.reset()
            llama.eval(chunk)
            for b in range(0, len(chunk) - 1, ROW_BLOCK):
                end = min(b + ROW_BLOCK, len(chunk) - 1)
                yield c, chunk, b, _log_softmax(llama.scores[b:end])
    finally:
        llama.close()


def _eval_n_ctx(path, n_ctx: int) -> int:
    from .gguf_reader import read_gguf

    trained = read_gguf(path).context_length or n_ctx
    return max(16, min(n_ctx, trained))


def _row(label: str, path, nll, kld, top1) -> QualityRow:
    import numpy as np

    nll, kld = np.concatenate(nll), np.concatenate(kld)
    return QualityRow(
        label=label, path=str(path), size=Path(path).stat().st_size, bpw=bits_per_weight(path),
        ppl=float(np.exp(nll.mean())), kld_mean=float(kld.mean()), kld_p99=float(np.percentile(kld, 99)),
        top1=float(np.mean(np.concatenate(top1))),
    )


def evaluate(
    source,
    quantized: list,
    text: str | None = None,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    labels: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> QualityReport:
    """Compare each of `quantized` (GGUF paths) against `source` on `text` (default: built-in)."""
    import numpy as np

    start = time.perf_counter()
    text = builtin_eval_text() if text is None else text
    n_ctx = _eval_n_ctx(source, n_ctx)
    labels = labels or [Path(p).name for p in quantized]
    with tempfile.TemporaryDirectory(prefix="llm-phi-quality-") as tmp:
        if progress:
            progress(f"Evaluating {Path(source).name}")
        chunks, refs, nll = [], [], []
        for c, chunk, b, lp in _logprob_blocks(source, text, n_ctx):
            if c == len(chunks):
                chunks.append(chunk)
            refs.append(np.lib.format.open_memmap(Path(tmp) / f"ref{len(refs)}.npy", mode="w+",
                                                  dtype=np.float32, shape=lp.shape))
            refs[-1][:] = lp
            nll.append(_nll(lp, chunk, b))
        n_pred = sum(len(c) - 1 for c in chunks)
        src_row = _row("source " + Path(source).name, source, nll, [np.zeros(n_pred)], [np.ones(n_pred)])
        rows = [_compare(label, path, chunks, refs, n_ctx, progress) for label, path in zip(labels, quantized)]
    return QualityReport(src_row, rows, text[:80], n_pred, n_ctx, time.perf_counter() - start)


def _nll(lp, chunk, first):
    import numpy as np

    targets = chunk[first + 1: first + 1 + len(lp)]
    return -lp[np.arange(len(lp)), targets]


def _compare(label, path, chunks, refs, n_ctx, progress) -> QualityRow:
    import numpy as np

    if progress:
        progress(f"Evaluating {Path(path).name}")
    nll, kld, top1 = [], [], []
    for (c, chunk, b, lp), ref in zip(_logprob_blocks(path, chunks, n_ctx), refs):
        ref = np.asarray(ref, dtype=np.float64)
        if lp.shape != ref.shape:
            raise PhiError(f"{Path(path).name} has a different vocabulary than the source; cannot compare")
        nll.append(_nll(lp, chunk, b))
        kld.append(np.maximum((np.exp(ref) * (ref - lp)).sum(axis=1), 0.0))  # rounding can give -1e-12
        top1.append(ref.argmax(axis=1) == lp.argmax(axis=1))
    return _row(label, path, nll, kld, top1)


# ----------------------------------------------------------------------------- output


def _line(cells: list[str]) -> str:
    """First column left-aligned, the numbers right-aligned, widths from COLUMNS."""
    return "  ".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, (_, w, _)) in enumerate(zip(cells, COLUMNS)))


def format_table(report: QualityReport) -> str:
    lines = [_line([h for h, _, _ in COLUMNS])]
    for row in [report.source, *report.rows]:
        label = row.label if len(row.label) <= 36 else row.label[:35] + "…"
        values = {**asdict(row), "size_h": human_size(row.size), "label": label}
        cells = [fmt.format(**values) for _, _, fmt in COLUMNS]
        lines.append(_line(cells))
    lines.append(f"({report.n_tokens} tokens in chunks of {report.n_ctx}; KLD = KL(source || quantized); "
                 f"{report.seconds:.1f} s)")
    return "\n".join(lines)


def report_json(report: QualityReport, row: QualityRow) -> dict:
    """What OUT.quality.json holds: this output's row first, then the source's."""
    return {
        "rows": [asdict(row), asdict(report.source)],
        "n_tokens": report.n_tokens,
        "n_ctx": report.n_ctx,
        "eval_text_start": report.eval_text,
    }


def save_reports(report: QualityReport) -> list[Path]:
    """Write OUT.quality.json beside each quantized output (atomically)."""
    from .files import atomic_output

    written = []
    for row in report.rows:
        path = Path(row.path + ".quality.json")
        with atomic_output(path, force=True) as tmp:
            tmp.write_text(json.dumps(report_json(report, row), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
