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
from llmrank.rerankers.pointwise import truncate_document

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


class ListwiseReranker(StepReranker):
    """RankGPT sliding-window reranking by generated permutations."""

    method = "listwise"

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
        texts = []
        for d in docs:
            text, cut = truncate_document(self.backend.tokenizer, d.contents, self.max_doc_tokens)
            counts["truncated_docs"] += cut
            texts.append(text)
        order = list(range(len(docs)))
        outputs: list[str] = []
        for _ in range(self.passes):
            for start, end in sliding_windows(len(docs), self.window, self.step):
                window = order[start:end]
                perm, repairs, text = yield from self.permute_steps(query.text, [texts[i] for i in window])
                order[start:end] = [window[i] for i in perm]
                counts["windows"] += 1
                counts["repaired_windows"] += bool(repairs)
                for kind, v in repairs.items():
                    counts[f"repair_{kind}"] += v
                outputs.append(text)
        ranking = ranking_from_order([docs[i].docid for i in order])
        cost = Counter({key: v for key, v in cost.items() if v})
        cost.update(counts)
        ranking.cost = +cost
        ranking.extra = {"window": self.window, "step": self.step, "passes": self.passes, "outputs": outputs}
        return ranking
