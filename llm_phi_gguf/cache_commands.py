"""`llm phi cache`: show and clear the on-disk prompt cache (prompt_cache.py)."""

from __future__ import annotations

import click
from click_default_group import DefaultGroup

from .errors import one_line_errors


@click.group(cls=DefaultGroup, default="show", default_if_no_args=True)
def cache():
    "Show or clear the prompt cache that speeds up `llm -c` in new processes"


@cache.command(name="show")
@one_line_errors
def show_cmd():
    "Where the prompt cache lives, how big it is and its bound"
    from . import prompt_cache

    s = prompt_cache.summary()
    limit = f"{s['limit'] / 1e9:.1f} GB" if s["limit"] else f"off ({prompt_cache.ENV_SIZE}=0)"
    click.echo(f"Prompt cache: {s['folder']}")
    click.echo(f"  {s['files']} saved conversation states, {s['bytes'] / 1e6:.1f} MB; bound {limit}")
    click.echo(f"  Change the bound with {prompt_cache.ENV_SIZE}=GB (0 = off), or -o prompt_cache false per prompt")


@cache.command(name="clear")
@one_line_errors
def clear_cmd():
    "Delete every saved conversation state"
    from . import prompt_cache

    n = prompt_cache.clear()
    click.echo(f"Deleted {n} saved conversation state{'s' if n != 1 else ''} from {prompt_cache.cache_dir()}")
