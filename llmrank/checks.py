"""Argument checks that run before any work: sizes, rates and dtypes given on the command line.

Each function is an ``argparse`` ``type=``: a bad value is reported by the parser as one line naming the
option, and the command never starts.
"""

from __future__ import annotations

import argparse
import math

DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def positive_int(text: str) -> int:
    """An integer ≥ 1 (a size: k, top-k, queries, steps, batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a timeout, a constant)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return value


def dtype_name(text: str) -> str:
    """A weights dtype name transformers and vLLM both know."""
    if text not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r} (one of {', '.join(DTYPE_NAMES)})")
    return text
