"""`llm phi quantize [run] SRC -q ...` and `llm phi quantize imatrix`: parse, call one function, print.

Imported when `llm` starts: nothing heavy at module level (the stages import llama_cpp, numpy
and gguf inside their functions).
"""

from __future__ import annotations

from pathlib import Path

import click

from .errors import one_line_errors


def register_quantize_commands(phi, quantize) -> None:
    quantize.add_command(run_cmd)
    quantize.add_command(imatrix_cmd)


@click.command(name="run")
@click.argument("src")
@click.option("-q", "--quant", "qtypes", multiple=True, default=("Q4_K_M",), show_default=True,
              help="llama.cpp file type; repeat for several outputs (see: llm phi quantize types)")
@click.option("-o", "--output", "out", help="Output file (one type, *.gguf) or folder (created if missing); default: beside SRC")
@click.option("--alias", help="Alias to register (several types: ALIAS-q4, ALIAS-q5 ...)")
@click.option("--no-register", is_flag=True, help="Do not register the outputs with llm")
@click.option("--imatrix", "imatrix", type=click.Path(dir_okay=False, exists=True),
              help="Importance matrix file (ours or llama.cpp's, GGUF or .dat)")
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True),
              help="Compute an importance matrix from this text file first")
@click.option("--eval-text", type=click.Path(dir_okay=False, exists=True),
              help="Text for the quality report (default: built-in)")
@click.option("--keep-f16", is_flag=True, help="Keep the f16/bf16 GGUF converted from a Hugging Face folder")
@click.option("--threads", type=click.IntRange(min=1), help="Quantization threads (default: all cores)")
@click.option("--allow-requantize", is_flag=True, help="Allow an already-quantized GGUF as SRC")
@click.option("--no-report", is_flag=True, help="Skip the quality report (perplexity, KL divergence)")
@click.option("--force", is_flag=True, help="Overwrite outputs and replace aliases")
@one_line_errors
def run_cmd(src, qtypes, out, alias, no_register, imatrix, calibration, eval_text, keep_f16, threads,
            allow_requantize, no_report, force):
    "Quantize SRC (Hugging Face folder, f16/bf16/f32 GGUF, or repo id) to one or more types"
    from .fmt import human_size
    from .hub import resolve_for_quantize
    from .quantize import quantize_source

    results = quantize_source(
        src, qtypes, out=out, imatrix=imatrix, calibration=calibration, alias=alias, register=not no_register,
        keep_f16=keep_f16, threads=threads, allow_requantize=allow_requantize, report=not no_report,
        eval_text=eval_text, force=force, progress=True, echo=click.echo, resolve=resolve_for_quantize,
    )
    for r in results:
        click.echo(f"Wrote {r.path} ({r.qtype}, {human_size(r.size)}, {r.seconds:.1f} s)")
        if r.fallbacks:
            shown = ", ".join(f"{f.tensor} {f.wanted}->{f.used}" for f in r.fallbacks[:6])
            more = f" and {len(r.fallbacks) - 6} more" if len(r.fallbacks) > 6 else ""
            click.echo(f"  {len(r.fallbacks)} tensor(s) fell back (row length not a multiple of the block size): "
                       f"{shown}{more}")
    for r in results:
        if r.alias:
            click.echo(f"Registered as {r.alias}. Try: llm -m {r.alias} \"Can you introduce .NET\"")


@click.command(name="imatrix")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--text", type=click.Path(dir_okay=False, exists=True),
              help="Calibration text file (default: built-in)")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file; .dat = llama.cpp's legacy format (default: MODEL.imatrix.gguf)")
@click.option("--chunks", type=click.IntRange(min=1), help="Use at most N chunks of the text")
@click.option("--n-ctx", type=click.IntRange(min=32), default=512, show_default=True, help="Tokens per chunk")
@click.option("--threads", type=click.IntRange(min=1), help="Threads (default: llama.cpp's)")
@click.option("--force", is_flag=True, help="Overwrite OUT")
@one_line_errors
def imatrix_cmd(model, text, out, chunks, n_ctx, threads, force):
    "Compute an importance matrix for MODEL (llama.cpp's GGUF imatrix format)"
    from .files import check_output_path
    from .imatrix import builtin_calibration_text, compute_imatrix, save_imatrix
    from .quantize import read_source

    out = out or model.with_name(model.stem + ".imatrix.gguf")
    check_output_path(out, force, inputs=(model,))  # fail before the (long) computation
    read_source(model.expanduser().absolute())
    data = Path(text).read_text("utf-8") if text else builtin_calibration_text()
    im = compute_imatrix(model, data, n_ctx=n_ctx, chunks=chunks, threads=threads,
                         dataset=Path(text).name if text else "built-in calibration.txt",
                         progress=lambda i, n: click.echo(f"chunk {i}/{n}", err=True))
    path = save_imatrix(im, out, force=force)
    click.echo(f"Wrote {path}: {len(im.entries)} entries, {im.chunk_count} chunks of {im.chunk_size} tokens")
