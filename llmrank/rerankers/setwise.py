"""Setwise ranking (Zhuang et al. 2024, "A Setwise Approach for Effective and Highly Efficient Zero-shot
Ranking with Large Language Models").

One prompt shows a set of ``set_size`` (c) passages labelled A, B, C, … and asks which is the most
relevant; the answer is read from the next-token probabilities of the c letters (``use_logits=True``) or
from the first letter of a greedy generation (an answer with no letter keeps the first passage of the set
and is counted in ``cost["unparseable"]``). Sorting algorithms then use "best of c" as their step:

- ``heapsort``: a (c-1)-ary max-heap, each sift step comparing a parent with its up to c-1 children in one
  prompt (as the paper's ``num_child = c - 1``); the first ``top_k`` are extracted;
- ``bubble``: ``top_k`` passes of a window of c sliding from the bottom of the list up, overlapping by one
  so the window's winner is carried up to the top.

A set shown before within the query (same passages, same order) is answered from a cache
(``cost["cache_hits"]``); ``cost["comparisons"]`` counts the set prompts sent. Position bias is reported
as ``ranking.extra["first_rate"]``: the fraction of sets won by the passage shown first (A), which in a
heap is the parent and in a bubble window the incumbent, so a judge biased to "A" moves little.
"""

from __future__ import annotations

import string
from collections import Counter

import numpy as np

from llmrank.backends.base import Backend, GenerateRequest, GenerationParams, ScoreRequest
from llmrank.data.types import Doc, Query
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.pairwise import heap_top_k_steps, parse_choice, sorted_order_ranking
from llmrank.rerankers.scheduler import StepReranker, run_steps
from llmrank.rerankers.pointwise import document_texts

DEFAULT_MAX_DOC_TOKENS = 128
STRATEGIES = ("heapsort", "bubble")


def build_setwise_prompt(prompt: PromptTemplate, tokenizer, query: str, passages: list[str], labels: list[str]) -> str:
    """The model input asking which of ``passages`` (shown with ``labels``) is the most relevant."""
    return render_chat(tokenizer, prompt.messages(query=query, passages=passages, labels=labels))


class SetwiseReranker(StepReranker):
    """Best-of-c comparisons driving a heapsort or bubble sort of the top-k."""

    method = "setwise"

    option_bounds = {"set_size": {"ge": 2}, "top_k": {"ge": 1}, "max_doc_tokens": {"ge": 1}, "max_tokens": {"ge": 1}}

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "setwise", strategy: str = "heapsort",
                 set_size: int = 4, top_k: int = 10, use_logits: bool = True,
                 max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, variants: bool = True, max_tokens: int = 8):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "setwise":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not setwise")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown setwise strategy '{strategy}' (one of {', '.join(STRATEGIES)})")
        labels = list(self.prompt.answers.values()) or list(string.ascii_uppercase)
        if not 2 <= set_size <= len(labels):
            raise ValueError(f"set_size must be between 2 and {len(labels)} (the prompt's answer labels), got {set_size}")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.strategy = strategy
        self.set_size = int(set_size)
        self.top_k = int(top_k)
        self.use_logits = use_logits
        self.max_doc_tokens = max_doc_tokens
        self.variants = variants
        self.max_tokens = max_tokens
        self.labels = labels[: self.set_size]

    @property
    def cache_key(self) -> dict:
        key = {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
               "strategy": self.strategy, "set_size": self.set_size, "top_k": self.top_k,
               "use_logits": self.use_logits, "max_doc_tokens": self.max_doc_tokens, "variants": self.variants}
        if not self.use_logits:
            key["max_tokens"] = self.max_tokens
        return key

    def choose(self, query: str, passages: list[str], counts: Counter | None = None) -> int:
        """Position in ``passages`` of the one the model finds most relevant (ties: the earliest)."""
        return run_steps(self.choose_steps(query, passages, counts), self.backend)

    def choose_steps(self, query: str, passages: list[str], counts: Counter | None = None):
        """:meth:`choose` as steps: one request of one prompt."""
        counts = counts if counts is not None else Counter()
        labels = self.labels[: len(passages)]
        prompt = build_setwise_prompt(self.prompt, self.backend.tokenizer, query, passages, labels)
        counts["comparisons"] += 1
        if self.use_logits:
            try:
                lp = yield ScoreRequest([prompt], labels, self.variants)
                lp = np.asarray(lp[0], dtype=float)
                return int(np.argmax(np.where(np.isfinite(lp), lp, -np.inf))) if np.isfinite(lp).any() else 0
            except NotImplementedError:  # a backend that only generates
                self.use_logits = False
        text = (yield GenerateRequest([prompt], GenerationParams(max_tokens=self.max_tokens)))[0].text
        choice = parse_choice(text, labels)
        if choice is None:
            counts["unparseable"] += 1
            return 0
        return choice

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """One set prompt per request."""
        counts: Counter = Counter()
        texts = document_texts(self.backend.tokenizer, docs, self.max_doc_tokens, counts)
        cache: dict[tuple[int, ...], int] = {}
        first_won = [0]  # position bias: sets won by the passage shown first (A)

        def best_of(group: list[int]):
            if len(group) == 1:
                return 0
            key = tuple(group)
            if key in cache:
                counts["cache_hits"] += 1
            else:
                cache[key] = yield from self.choose_steps(query.text, [texts[i] for i in group], counts)
                first_won[0] += cache[key] == 0
            return cache[key]

        n = len(docs)
        k = min(self.top_k, n)
        if self.strategy == "heapsort":
            top = yield from heap_top_k_steps(n, k, self.set_size - 1, best_of)
        else:
            order = list(range(n))
            c = self.set_size
            for p in range(k):
                if p >= n - 1:
                    break
                end = n
                while True:
                    start = max(p, end - c)
                    w = yield from best_of(order[start:end])
                    if w:
                        order.insert(start, order.pop(start + w))
                    if start == p:
                        break
                    end = start + 1  # the winner, now at ``start``, opens the next window up
            top = order[:k]
        ranking = sorted_order_ranking(docs, top)
        cost = Counter({key: v for key, v in cost.items() if v})
        cost.update(counts)
        ranking.cost = +cost
        ranking.extra = {"strategy": self.strategy, "set_size": self.set_size,
                         "first_rate": first_won[0] / len(cache) if cache else None}
        return ranking
