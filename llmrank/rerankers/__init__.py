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

__all__ = ["RERANKERS", "Ranking", "Reranker", "build_reranker", "build_teacher", "needs_backend"]


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


def build_teacher(cfg, qrels=None) -> Reranker:
    """The Reranker a recipe's ``teacher`` section names (``oracle`` needs the qrels; ``fusion`` fuses the
    teachers of its ``members``; ``dense`` has its own encoder)."""
    from llmrank.backends import make_backend
    from llmrank.rerankers.fusion import FirstStage, FusionReranker

    if cfg.method == "oracle":
        from llmrank.rerankers.oracle import OracleReranker

        if not qrels:
            raise LlmrankError("teacher method 'oracle' needs a dataset with qrels")
        return OracleReranker(qrels)
    if cfg.method == "fusion":
        if not cfg.members:
            raise LlmrankError("teacher method 'fusion' needs 'members' (a list of teacher sections)")
        members = [build_teacher(m, qrels) for m in cfg.members]
        if cfg.include_first_stage:
            members.insert(0, FirstStage())
        return FusionReranker(members, cfg.fusion)
    if cfg.method == "dense":
        return build_reranker("dense", None, model=cfg.model, **cfg.options)
    options = dict(cfg.options)
    if options.get("rationalize"):  # the rationale teacher explains the judged labels (STaR rationalization)
        if not qrels:
            raise LlmrankError("teacher option rationalize: the teacher explains the judged labels, so the data "
                               "needs judgements (qrels); this dataset has none")
        options["qrels"] = qrels
    backend = make_backend(cfg.backend, cfg.model, **cfg.backend_options)
    return build_reranker(cfg.method, backend, cfg.prompt, **options)
