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
    "first": ("llmrank.rerankers.first:FirstReranker", "first"),  # listwise from first-identifier logits
    "setwise": ("llmrank.rerankers.setwise:SetwiseReranker", "setwise"),
    "rationale": ("llmrank.rerankers.rationale:RationaleReranker", "rationale"),
    "dense": ("llmrank.rerankers.dense:DenseReranker", None),  # no LLM, no prompt: see needs_backend
    # a saved student folder (--model DIR: an LLM or encoder student) scored as it was trained; a teacher too
    "student": ("llmrank.students:student_reranker", None),
    # a student served by `llmrank serve` (vLLM /rerank): --backend http://HOST:PORT --model EXPORT_DIR
    "served": ("llmrank.serve.client:RerankClient", None),
}

PASSAGE_METHODS = ("pointwise", "qlm", "dense", "served")
"""Methods that score each document alone, so the ``passages`` option can score windows of it instead."""

TEACHER_METHODS = ("oracle", "fusion")
"""Teacher methods :func:`build_teacher` composes itself (the qrels; a fusion of member teachers), besides
every method of :data:`RERANKERS`."""

__all__ = ["PASSAGE_METHODS", "RERANKERS", "TEACHER_METHODS", "Ranking", "Reranker", "build_reranker", "build_teacher",
           "method_options", "needs_backend", "register_reranker", "reranker_class"]


def register_reranker(method: str, reranker: type[Reranker] | str, default_prompt: str | None = None) -> None:
    """Register a ranking method: a :class:`Reranker` subclass (or ``"module:Class"``) built as
    ``cls(backend, prompt, **options)``, and the prompt it uses when none is given (None: it takes none).
    Recipes may then say ``teacher: {method: <method>}``, and ``llmrank rerank --method <method>`` runs it."""
    if not isinstance(method, str) or not method.isidentifier() or method in TEACHER_METHODS:
        raise LlmrankError(f"register_reranker: a method is a new name such as 'pointwise' (got {method!r})")
    if isinstance(reranker, str) and ":" not in reranker:
        raise LlmrankError(f"register_reranker({method!r}): give a Reranker subclass or 'module:Class'")
    if not isinstance(reranker, str) and not (isinstance(reranker, type) and issubclass(reranker, Reranker)):
        raise LlmrankError(f"register_reranker({method!r}): {reranker!r} is not a Reranker subclass")
    RERANKERS[method] = (reranker, default_prompt)


def _unknown(method: str) -> LlmrankError:
    import difflib

    close = difflib.get_close_matches(str(method), list(RERANKERS), n=1)
    return LlmrankError(f"unknown method '{method}'" + (f"; did you mean '{close[0]}'?" if close else "")
                        + f" (one of {', '.join(RERANKERS)})")


def reranker_class(method: str) -> type[Reranker]:
    """The Reranker class registered as ``method`` (imported when asked for)."""
    if method not in RERANKERS:
        raise _unknown(method)
    target = RERANKERS[method][0]
    if isinstance(target, type):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_reranker(method: str, backend, prompt=None, **options) -> Reranker:
    """A reranker by method name with its default prompt unless one is given."""
    cls = reranker_class(method)
    default_prompt = RERANKERS[method][1]
    if prompt is not None and default_prompt is not None:
        from llmrank.prompts import load_prompt

        prompt = load_prompt(prompt, method=method)  # a prompt written for another method: error naming its file
    passages = options.pop("passages", None)  # whole documents as windows (llmrank.rerankers.passages)
    if passages is not None and method not in PASSAGE_METHODS:
        raise LlmrankError(f"option passages: method '{method}' does not score documents one by one "
                           f"(passages fit {', '.join(PASSAGE_METHODS)})")
    reranker = cls(backend, prompt or default_prompt, **options)
    if passages:
        from llmrank.rerankers.passages import PassageReranker

        return PassageReranker(reranker, passages)
    return reranker


def needs_backend(method: str) -> bool:
    """Whether a method runs through an LLM backend; ``dense`` has its own encoder (``uses_backend = False``)
    and is built as ``build_reranker("dense", None, model=...)``."""
    return bool(getattr(reranker_class(method), "uses_backend", True))


def method_options(method: str):
    """``(options, takes_any_other)`` a method takes in a recipe's ``teacher.options`` (``--option`` on the
    command line): the keyword parameters of its class after ``backend`` and ``prompt`` (``model`` and the
    ``qrels`` llmrank passes itself aside), or what the class declares in ``option_specs()``."""
    from llmrank.config.options import signature_options

    cls = reranker_class(method)
    declared = getattr(cls, "option_specs", None)
    if callable(declared):
        return declared()
    return signature_options(cls, skip=2, exclude=("model", "qrels"))


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
    if not needs_backend(cfg.method):  # its own model (dense: a bi-encoder), or none: no LLM backend is made
        import inspect

        takes_model = "model" in inspect.signature(reranker_class(cfg.method)).parameters
        return build_reranker(cfg.method, None, cfg.prompt, **({"model": cfg.model} if takes_model else {}), **cfg.options)
    options = dict(cfg.options)
    if options.get("rationalize"):  # the rationale teacher explains the judged labels (STaR rationalization)
        if not qrels:
            raise LlmrankError("teacher option rationalize: the teacher explains the judged labels, so the data "
                               "needs judgements (qrels); this dataset has none")
        options["qrels"] = qrels
    backend = make_backend(cfg.backend, cfg.model, **teacher_backend_options(cfg))
    return build_reranker(cfg.method, backend, cfg.prompt, **options)


def release(reranker) -> None:
    """Free the models a reranker holds (its backend, a fusion's members' backends) before the next one is
    built: a vLLM engine is shut down, and the accelerator's cached memory returned, so the next model (a
    student after the teacher, the teacher's vLLM engine after the student rows) finds the GPU empty."""
    import gc

    for m in getattr(reranker, "members", None) or []:
        release(m)
    backend = getattr(reranker, "backend", None)
    if backend is not None and hasattr(backend, "close"):
        backend.close()
        if getattr(backend, "lm", None) is not None:  # the hf backend's transformers model
            backend.lm = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def teacher_backend_options(cfg) -> dict:
    """The recipe teacher's backend options, with ``dtype: auto`` unless the recipe names one for a model
    that runs in this process (hf, vllm): bf16 on a GPU that computes it (a 72B teacher in float32 would need
    twice the memory the GPU recipes name), float32 on a CPU without bf16 units."""
    opts = dict(cfg.backend_options)
    if cfg.backend in ("hf", "vllm"):
        opts.setdefault("dtype", "auto")
    return opts
