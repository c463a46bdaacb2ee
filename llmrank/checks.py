"""Argument checks that run before any work: sizes, rates and dtypes given on the command line.

Each function is an ``argparse`` ``type=``: a bad value is reported by the parser as one line naming the
option, and the command never starts.
"""

from __future__ import annotations

import argparse
import math

from llmrank.backends.dtype import CHOICES as DTYPE_NAMES


def _number(text: str, convert, expected: str, ok, bad: str):
    """``convert(text)`` when ``ok`` of it: else one ``argparse`` error, ``expected …, got 'text'`` for what is
    not a number and ``bad`` (formatted with ``value`` and ``text``) for a number out of range."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(bad.format(value=value, text=text))
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (a size: k, top-k, queries, steps, batch size)."""
    return _number(text, int, "a whole number ≥ 1", lambda v: v >= 1, "must be ≥ 1, got {value}")


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (0 switches something off)."""
    return _number(text, int, "a whole number ≥ 0", lambda v: v >= 0, "must be ≥ 0, got {value}")


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a timeout, a constant)."""
    return _number(text, float, "a number > 0", lambda v: math.isfinite(v) and v > 0,
                   "must be a finite number > 0, got {text}")


def non_negative_float(text: str) -> float:
    return _number(text, float, "a number ≥ 0", lambda v: math.isfinite(v) and v >= 0,
                   "must be a finite number ≥ 0, got {text}")


def share(text: str) -> float:
    """A share in (0, 1] (1: all)."""
    return _number(text, float, "a number in (0, 1]", lambda v: 0 < v <= 1, "must be a number in (0, 1], got {text!r}")


def dtype_name(text: str) -> str:
    """A weights dtype name transformers and vLLM both know."""
    if text not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r} (one of {', '.join(DTYPE_NAMES)})")
    return text


def resamples(text: str) -> int:
    """Randomization-test resamples: at least 100 (fewer cannot give a p-value below 0.01; the recipe
    schema asks the same)."""
    return _number(text, int, "a whole number ≥ 100", lambda v: v >= 100,
                   "must be ≥ 100 (a p-value from fewer resamples means little), got {value}")
