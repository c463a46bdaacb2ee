"""Ranking methods, one file each; every one is a :class:`~llmrank.rerankers.base.Reranker`."""

from __future__ import annotations

import importlib

from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Ranking, Reranker

# method -> (module:class, default prompt)
RERANKERS = {
    "pointwise": ("llmrank.rerankers.pointwise:PointwiseReranker", "yes_no"),
}

__all__ = ["RERANKERS", "Ranking", "Reranker", "build_reranker"]


def build_reranker(method: str, backend, prompt: str | None = None, **options) -> Reranker:
    """A reranker by method name with its default prompt unless one is given."""
    if method not in RERANKERS:
        raise LlmrankError(f"unknown method '{method}' (one of {', '.join(RERANKERS)})")
    target, default_prompt = RERANKERS[method]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(backend, prompt or default_prompt, **options)
