"""Ranking methods, one file each; every one is a :class:`~llmrank.rerankers.base.Reranker`."""

from __future__ import annotations

import importlib

from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Ranking, Reranker

# method -> (module:class, default prompt)
RERANKERS = {
    "pointwise": ("llmrank.rerankers.pointwise:PointwiseReranker", "yes_no"),
    "qlm": ("llmrank.rerankers.query_likelihood:QueryLikelihoodReranker", "qlm"),
    "pairwise": ("llmrank.rerankers.pairwise:PairwiseReranker", "prp"),
    "listwise": ("llmrank.rerankers.listwise:ListwiseReranker", "rankgpt"),
    "setwise": ("llmrank.rerankers.setwise:SetwiseReranker", "setwise"),
    "rationale": ("llmrank.rerankers.rationale:RationaleReranker", "rationale"),
    "dense": ("llmrank.rerankers.dense:DenseReranker", None),  # no LLM, no prompt: see needs_backend
    # a student served by `llmrank serve` (vLLM /rerank): --backend http://HOST:PORT --model EXPORT_DIR
    "served": ("llmrank.serve.client:RerankClient", None),
}

__all__ = ["RERANKERS", "Ranking", "Reranker", "build_reranker", "needs_backend"]


def build_reranker(method: str, backend, prompt=None, **options) -> Reranker:
    """A reranker by method name with its default prompt unless one is given."""
    if method not in RERANKERS:
        raise LlmrankError(f"unknown method '{method}' (one of {', '.join(RERANKERS)})")
    target, default_prompt = RERANKERS[method]
    if prompt is not None and default_prompt is not None:
        from llmrank.prompts import load_prompt

        prompt = load_prompt(prompt, method=method)  # a prompt written for another method: error naming its file
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(backend, prompt or default_prompt, **options)


def needs_backend(method: str) -> bool:
    """Whether a method runs through an LLM backend; ``dense`` has its own encoder (``uses_backend = False``)
    and is built as ``build_reranker("dense", None, model=...)``."""
    if method not in RERANKERS:
        raise LlmrankError(f"unknown method '{method}' (one of {', '.join(RERANKERS)})")
    module, cls = RERANKERS[method][0].split(":")
    return bool(getattr(getattr(importlib.import_module(module), cls), "uses_backend", True))
