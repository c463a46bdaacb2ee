"""Pointwise reranking: each (query, document) scored alone from the next-token label distribution.

``yes_no`` prompts score P(yes) / (P(yes) + P(no)) (monoT5 / RankLLaMA style); prompts with numeric
answers (``graded``: 0–3) score the expected grade. :func:`build_pointwise_prompt` is the one function
that turns a query and a document into model input — the distillation trainer, this reranker and the
vLLM export all call it, so training, scoring and serving read the same string.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from llmrank.backends.base import Backend, ScoreRequest, two_way
from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import ranking_from_scores
from llmrank.rerankers.scheduler import StepReranker

DEFAULT_MAX_DOC_TOKENS = 384


def truncate_document(tokenizer, text: str, max_tokens: int | None) -> tuple[str, bool]:
    """``text`` cut to ``max_tokens`` tokens (from the end: the query is never touched)."""
    if tokenizer is None or not max_tokens:
        return text, False
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text, False
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), True


def truncate_documents(tokenizer, texts: list[str], max_tokens: int | None) -> list[tuple[str, bool]]:
    """:func:`truncate_document` of each text, the same strings, with one tokenizer call for all of them and
    one decode for those cut (a fast tokenizer encodes a batch in parallel: cheaper than a call a document)."""
    texts = list(texts)
    if tokenizer is None or not max_tokens or not texts:
        return [(t, False) for t in texts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    long = [i for i, row in enumerate(ids) if len(row) > max_tokens]
    out = [(t, False) for t in texts]
    if long:
        cut = tokenizer.batch_decode([ids[i][:max_tokens] for i in long], skip_special_tokens=True)
        for i, text in zip(long, cut):
            out[i] = (text, True)
    return out


def document_texts(tokenizer, docs, max_tokens: int | None, counts) -> list[str]:
    """Each document's text cut to ``max_tokens`` (:func:`truncate_documents`); ``counts["truncated_docs"]``
    grows by the number cut (the methods that show several documents at once)."""
    cut = truncate_documents(tokenizer, [d.contents for d in docs], max_tokens)
    counts["truncated_docs"] += sum(c for _, c in cut)
    return [t for t, _ in cut]


def build_pointwise_prompt(prompt: PromptTemplate, tokenizer, query: str, document: str,
                           max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS) -> tuple[str, bool]:
    """The model input for one (query, document) pair, and whether the document was truncated."""
    document, truncated = truncate_document(tokenizer, document, max_doc_tokens)
    return render_chat(tokenizer, prompt.messages(query=query, document=document)), truncated


class PointwiseReranker(StepReranker):
    """Scores every document independently; ``variants=False`` reads exactly one token per answer
    (the way a vLLM ``from_2_way_softmax`` export reads it: use it for students)."""

    method = "pointwise"

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "yes_no",
                 max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS, variants: bool = True):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "pointwise":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not pointwise")
        self.max_doc_tokens = max_doc_tokens
        self.variants = variants
        self.labels = list(self.prompt.answers.values())
        keys = list(self.prompt.answers)
        self.graded = keys != ["yes", "no"]
        if self.graded:
            try:
                self.grades = np.array([float(k) for k in keys])
            except ValueError:
                raise ValueError(f"prompt '{self.prompt.name}': answers are either {{yes, no}} or numeric grades, got {keys}") from None

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
                "max_doc_tokens": self.max_doc_tokens, "variants": self.variants}

    def context_tokens(self) -> int | None:
        """The longest prompt the backend's model takes, when the backend knows it."""
        return getattr(self.backend, "max_length", None) or getattr(self.backend, "max_model_len", None)

    def _overhead(self, query: str) -> int:
        """Tokens of the prompt around an empty document (instruction, query, template)."""
        tok = self.backend.tokenizer
        return len(tok.encode(render_chat(tok, self.prompt.messages(query=query, document="")), add_special_tokens=False))

    def check_query(self, query: Query) -> None:
        """Before any scoring: a query whose prompt alone is over the model's context is an error naming it."""
        limit, tok = self.context_tokens(), self.backend.tokenizer
        if limit and tok is not None and len(query.text.encode("utf-8")) >= limit // 2:
            need = self._overhead(query.text)
            if need >= limit:
                raise LlmrankError(f"query {query.qid}: its prompt without any document is {need} tokens, over the "
                                   f"model's context of {limit}; shorten the query")

    def prompts_for(self, query: str, documents: list[str]) -> tuple[list[str], int]:
        """The prompts for ``query`` and each document, and how many documents were cut: to ``max_doc_tokens``,
        and further (from the document side) where the whole prompt would not fit the model's context."""
        built = [build_pointwise_prompt(self.prompt, self.backend.tokenizer, query, d, self.max_doc_tokens) for d in documents]
        limit, tok = self.context_tokens(), self.backend.tokenizer
        if limit and tok is not None:
            budget = None
            for i, (text, cut) in enumerate(built):
                if len(text.encode("utf-8")) < limit:  # a token spans at least one byte: cannot be over
                    continue
                if len(tok.encode(text, add_special_tokens=False)) < limit:
                    continue
                if budget is None:
                    budget = limit - self._overhead(query) - 8
                    if budget < 1:
                        raise LlmrankError(f"a query's prompt without any document is over the model's context of "
                                           f"{limit} tokens: {query[:60]!r}…")
                doc_budget = min(budget, self.max_doc_tokens or budget)
                built[i] = (build_pointwise_prompt(self.prompt, tok, query, documents[i], doc_budget)[0], True)
        return [p for p, _ in built], sum(t for _, t in built)

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        prompts, _ = self.prompts_for(query, documents)
        return self._score_prompts(prompts)

    def _score_prompts(self, prompts: list[str]) -> np.ndarray:
        return self._scores(self.backend.label_logprobs(prompts, self.labels, variants=self.variants))

    def _scores(self, lp: np.ndarray) -> np.ndarray:
        if not self.graded:
            return two_way(lp[:, 0], lp[:, 1])
        lp = np.where(np.isfinite(lp), lp, -1e9)
        p = np.exp(lp - lp.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return p @ self.grades

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """One request: every document of the query."""
        prompts, truncated = self.prompts_for(query.text, [d.contents for d in docs])
        scores = self._scores((yield ScoreRequest(prompts, self.labels, self.variants)))
        cost = Counter(cost)
        cost["truncated_docs"] = truncated
        return ranking_from_scores(docs, scores, cost=+cost if any(v > 0 for v in cost.values()) else cost)
