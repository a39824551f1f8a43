"""`llm phi download REPO_ID`: parse, call hub.download_model, print.

Imported when `llm` starts: huggingface_hub and the stages load inside the command.
"""

from __future__ import annotations

import click

from .errors import one_line_errors


def register_hub_commands(phi) -> None:
    phi.add_command(download_cmd)


@click.command(name="download")
@click.argument("repo_id")
@click.option("-q", "--quant", default="Q4_K_M", show_default=True,
              help="llama.cpp type: the GGUF to pick from a GGUF repo, or to quantize a checkpoint to")
@click.option("--file", "file", help="A GGUF file of the repo to use as is (all parts of a split GGUF are fetched)")
@click.option("--revision", help="Branch, tag or commit (default: main; REPO_ID@REV works too)")
@click.option("--alias", help="Name to use with llm -m (default: family + quant, e.g. phi-3.5-q4)")
@click.option("--keep-source", is_flag=True,
              help="Keep a checkpoint's downloaded safetensors in the Hugging Face cache after quantizing")
@click.option("--force", is_flag=True, help="Rebuild the quantized file and replace an existing alias")
@one_line_errors
def download_cmd(repo_id, quant, file, revision, alias, keep_source, force):
    """Download a Phi model from Hugging Face and register it with llm

    A GGUF repo: fetch the file for --quant (or --file) into the Hugging Face cache and register it
    there. A safetensors repo: fetch config, tokenizer and *.safetensors (never pickles), convert,
    quantize to --quant into llm's folder, register. HF_TOKEN or `hf auth login` opens gated repos;
    HF_HUB_OFFLINE=1 uses only the cache.
    """
    from .hub import download_model

    entry = download_model(repo_id, quant=quant, file=file, revision=revision, alias=alias,
                           keep_source=keep_source, force=force, echo=click.echo)
    click.echo(f"Registered {entry.path} as {entry.alias} ({entry.family}, {entry.quant})")
    click.echo(f'Try: llm -m {entry.alias} "Can you introduce .NET"')
