"""llama.cpp's file types (llama_ftype): name, number, bits per weight, imatrix need.

Numbers and bits come from llama.cpp (data/ftypes.json, from llama.cpp's llama_ftype enum and quantize tool);
the one-line descriptions are ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from .errors import PhiError

DESCRIPTIONS = {
    "F32": "32-bit float, no quantization (largest, exact)",
    "F16": "16-bit float, no quantization",
    "BF16": "bfloat16, no quantization (same range as f32)",
    "Q8_0": "8-bit, nearly lossless; the safe choice when size allows",
    "Q6_K": "6-bit k-quant, very close to f16",
    "Q5_K_M": "5-bit k-quant, medium: small quality loss",
    "Q5_K_S": "5-bit k-quant, small",
    "Q5_1": "5-bit legacy quant with offsets",
    "Q5_0": "5-bit legacy quant",
    "Q4_K_M": "4-bit k-quant, medium: the usual best size/quality trade",
    "Q4_K_S": "4-bit k-quant, small",
    "Q4_1": "4-bit legacy quant with offsets",
    "Q4_0": "4-bit legacy quant",
    "IQ4_NL": "4-bit non-linear i-quant (32-blocks)",
    "IQ4_XS": "4.25-bit i-quant, smaller than Q4_K_S at similar quality",
    "Q3_K_L": "3-bit k-quant, large",
    "Q3_K_M": "3-bit k-quant, medium",
    "Q3_K_S": "3-bit k-quant, small: noticeable loss",
    "IQ3_M": "3.66-bit i-quant, medium",
    "IQ3_S": "3.44-bit i-quant",
    "IQ3_XS": "3.3-bit i-quant",
    "IQ3_XXS": "3.06-bit i-quant",
    "Q2_K": "2-bit k-quant: large quality loss",
    "Q2_K_S": "2-bit k-quant, small",
    "IQ2_M": "2.7-bit i-quant",
    "IQ2_S": "2.5-bit i-quant",
    "IQ2_XS": "2.31-bit i-quant",
    "IQ2_XXS": "2.06-bit i-quant",
    "IQ1_M": "1.75-bit i-quant: experimental quality",
    "IQ1_S": "1.56-bit i-quant: experimental quality",
    "TQ1_0": "ternary 1.69-bit, for ternary-trained models only",
    "TQ2_0": "ternary 2.06-bit, for ternary-trained models only",
    "MXFP4_MOE": "MXFP4 for MoE experts, Q8_0 elsewhere",
    "Q1_0": "1-bit (128-blocks), experimental",
    "Q2_0": "2-bit (64-blocks), experimental",
    "NVFP4": "NVFP4 (only written by the converter for NVFP4 checkpoints)",
}

# llama-quantize's aliases
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


@dataclass(frozen=True)
class QuantType:
    name: str
    ftype: int
    bpw: float
    needs_imatrix: bool
    quantizable: bool
    description: str


def _load() -> tuple[QuantType, ...]:
    raw = json.loads(resources.files("llm_phi_gguf.data").joinpath("ftypes.json").read_text("utf-8"))
    return tuple(
        QuantType(t["name"], t["ftype_number"], t["bpw"], t["needs_imatrix"], t["quantizable"], DESCRIPTIONS.get(t["name"], ""))
        for t in raw
    )


QUANT_TYPES = _load()
BY_NAME = {t.name: t for t in QUANT_TYPES}


def get_quant_type(name: str) -> QuantType:
    key = ALIASES.get(name.upper(), name.upper())
    t = BY_NAME.get(key)
    if t is None or not t.quantizable:
        valid = ", ".join(q.name for q in QUANT_TYPES if q.quantizable)
        raise PhiError(f"Unknown quantization type {name!r} (valid: {valid})")
    return t
