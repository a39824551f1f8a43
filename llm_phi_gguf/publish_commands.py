"""`llm phi publish MODEL_OR_FILE... --repo OWNER/NAME`: parse, call publish.publish, print.

Imported when `llm` starts: huggingface_hub and the stage load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from .errors import one_line_errors


def register_publish_commands(phi) -> None:
    phi.add_command(publish_cmd)


@click.command(name="publish")
@click.argument("models", nargs=-1, required=True)
@click.option("--repo", required=True, help="Model repo to publish to, OWNER/NAME (created if missing)")
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility)")
@click.option("--revision", help="Branch to commit to (default: main; created from main if missing)")
@click.option("--message", help="Commit message (default: Publish TYPES GGUF with llm-phi-gguf VERSION)")
@click.option("--imatrix", "imatrix", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Importance matrix used for the quantization, to upload and describe")
@click.option("--base-model", help="Source repo for the card (default: read from the GGUF and its report)")
@click.option("--dry-run", is_flag=True, help="Print the model card and the file list; upload nothing")
@one_line_errors
def publish_cmd(models, repo, private, revision, message, imatrix, base_model, dry_run):
    """Publish GGUF files to a Hugging Face model repo with a model card

    MODELS are registered aliases or GGUF paths (a split GGUF brings all its parts). Their
    .quality.json reports, the importance matrix, the family's Ollama Modelfile and a README.md
    card with the measured quality go up in one commit; files the repo already holds unchanged
    are skipped. Needs a write token: HF_TOKEN or `hf auth login`.
    """
    from .model_card import size_text
    from .publish import publish

    result = publish(list(models), repo, private=private, revision=revision, message=message, dry_run=dry_run,
                     imatrix=list(imatrix), base=base_model, echo=click.echo)
    if dry_run:
        click.echo(result.card)
    for u in result.uploads:
        click.echo(f"{u.status:9} {u.path_in_repo:48} {size_text(u.size):>9}  {u.what}")
    for note in result.notes:
        click.echo(note)
    if dry_run:
        click.echo(f"Dry run: nothing was uploaded to {result.repo_id}@{result.revision}")
    elif result.commit_url:
        click.echo(f"Published {len(result.changed)} file(s) to {result.repo_id}@{result.revision}: {result.commit_url}")
