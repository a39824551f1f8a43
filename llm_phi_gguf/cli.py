"""`llm phi ...`: click commands that parse, call one plain function, and print.

Every PhiError becomes a one-line click.ClickException; Ctrl-C ends with a short message
(the stages themselves guarantee that no partial output is left behind).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click_default_group import DefaultGroup

from .errors import PhiError, one_line_errors
from .fmt import human_size


@click.group()
def phi():
    "Run, convert, quantize and export Microsoft Phi GGUF models"


# ------------------------------------------------------------------------- registry


@phi.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--alias", help="Name to use with llm -m (default: family + quant, e.g. phi-3.5-q4)")
@click.option("--family", help="Phi family, when it cannot be detected (see `llm phi families`)")
@click.option("--template", type=click.Path(dir_okay=False), help="A Jinja chat template file to use instead of the GGUF's")
@click.option("--gpu-layers", type=int, help="Default layers to offload to the GPU (-1 = all)")
@click.option("--n-ctx", type=int, help="Default context window in tokens")
@click.option("--force", is_flag=True, help="Replace an existing alias")
@one_line_errors
def register(path, alias, family, template, gpu_layers, n_ctx, force):
    "Register a Phi GGUF file so llm can run it"
    from . import store

    entry = store.register_file(
        path, alias=alias, family=family, template=template, gpu_layers=gpu_layers, n_ctx=n_ctx, force=force
    )
    click.echo(f"Registered {entry.path} as {entry.alias} ({entry.family}, {entry.quant})")
    if n_ctx:
        from .chat import gguf_metadata
        from .model import warn_context

        warn_context(gguf_metadata(entry.path), n_ctx)
    click.echo(f'Try: llm -m {entry.alias} "Can you introduce .NET"')


@phi.command(name="models")
@click.option("--json", "as_json", is_flag=True, help="Output JSON")
@click.option("-v", "--verbose", is_flag=True, help="Show quality reports and load settings")
@click.option("--available", is_flag=True, help="List the catalog (downloaded on first use) with what is local")
@one_line_errors
def models_(as_json, verbose, available):
    "List registered Phi models"
    from . import store

    entries = store.load()
    if available:
        return _print_catalog(entries, as_json)
    if as_json:
        click.echo(json.dumps([vars(e) for e in entries.values()], indent=2))
        return
    if not entries:
        click.echo('No Phi models registered. Try: llm -m phi-3.5-q4 "Can you introduce .NET" (downloads it on '
                   "first use; llm phi models --available lists the others), llm phi demo, or llm phi register FILE.gguf")
        return
    for e in entries.values():
        missing = "" if Path(e.path).exists() else "  [MISSING FILE]"
        click.echo(f"{e.alias:24} {e.family:18} {e.quant or '?':8} {human_size(e.size):>9}  {e.path}{missing}")
        click.echo(f"{'':24} template: {template_source(e)}")
        if verbose:
            _print_details(e)


def _print_catalog(entries, as_json: bool) -> None:
    from .catalog import CATALOG
    from .first_use import local_state
    from .hub import Hub

    hub = Hub.from_env()
    rows = [(row, local_state(row, entries, hub)) for row in CATALOG]
    if as_json:
        click.echo(json.dumps([{**vars(row), "repo": row.repo, "state": state} for row, state in rows], indent=2))
        return
    for row, state in rows:
        click.echo(f"{row.alias:24} {row.family:21} {row.quant:7} {row.file_gb:>5.1f} GB  {row.repo}")
        click.echo(f"{'':24} {state}")


def template_source(entry) -> str:
    if entry.template:
        return f"file {entry.template}"
    from . import chat

    try:
        return "GGUF" if chat.gguf_metadata(entry.path).get("tokenizer.chat_template") else f"family {entry.family}"
    except (PhiError, OSError):
        return "unknown (file unreadable)"


def _print_details(entry) -> None:
    settings = {k: v for k, v in (("gpu_layers", entry.gpu_layers), ("n_ctx", entry.n_ctx)) if v is not None}
    if settings:
        click.echo(f"{'':24} defaults: {settings}")
    report = Path(entry.path + ".quality.json")
    if report.exists():
        try:
            data = json.loads(report.read_text())
            rows = data.get("rows", data) if isinstance(data, dict) else data
            click.echo(f"{'':24} quality: {json.dumps(rows)[:400]}")
        except ValueError:
            click.echo(f"{'':24} quality: unreadable report {report}")


@phi.command()
@click.argument("name")
@click.option("--delete-file", is_flag=True, help="Also delete the GGUF file")
@one_line_errors
def remove(name, delete_file):
    "Unregister a model (and optionally delete its file)"
    from . import store

    entry = store.remove(name)
    click.echo(f"Removed {entry.alias}")
    if delete_file:
        Path(entry.path).unlink(missing_ok=True)
        click.echo(f"Deleted {entry.path}")


@phi.command()
def families():
    "List the Phi families this plugin knows"
    from .families import FAMILIES

    for f in FAMILIES:
        click.echo(f"{f.key:22} {f.gguf_arch:7} {f.tokenizer:4} ctx {f.trained_ctx:>6}  {f.title}  [{f.template}]")


# ------------------------------------------------------------------------- inspection


@phi.command()
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("-s", "--system", help="System prompt")
@click.option("--messages", type=click.File("r"), help='JSON list of {"role","content"} (- for stdin)')
@one_line_errors
def render(model, prompt, system, messages):
    "Print exactly the prompt text the model will see"
    from . import chat, families, store

    entry = store.get(model)
    if messages is not None:
        convo = read_messages(messages)
    else:
        if prompt is None:
            raise click.ClickException("Give a PROMPT or --messages")
        convo = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    fmt = chat.chat_format(chat.gguf_metadata(entry.path), families.get_family(entry.family), entry.template)
    click.echo(fmt.render(convo, add_generation_prompt=True), nl=False)


JSON_KINDS = {dict: "an object", str: "a string", int: "a number", float: "a number", bool: "a boolean",
              type(None): "null"}


def read_messages(file) -> list[dict]:
    """--messages: a JSON list of {"role", "content"} objects (real checks: python -O drops asserts)."""
    shape = 'a JSON list of {"role": ..., "content": ...} objects'
    try:
        convo = json.load(file)
    except ValueError as e:
        raise click.ClickException(f"--messages is not valid JSON ({e}); give {shape}") from None
    if not isinstance(convo, list):
        kind = JSON_KINDS.get(type(convo), "a value")
        raise click.ClickException(f"--messages holds {kind}, not a list; give {shape}")
    for i, m in enumerate(convo):
        if not isinstance(m, dict) or not {"role", "content"} <= m.keys():
            raise click.ClickException(f"--messages item {i} is not an object with \"role\" and \"content\"; "
                                       f"give {shape}")
    return convo


@phi.command()
@click.option("--refresh-probe", is_flag=True, help="Re-run the quantized-inference probe")
def doctor(refresh_probe):
    "Check the llama.cpp build, GPU offload, the AMX probe and registered files"
    from . import runtime, store
    from .doctor import report

    ok = report(runtime, store, refresh_probe, click.echo)
    if not ok:
        sys.exit(1)


# ------------------------------------------------------------------------- demo


@phi.command()
@click.option("--prompt", default="Can you introduce .NET", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild the demo GGUFs even if they exist")
@one_line_errors
def demo(prompt, force):
    "Convert, quantize, register and run the built-in tiny demo model, offline"
    from .demo_run import run_demo

    run_demo(prompt, force=force, echo=click.echo)


# ------------------------------------------------------------------------- quantize


@phi.group(cls=DefaultGroup, default="run", default_if_no_args=False)
def quantize():
    "Quantize a Phi checkpoint or GGUF (default command), convert, list types"


@quantize.command(name="convert")
@click.argument("src")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0", "auto"]), default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite OUT")
@one_line_errors
def convert_cmd(src, out, outtype, force):
    "Convert a Hugging Face Phi checkpoint folder to GGUF"
    from .convert import convert_checkpoint
    from .hub import resolve_source

    folder = resolve_source(src, want="checkpoint", echo=click.echo)
    path = convert_checkpoint(folder, out, outtype=outtype, force=force)
    click.echo(f"Wrote {path}")


@quantize.command(name="types")
def types_cmd():
    "List llama.cpp quantization types"
    from .quant_types import QUANT_TYPES

    for t in QUANT_TYPES:
        need = "needs imatrix" if t.needs_imatrix else ""
        click.echo(f"{t.name:10} {t.bpw:6.2f} bpw  {t.description:48} {need}")


# The default `run` command, `imatrix` and the hub-backed `download` live in modules of their
# own stage; they attach themselves here.
from .quantize_commands import register_quantize_commands  # noqa: E402

register_quantize_commands(phi, quantize)

from .hub_commands import register_hub_commands  # noqa: E402
from .ollama_commands import ollama  # noqa: E402

register_hub_commands(phi)

from .publish_commands import register_publish_commands  # noqa: E402

register_publish_commands(phi)

phi.add_command(ollama)
from .cache_commands import cache as cache_group  # noqa: E402

phi.add_command(cache_group)
