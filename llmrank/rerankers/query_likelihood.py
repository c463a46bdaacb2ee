"""Query generation likelihood (UPR; Sachan et al., "Improving Passage Retrieval with Zero-Shot Question
Generation", EMNLP 2022): a document's score is how likely the model finds the query as the answer to
"write a question about this passage", ``log P(query | document) / |query|`` (mean over the query tokens).

The prompt (``prompts/qlm.yaml``, ``methods: [qlm]``) renders the document only; the query is appended as
the assistant's answer and its tokens are scored in one forward pass per batch (teacher forcing). The
prompt and the query are tokenized separately and joined as ids, so the query's tokens are the same for
every document. Needs a backend that exposes its causal LM (``hf``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from llmrank.backends.base import Backend, Timer
from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores
from llmrank.rerankers.pointwise import DEFAULT_MAX_DOC_TOKENS, truncate_document


def continuation_logprobs(backend: Backend, prompts: list[str], continuation: str) -> np.ndarray:
    """Mean log-probability of ``continuation``'s tokens after each prompt, ``[len(prompts)]``."""
    import torch

    lm, tok = getattr(backend, "lm", None), backend.tokenizer
    if lm is None or tok is None:
        raise LlmrankError(f"method 'qlm' needs a backend that exposes its language model (hf); "
                           f"backend '{backend.name}' does not")
    cont = tok.encode(continuation, add_special_tokens=False)
    if not cont:
        raise LlmrankError("method 'qlm': the query is empty after tokenization")
    seqs = [tok.encode(p, add_special_tokens=False) + cont for p in prompts]
    out = np.empty(len(seqs), dtype=np.float64)
    n = len(cont)
    backend.stats["calls"] += len(seqs)
    backend.stats["prompt_tokens"] += sum(len(s) for s in seqs)
    with Timer(backend.stats), torch.inference_mode():
        for batch in backend._batches([len(s) for s in seqs]):
            ids, mask = backend._pad([seqs[i] for i in batch])
            logits = lm(input_ids=ids, attention_mask=mask).logits.float()
            for r, i in enumerate(batch):
                end = len(seqs[i])
                # positions end-n-1 … end-2 predict the continuation's n tokens
                lp = torch.log_softmax(logits[r, end - n - 1 : end - 1], dim=-1)
                target = torch.tensor(cont, device=lp.device)
                out[i] = float(lp.gather(1, target[:, None]).mean())
    return out


class QueryLikelihoodReranker(Reranker):
    """Scores each document by the mean log-likelihood of the query given the document."""

    method = "qlm"

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "qlm",
                 max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS):
        self.backend = backend
        self.prompt = load_prompt(prompt, method="qlm")
        self.max_doc_tokens = max_doc_tokens

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
                "max_doc_tokens": self.max_doc_tokens}

    def score(self, query: str, documents: list[str]) -> tuple[np.ndarray, int]:
        tok = self.backend.tokenizer
        prompts, truncated = [], 0
        for d in documents:
            d, cut = truncate_document(tok, d, self.max_doc_tokens)
            truncated += cut
            prompts.append(render_chat(tok, self.prompt.messages(document=d)))
        return continuation_logprobs(self.backend, prompts, query), truncated

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        before = Counter(self.backend.stats)
        scores, truncated = self.score(query.text, [d.contents for d in docs])
        cost = Counter(self.backend.stats)
        cost.subtract(before)
        cost["truncated_docs"] = truncated
        return ranking_from_scores(docs, scores, cost=+cost if any(v > 0 for v in cost.values()) else cost)
