"""Listwise permutation generation with a sliding window (RankGPT; Sun et al. 2023, "Is ChatGPT Good at
Search? Investigating Large Language Models as Re-Ranking Agents").

The model sees ``window`` numbered passages ``[1] … [w]`` and writes their order (``[2] > [1] > …``).
Windows slide from the BOTTOM of the list to the top by ``step``, each reordering its slice in place, so
relevant passages climb through overlapping windows (with 20 candidates, window 10 and step 5: slices
10–20, 5–15, 0–10); ``passes`` repeats the whole sweep. Every generated answer goes through
:func:`~llmrank.rerankers.permutation.parse_permutation`, so any text becomes a valid order; the repairs it
made are added to the cost as ``repair_<kind>`` (``repair_missing``, ``repair_duplicate``, …).
"""

from __future__ import annotations

from collections import Counter

from llmrank.backends.base import Backend, GenerateRequest, GenerationParams
from llmrank.data.types import Doc, Query
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import ranking_from_order
from llmrank.rerankers.scheduler import StepReranker, run_steps
from llmrank.rerankers.permutation import parse_permutation
from llmrank.rerankers.pointwise import document_texts

DEFAULT_MAX_DOC_TOKENS = 128


def build_listwise_prompt(prompt: PromptTemplate, tokenizer, query: str, passages: list[str]) -> str:
    """The model input asking for the order of ``passages`` (shown as ``[1]``, ``[2]``, …)."""
    return render_chat(tokenizer, prompt.messages(query=query, passages=passages))


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` slices from the bottom of a list of ``n`` to its top; the last one starts at 0."""
    out: list[tuple[int, int]] = []
    end = n
    while n > 1:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            break
        end -= step
    return out


def slide(n: int, window: int, step: int, passes: int, reorder):
    """Sliding-window reranking of ``n`` documents as steps: ``passes`` times, each window of
    :func:`sliding_windows` from the bottom up is put in the order ``yield from reorder(positions)`` gives
    (0-based within the window), after the one below it. Returns the final order of ``0..n-1``. Shared by
    ``listwise`` (a generated permutation per window) and ``first`` (the identifiers' log-probabilities)."""
    order = list(range(n))
    for _ in range(passes):
        for start, end in sliding_windows(n, window, step):
            positions = order[start:end]
            perm = yield from reorder(positions)
            order[start:end] = [positions[i] for i in perm]
    return order


def window_ranking(docs: list[Doc], order: list[int], cost: Counter, counts: Counter, extra: dict):
    """The ranking of a sliding-window method: ``docs`` in ``order``, its cost (the batch's nonzero ``cost``
    plus this query's ``counts``) and ``extra``."""
    ranking = ranking_from_order([docs[i].docid for i in order])
    cost = Counter({k: v for k, v in cost.items() if v})
    cost.update(counts)
    ranking.cost = +cost
    ranking.extra = extra
    return ranking


class ListwiseReranker(StepReranker):
    """RankGPT sliding-window reranking by generated permutations."""

    method = "listwise"

    option_bounds = {"window": {"ge": 2}, "step": {"ge": 1}, "passes": {"ge": 1}, "max_doc_tokens": {"ge": 1}}

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "rankgpt", window: int = 20, step: int = 10,
                 passes: int = 1, max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, max_tokens: int | None = None):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "listwise":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not listwise")
        if window < 2:
            raise ValueError("window must be at least 2")
        if not 1 <= step <= window:
            raise ValueError(f"step must be between 1 and the window ({window}), got {step}")
        if passes < 1:
            raise ValueError("passes must be at least 1")
        self.window = int(window)
        self.step = int(step)
        self.passes = int(passes)
        self.max_doc_tokens = max_doc_tokens
        self.max_tokens = max_tokens

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
                "window": self.window, "step": self.step, "passes": self.passes,
                "max_doc_tokens": self.max_doc_tokens, "max_tokens": self.max_tokens}

    def generation_budget(self, w: int) -> int:
        """Tokens to generate for a window of ``w``: ``max_tokens``, or enough for ``[12] > `` per passage."""
        return self.max_tokens or 5 * w + 8

    def permute(self, query: str, passages: list[str]) -> tuple[list[int], Counter, str]:
        """One window: the order the model gives ``passages`` (0-based), the repairs made, the raw text."""
        return run_steps(self.permute_steps(query, passages), self.backend)

    def permute_steps(self, query: str, passages: list[str]):
        """:meth:`permute` as steps: one request of one prompt."""
        prompt = build_listwise_prompt(self.prompt, self.backend.tokenizer, query, passages)
        gen = (yield GenerateRequest([prompt], GenerationParams(max_tokens=self.generation_budget(len(passages)))))[0]
        order, repairs = parse_permutation(gen.text, len(passages))
        return order, repairs, gen.text

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """One window per request, bottom to top, each after the one below it."""
        counts: Counter = Counter()
        texts = document_texts(self.backend.tokenizer, docs, self.max_doc_tokens, counts)
        outputs: list[str] = []

        def reorder(window: list[int]):
            perm, repairs, text = yield from self.permute_steps(query.text, [texts[i] for i in window])
            counts["windows"] += 1
            counts["repaired_windows"] += bool(repairs)
            for kind, v in repairs.items():
                counts[f"repair_{kind}"] += v
            outputs.append(text)
            return perm

        order = yield from slide(len(docs), self.window, self.step, self.passes, reorder)
        return window_ranking(docs, order, cost, counts,
                              {"window": self.window, "step": self.step, "passes": self.passes, "outputs": outputs})
