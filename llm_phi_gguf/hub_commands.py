"""`llm phi download REPO_ID`: parse, call hub.download_model, print.

Imported when `llm` starts: huggingface_hub and the stages load inside the command.
"""

from __future__ import annotations

import click

from .errors import one_line_errors


def register_hub_commands(phi) -> None:
    phi.add_command(download_cmd)
    phi.add_command(auto_download_cmd)


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

    REPO_ID is owner/name[@revision], or an alias of `llm phi models --available` (phi-3.5-q4,
    ...): its Microsoft repo, as its first prompt would download it. A GGUF repo: fetch the file
    for --quant (or --file) into the Hugging Face cache and register it there. A safetensors repo: fetch config, tokenizer and *.safetensors (never pickles), convert,
    quantize to --quant into llm's folder, register. HF_TOKEN or `hf auth login` opens gated repos;
    HF_HUB_OFFLINE=1 uses only the cache.
    """
    from .catalog import get_row

    row = get_row(repo_id) if "/" not in repo_id else None
    if row is not None:
        from .first_use import download_row

        if (file, revision, alias) != (None, None, None) or quant.upper() != row.quant:
            raise click.UsageError(f"{repo_id} is a catalog alias: --quant/--file/--revision/--alias apply to "
                                   f"a repo id, e.g. llm phi download {row.repo}")
        entry = download_row(row, force=force, keep_source=keep_source, echo=click.echo)
    else:
        from .hub import download_model

        entry = download_model(repo_id, quant=quant, file=file, revision=revision, alias=alias,
                               keep_source=keep_source, force=force, echo=click.echo)
    click.echo(f"Registered {entry.path} as {entry.alias} ({entry.family}, {entry.quant})")
    click.echo(f'Try: llm -m {entry.alias} "Can you introduce .NET"')


@click.command(name="auto-download")
@click.argument("state", required=False, type=click.Choice(["on", "off"]))
def auto_download_cmd(state):
    """Show or set whether a catalog model's first prompt downloads it (default: on)

    The environment variable LLM_PHI_AUTO_DOWNLOAD=0/1 overrides this setting.
    """
    from .first_use import auto_download, set_auto_download

    if state is not None:
        set_auto_download(state == "on")
    on, why = auto_download()
    click.echo(f"Automatic download on first use is {'on' if on else 'off'} ({why})")
