"""Many queries in flight: the scheduler gives every method the rankings and counts of one query at a time.

Each method runs ``rerank_all`` over the same queries twice on the tiny random model in fp32: one query at a
time (``in_flight = 1``) and with all of them in flight (their requests answered together, wave by wave,
hf batches mixing queries). Rankings, scores (to float noise of batch composition), comparison counts,
calls and tokens must agree; the in-flight run must really have put several queries in one wave.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from llmrank.backends.base import Backend, Generation, ScoreRequest, split_cost
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.rerankers import build_reranker

WORDS = ("water boils at one hundred degrees the tower stands in paris cats sleep most of the day a river "
         "runs to the sea tea is brewed with hot water rain falls from clouds in autumn").split()


def _data(n_queries: int = 3, n_docs: int = 6, seed: int = 0) -> RankingData:
    rng = np.random.default_rng(seed)
    docs = {f"d{i}": Doc(f"d{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(6, 30)))))
            for i in range(3 * n_docs)}
    queries = {f"q{i}": Query(f"q{i}", " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))))
               for i in range(n_queries)}
    ids = list(docs)
    cands = Candidates({q: [(d, 1.0 - j / 100) for j, d in enumerate(rng.choice(ids, size=n_docs, replace=False))]
                        for q in queries})
    return RankingData("toy", queries, docs, candidates=cands, source="toy")


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from llmrank.backends.hf import HFBackend

    return HFBackend(str(tiny_model_dir), dtype="float32", batch_size=4)


class WaveSpy:
    """Records how many requests each ``run_requests`` call carried."""

    def __init__(self, backend):
        self.backend, self.sizes = backend, []
        self._orig = backend.run_requests

    def __enter__(self):
        def spy(requests):
            self.sizes.append(len(requests))
            return self._orig(requests)

        self.backend.run_requests = spy
        return self

    def __exit__(self, *exc):
        del self.backend.run_requests


CONFIGS = [
    ("pointwise", {}),
    ("pointwise", {"prompt": "graded"}),
    ("pairwise", {"strategy": "allpair"}),
    ("pairwise", {"strategy": "heapsort", "top_k": 3}),
    ("pairwise", {"strategy": "bubble", "top_k": 3}),
    ("setwise", {"strategy": "heapsort", "top_k": 3}),
    ("setwise", {"strategy": "bubble", "top_k": 3, "set_size": 3}),
    ("listwise", {"window": 4, "step": 2, "max_tokens": 8}),
    ("rationale", {"max_tokens": 8}),
]


@pytest.mark.parametrize("method,options", CONFIGS, ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for m, o in CONFIGS])
def test_in_flight_equals_one_query_at_a_time(backend, method, options):
    data = _data()
    reranker = build_reranker(method, backend, **options)
    reranker.in_flight = 1
    with WaveSpy(backend) as alone:
        run1, r1 = reranker.rerank_all(data, data.candidates, top_k=6, progress=False)
    reranker.in_flight = 3
    with WaveSpy(backend) as together:
        run4, r4 = reranker.rerank_all(data, data.candidates, top_k=6, progress=False)
    assert max(alone.sizes) == 1
    assert max(together.sizes) == len(data.queries)  # every query's next request in one wave
    assert len(together.sizes) < len(alone.sizes) or len(alone.sizes) == len(data.queries)
    assert list(r1) == list(r4) == list(data.queries)
    for qid in data.queries:
        a, b = r1[qid], r4[qid]
        assert a.docids == b.docids, qid
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        ca = {k: v for k, v in a.cost.items() if k != "seconds"}
        cb = {k: v for k, v in b.cost.items() if k != "seconds"}
        assert ca == cb, qid
        assert b.cost["seconds"] > 0 and b.cost["calls"] > 0
        if method in ("pairwise", "setwise") and options.get("strategy") != "allpair":
            assert a.cost["comparisons"] > 1
        if method == "rationale":
            assert a.rationales == b.rationales
        assert run1.docids(qid) == run4.docids(qid)


def test_mixed_prefix_batches_equal_separate_calls(backend):
    """Two requests with different shared prefixes in one batch: left-padded cached prefixes give the same
    log-probabilities as scoring each request alone."""
    tok = backend.tokenizer
    g1 = [tok.encode("You judge relevance. Query: how hot does water boil? Document: " + d) for d in
          ("water boils at one hundred degrees", "cats sleep", "tea is brewed with hot water from the kettle")]
    g2 = [tok.encode("You judge relevance. Query: where is the tower? It stands in a city. Document: " + d) for d in
          ("the tower stands in paris", "rain falls")]
    g3 = [tok.encode("a single prompt without any shared prefix")]
    ids = [tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "no")]
    together, costs = backend._score_groups([g1, g2, g3], ids)
    for g, out, c in zip([g1, g2, g3], together, costs):
        alone, (c_alone,) = backend._score_groups([g], ids)
        torch.testing.assert_close(out, alone[0], atol=1e-5, rtol=1e-5)
        assert c["prompt_tokens"] == sum(len(s) for s in g) and c["calls"] == len(g)
        assert c["prefix_tokens_saved"] == c_alone["prefix_tokens_saved"]
    assert costs[0]["prefix_tokens_saved"] > 0 and costs[2]["prefix_tokens_saved"] == 0
    plain = backend.__class__.__new__(backend.__class__)
    plain.__dict__.update(backend.__dict__, prefix_reuse=False, batch_size=1)
    for g, out in zip([g1, g2, g3], together):
        ref, _ = plain._score_groups([g], ids)
        torch.testing.assert_close(out, ref[0], atol=1e-4, rtol=1e-4)


def test_split_cost_shares_exactly():
    delta = Counter(calls=5, prompt_tokens=100, seconds=2.0, prefix_tokens_saved=7)
    a, b = split_cost(delta, [2, 3], {"prompt_tokens": [10, 30, 20, 20, 20]}, [1] * 5)
    assert a == Counter(calls=2, prompt_tokens=40, seconds=0.8, prefix_tokens_saved=3)
    assert b == Counter(calls=3, prompt_tokens=60, seconds=1.2, prefix_tokens_saved=4)
    (whole,) = split_cost(delta, [5], {}, [1] * 5)
    assert whole == delta


class OnlyGenerates(Backend):
    """Answers "Passage A" to everything; label scoring raises NotImplementedError."""

    default_in_flight = 3

    def label_logprobs(self, prompts, labels, variants=True):
        raise NotImplementedError

    def generate(self, prompts, params=None):
        self.stats["calls"] += len(prompts)
        self.stats["prompt_tokens"] += 5 * len(prompts)
        return [Generation("Passage A" if "cats" not in p else "B", 5, 2) for p in prompts]


def test_fallback_to_generation_in_flight():
    """A backend without logits: every query in flight falls back to generation, as one query alone does."""
    data = _data(n_queries=3, n_docs=5, seed=1)
    results = []
    for n in (1, 3):
        be = OnlyGenerates("gen-only")
        reranker = build_reranker("pairwise", be, strategy="heapsort", top_k=3)
        reranker.in_flight = n
        _, rankings = reranker.rerank_all(data, data.candidates, top_k=5, progress=False)
        assert reranker.use_logits is False
        results.append({q: (r.docids, r.cost["comparisons"], r.cost["calls"]) for q, r in rankings.items()})
    assert results[0] == results[1]


def test_requests_are_plain_data():
    r = ScoreRequest(["p"], ["yes", "no"])
    assert r.bucket() == ("score", ("yes", "no"), True)
