"""`llm phi ollama ...`: write Modelfiles, push models to an Ollama server, list what is there.

The work is done by llm_phi_gguf.ollama and ollama_modelfile; this module only maps options to calls and turns
PhiError into click.ClickException (one line, exit status 1) with errors.one_line_errors."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import one_line_errors

_system = click.option("--system", help="System prompt stored in the model (replaces the family's)")
_params = click.option("-p", "--parameter", "parameters", multiple=True, metavar="NAME=VALUE",
                       help="Ollama parameter, e.g. -p temperature=0.7 (stop values add to the family's)")
_host = click.option("--host", help="Ollama server URL (default: OLLAMA_HOST, else http://127.0.0.1:11434)")


@click.group()
def ollama():
    """Export models to Ollama with each Phi family's exact template and stops."""


@ollama.command()
@click.argument("model")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE")
@click.option("--force", is_flag=True, help="Overwrite FILE")
@_system
@_params
@one_line_errors
def modelfile(model, output, force, system, parameters):
    """Print a complete Modelfile for MODEL (an alias or a GGUF path)."""
    from .files import atomic_output, check_output_path
    from .ollama_modelfile import build_export, modelfile_text

    text = modelfile_text(build_export(model, system, parameters))
    if output is None:
        click.echo(text, nl=False)
        return
    out = check_output_path(output, force)
    with atomic_output(out, force=force) as tmp:
        tmp.write_text(text, "utf-8")
    click.echo(f"Wrote {out}", err=True)


@ollama.command()
@click.argument("model")
@click.option("--name", required=True, help="Ollama model name, NAME[:TAG]")
@_host
@_system
@_params
@click.option("--verify/--no-verify", default=False, help="Run a one-token generate after creating")
@click.option("--embed-template", is_flag=True,
              help="If the GGUF has no chat template, push a copy (written next to it) that carries the family's")
@click.option("--force", is_flag=True, help="Replace a model of that name that this push did not create")
@one_line_errors
def push(model, name, host, system, parameters, verify, embed_template, force):
    """Upload MODEL to an Ollama server and create NAME from it."""
    from . import ollama as api

    result = api.push(model, name, host, system, parameters, verify, echo=click.echo,
                      embed_template=embed_template, force=force)
    for note in result.notes:
        click.echo(f"Note: {note}")
    click.echo(f"Created {result.name} ({result.bytes_sent} bytes uploaded); run: ollama run {result.name}")


@ollama.command(name="list")
@_host
@one_line_errors
def list_(host):
    """Show which registered models exist on the Ollama server (by digest, or by what we pushed)."""
    from . import ollama as api

    rows = api.registered_on_server(host)
    if not rows:
        click.echo("No registered models")
    for alias, digest, names in rows:
        click.echo(f"{alias}\t{digest[7:19]}\t{', '.join(names) if names else '-'}")
