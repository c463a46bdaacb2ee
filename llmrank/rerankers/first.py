"""FIRST: listwise ranking from the logits of the first generated identifier (Reddy et al. 2024, "FIRST:
Faster Improved Listwise Reranking with Single Token Decoding").

A generating listwise teacher (:mod:`~llmrank.rerankers.listwise`) writes a whole permutation per window
and has it parsed and repaired. FIRST asks the same question (the RankGPT instruction, with one-token
identifiers ``[A]`` … ``[T]``), starts the answer with ``[`` and reads the next-token log-probabilities of
every identifier in ONE forward pass: sorting them gives the window's full order, so there is nothing to
parse and nothing to repair, and the log-probabilities are a soft teacher signal for each window.

Windows slide from the bottom of the list to the top exactly as in the generating reranker (``window``,
``step``, ``passes``). Each window's identifier log-probabilities are kept in ``Ranking.extra["windows"]``
(``[{"docids": [...], "logprobs": [...]}]``, the log-softmax over the whole vocabulary at each identifier,
``None`` where the backend could not see it), which the teacher file stores; the ListNet / KL losses read
them through :func:`window_distribution` (see :func:`llmrank.students.examples.window_groups`).

Exactness per backend (the request is a :class:`~llmrank.backends.base.ScoreRequest`, so each backend reads
label log-probabilities its own way):

- ``hf``: exact, the full-vocabulary log-softmax of the next token at each identifier;
- ``vllm`` (offline engine): exact, through ``SamplingParams(logprob_token_ids=…)`` (at most 128 ids);
- ``openai``: exact from a vLLM server (its ``logprob_token_ids`` extension); from any other server only
  the ``top_logprobs`` alternatives of the first token are seen (at most 20 on OpenAI's API), so an
  identifier outside them is unseen: it is counted in the cost as ``first_unseen`` and ranked below the
  seen ones in the order it had. The ranking is still complete; only its bottom is the prior order.

Identifiers must each be one token for the model (``letters`` A–Z for every tokenizer checked; ``numbers``
only while ``window <= 9`` on tokenizers that split digits, such as SmolLM2's): a window whose identifier is
not a single token is an error before anything is scored.
"""

from __future__ import annotations

import math
import string
from collections import Counter

import numpy as np

from llmrank.backends.base import Backend, ScoreRequest, label_token_ids
from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.listwise import DEFAULT_MAX_DOC_TOKENS, slide, window_ranking
from llmrank.rerankers.pointwise import document_texts
from llmrank.rerankers.scheduler import StepReranker

IDENTIFIERS = ("letters", "numbers")


def identifier_labels(kind: str, n: int) -> list[str]:
    """The first ``n`` identifiers: ``A, B, …`` (letters, at most 26) or ``1, 2, …`` (numbers)."""
    if kind == "letters":
        if n > 26:
            raise LlmrankError(f"FIRST: a window of {n} needs more than the 26 letter identifiers (window <= 26)")
        return list(string.ascii_uppercase[:n])
    if kind == "numbers":
        return [str(i + 1) for i in range(n)]
    raise LlmrankError(f"FIRST option identifiers: '{kind}' is not one of {', '.join(IDENTIFIERS)}")


def window_distribution(logprobs: list[float | None]) -> np.ndarray:
    """A window's identifier log-probabilities (``None``: unseen) as a probability distribution over its
    documents (renormalised over the identifiers; unseen ones get 0). All unseen: uniform."""
    lp = np.array([-math.inf if v is None else float(v) for v in logprobs], dtype=np.float64)
    if not np.isfinite(lp).any():
        return np.full(len(lp), 1.0 / max(1, len(lp)))
    p = np.exp(lp - lp[np.isfinite(lp)].max())
    return p / p.sum()


def order_from_logprobs(logprobs) -> list[int]:
    """Window positions by identifier log-probability, best first; ties and unseen (``-inf``) identifiers
    keep their input order."""
    lp = [(-math.inf if v is None else float(v)) for v in logprobs]
    return sorted(range(len(lp)), key=lambda i: -lp[i] if lp[i] != -math.inf else math.inf)


class FirstReranker(StepReranker):
    """Sliding-window listwise reranking by first-identifier logits: one forward pass per window."""

    method = "first"
    has_scores = False  # the final order comes from overlapping windows; the soft signal is per window

    option_bounds = {"window": {"ge": 2}, "step": {"ge": 1}, "passes": {"ge": 1}, "max_doc_tokens": {"ge": 1}}

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "first", window: int = 20, step: int = 10,
                 passes: int = 1, max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, identifiers: str = "letters",
                 prefix: str = "["):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if "first" not in self.prompt.methods:
            raise LlmrankError(f"prompt '{self.prompt.name}' is for {', '.join(self.prompt.methods)}, not first")
        if window < 2:
            raise LlmrankError("FIRST option window: must be at least 2")
        if not 1 <= step <= window:
            raise LlmrankError(f"FIRST option step: must be between 1 and the window ({window}), got {step}")
        if passes < 1:
            raise LlmrankError("FIRST option passes: must be at least 1")
        if identifiers not in IDENTIFIERS:
            raise LlmrankError(f"FIRST option identifiers: '{identifiers}' is not one of {', '.join(IDENTIFIERS)}")
        self.window, self.step, self.passes = int(window), int(step), int(passes)
        self.max_doc_tokens = max_doc_tokens
        self.identifiers = identifiers
        self.prefix = prefix
        ids = identifier_labels(identifiers, self.window)
        tok = getattr(backend, "tokenizer", None)
        if tok is not None:  # every identifier one token, before any scoring
            for label in ids:
                try:
                    label_token_ids(tok, label, variants=False)
                except ValueError:
                    raise LlmrankError(f"FIRST: identifier {label!r} is not one token for {backend.model}; use "
                                       "identifiers: letters (or a window of at most 9)") from None

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
                "window": self.window, "step": self.step, "passes": self.passes,
                "max_doc_tokens": self.max_doc_tokens, "identifiers": self.identifiers, "prefix": self.prefix}

    def build_prompt(self, query: str, passages: list[str]) -> str:
        """The model input: the chat-rendered question with the answer started by ``prefix``."""
        ids = identifier_labels(self.identifiers, len(passages))
        text = render_chat(self.backend.tokenizer, self.prompt.messages(query=query, passages=passages, ids=ids))
        return text + self.prefix

    def window_logprobs(self, query: str, passages: list[str]):
        """One window as a step: the identifiers' next-token log-probabilities (``-inf``: unseen)."""
        ids = identifier_labels(self.identifiers, len(passages))
        answer = yield ScoreRequest([self.build_prompt(query, passages)], ids, variants=False)
        if isinstance(answer, BaseException):
            raise answer
        return np.asarray(answer, dtype=np.float64)[0]

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        counts: Counter = Counter()
        texts = document_texts(self.backend.tokenizer, docs, self.max_doc_tokens, counts)
        windows = []

        def reorder(window: list[int]):
            lp = yield from self.window_logprobs(query.text, [texts[i] for i in window])
            counts["windows"] += 1
            counts["first_unseen"] += int((~np.isfinite(lp)).sum())
            windows.append({"docids": [docs[i].docid for i in window],
                            "logprobs": [round(float(v), 5) if math.isfinite(v) else None for v in lp]})
            return order_from_logprobs(lp)

        order = yield from slide(len(docs), self.window, self.step, self.passes, reorder)
        return window_ranking(docs, order, cost, counts,
                              {"window": self.window, "step": self.step, "passes": self.passes, "windows": windows})
