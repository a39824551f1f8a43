"""Formatting helpers shared by the commands and the stages' reports (no imports, no state)."""

from __future__ import annotations


def human_size(n: int) -> str:
    """A byte count in decimal units: 512 B, 1.5 MB, 2.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
