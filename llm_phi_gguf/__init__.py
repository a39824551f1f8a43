"""llm-phi-gguf: run, convert, quantize and ship Microsoft Phi models as GGUF from `llm`.

This module holds only llm's hooks. llm imports every plugin on every command, so nothing
heavy (llama_cpp, numpy, torch, huggingface_hub) is imported here: each stage imports what it
needs inside the functions that need it.
"""

import sys

import llm


@llm.hookimpl
def register_models(register):
    from . import store
    from .errors import PhiError
    from .model import PhiAsyncModel, PhiModel

    try:
        entries = store.load()
    except PhiError as e:  # a broken registry must not break every other llm command
        print(f"llm-phi-gguf: {e}", file=sys.stderr)
        return
    for entry in entries.values():
        register(PhiModel(entry), PhiAsyncModel(entry), aliases=(entry.alias,))
    # The catalog's models, downloaded on first use; a registered model with the alias wins.
    from .catalog import CATALOG
    from .first_use import CatalogAsyncModel, CatalogModel

    for row in CATALOG:
        if row.alias not in entries:
            register(CatalogModel(row), CatalogAsyncModel(row), aliases=(row.alias,))


@llm.hookimpl
def register_commands(cli):
    from .cli import phi

    cli.add_command(phi)
