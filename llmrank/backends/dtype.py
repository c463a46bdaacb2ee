"""``--dtype auto``: bfloat16 where the hardware computes it natively, float32 elsewhere.

bf16 halves the weight and activation traffic and, on hardware with bf16 matrix units, runs matmuls several
times faster than fp32 (measured on an avx512_bf16 CPU: SmolLM2 yes/no scoring about 3× faster). It is
picked on a GPU that supports bf16 (``torch.cuda.is_bf16_supported()``) and on a CPU with ``avx512_bf16``
or AMX (``amx_bf16``), as reported by oneDNN (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) or, failing
that, ``/proc/cpuinfo``. Anything else gets float32. Exactness checks (tests, score comparisons between
backends) name ``float32`` explicitly.
"""

from __future__ import annotations

import functools

NAMES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
         "float16": "float16", "fp16": "float16", "half": "float16"}
"""Every weights dtype name llmrank takes -> the canonical name transformers, torch and vLLM know. The one
table of dtype names: option checks, the backends, export and serving all read it."""

CHOICES = ("auto", *NAMES)
"""What a ``dtype`` option or recipe key may say."""


def canonical(name: str) -> str:
    """``fp32`` -> ``float32`` …; ``auto`` and unknown names unchanged (for the caller to resolve or reject)."""
    return NAMES.get(name, name)


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> str | None:
    """The CPU feature that makes bf16 fast (``amx_bf16`` / ``avx512_bf16``), or None."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return flag
    try:
        import torch

        if torch.ops.mkldnn._is_mkldnn_bf16_supported() and "avx512f" in flags:
            return "avx512 (oneDNN bf16)"
    except Exception:  # noqa: BLE001 - an older torch without the probe: no bf16 claim
        pass
    return None


def auto_dtype(device: str | None = None) -> tuple[str, str]:
    """``(dtype name, why)`` for ``--dtype auto`` on ``device`` (``cuda``/``cpu``; None: cuda when present)."""
    import torch

    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if cuda:
        if torch.cuda.is_bf16_supported():
            return "bfloat16", f"GPU {torch.cuda.get_device_name()} supports bf16"
        return "float32", f"GPU {torch.cuda.get_device_name()} has no bf16"
    feature = cpu_bf16()
    if feature:
        return "bfloat16", f"CPU has {feature}"
    return "float32", "CPU has no bf16 matrix instructions (avx512_bf16 / amx)"


def resolve(dtype: str, device: str | None = None) -> tuple[str, str | None]:
    """``(canonical dtype name, why)``; ``why`` is set only when ``dtype`` was ``auto``."""
    if dtype == "auto":
        return auto_dtype(device)
    if dtype not in NAMES:
        raise ValueError(f"unknown dtype '{dtype}' (one of auto, {', '.join(NAMES)})")
    return NAMES[dtype], None
