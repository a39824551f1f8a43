"""The catalog: the Phi models people run, by the alias `llm -m` knows them as before any download.

One row per model, next to the families table (families.py): the alias, its family, Microsoft's
own source repo, the default quantization, approximate sizes, and Microsoft's own GGUF repo and
file where Microsoft publishes one of that quantization. Sources are Microsoft's repos only; any
other repo is the user's choice with `llm phi download OWNER/REPO`.

Sizes are approximate (GB = 10^9 bytes), from the repos' file listings: `download_gb` is what the
first use fetches (the GGUF, or the bf16 safetensors of a checkpoint), `file_gb` the Q4_K_M file
that stays. Nothing here does I/O or imports anything heavy: `llm models` lists these rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .store import MODEL_ID_PREFIX


@dataclass(frozen=True)
class CatalogRow:
    alias: str  # what `llm -m` takes; equal to the alias `llm phi download` gives the result
    family: str  # key of families.FAMILIES
    source: str  # Microsoft's Hugging Face checkpoint (safetensors)
    download_gb: float  # approximate size fetched on first use
    file_gb: float  # approximate size of the GGUF that is kept
    gguf_repo: str | None = None  # Microsoft's own GGUF repo with a file of `quant`, if any
    gguf_file: str | None = None  # that file (its name need not spell the type: "-q4")
    quant: str = "Q4_K_M"

    @property
    def repo(self) -> str:
        """The repo the first use downloads from."""
        return self.gguf_repo or self.source

    @property
    def download_bytes(self) -> int:
        return int(self.download_gb * 1e9)

    @property
    def file_bytes(self) -> int:
        return int(self.file_gb * 1e9)


# Phi-3-mini/3.5-mini/4-mini are 3.8B (bf16 ~7.6 GB, Q4_K_M ~2.4-2.5 GB), Phi-3-medium 14B
# (~27.9 / ~8.6 GB), Phi-4 and its reasoning models 14.7B (~29.3 / ~9.1 GB), Phi-3.5-MoE 42B
# (~83.7 / ~25.3 GB). microsoft/Phi-3-mini-4k-instruct-gguf's "-q4" file and microsoft/phi-4-gguf's
# "-q4" file are Q4_K_M (2.39 GB and 9.05 GB).
CATALOG: tuple[CatalogRow, ...] = (
    CatalogRow("phi-3.5-q4", "phi-3.5", "microsoft/Phi-3.5-mini-instruct", 7.64, 2.39),
    CatalogRow("phi-4-mini-q4", "phi-4-mini", "microsoft/Phi-4-mini-instruct", 7.67, 2.49),
    CatalogRow("phi-4-q4", "phi-4", "microsoft/phi-4", 9.05, 9.05,
               gguf_repo="microsoft/phi-4-gguf", gguf_file="phi-4-q4.gguf"),
    CatalogRow("phi-3-q4", "phi-3", "microsoft/Phi-3-mini-4k-instruct", 2.39, 2.39,
               gguf_repo="microsoft/Phi-3-mini-4k-instruct-gguf", gguf_file="Phi-3-mini-4k-instruct-q4.gguf"),
    CatalogRow("phi-3-128k-q4", "phi-3-128k", "microsoft/Phi-3-mini-128k-instruct", 7.64, 2.39),
    CatalogRow("phi-3-medium-q4", "phi-3-medium", "microsoft/Phi-3-medium-4k-instruct", 27.9, 8.57),
    CatalogRow("phi-3-medium-128k-q4", "phi-3-medium-128k", "microsoft/Phi-3-medium-128k-instruct", 27.9, 8.57),
    CatalogRow("phi-3.5-moe-q4", "phi-3.5-moe", "microsoft/Phi-3.5-MoE-instruct", 83.7, 25.3),
    CatalogRow("phi-4-mini-reasoning-q4", "phi-4-mini-reasoning", "microsoft/Phi-4-mini-reasoning", 7.67, 2.49),
    CatalogRow("phi-4-reasoning-q4", "phi-4-reasoning", "microsoft/Phi-4-reasoning", 29.3, 9.05),
    CatalogRow("phi-4-reasoning-plus-q4", "phi-4-reasoning-plus", "microsoft/Phi-4-reasoning-plus", 29.3, 9.05),
)

BY_ALIAS = {row.alias: row for row in CATALOG}


def get_row(alias: str) -> CatalogRow | None:
    """The catalog row of an alias (or of its llm model id, phi-gguf/ALIAS), or None."""
    return BY_ALIAS.get(alias.removeprefix(MODEL_ID_PREFIX))


def gb(n: float) -> str:
    return f"{n:.1f} GB" if n >= 0.95 else f"{n * 1000:.0f} MB"
