"""Rank fusion of several rerankers into one (an ensemble teacher).

The rules (RRF, Borda) are :func:`llmrank.teacher.fuse_lists`, shared with fusing saved teacher runs.
A member named ``first_stage`` is the candidates' own order (e.g. BM25), so a fusion can keep it.
"""

from __future__ import annotations

from collections import Counter

from llmrank.data.types import Doc, Query
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_order
from llmrank.teacher import _check_fusion, fuse_lists

class FirstStage(Reranker):
    """The candidates as given (first-stage order): a fusion member and a baseline."""

    method = "first_stage"

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        return ranking_from_order([d.docid for d in docs])


class FusionReranker(Reranker):
    """Runs every member on the same candidates and fuses their orders; costs add up."""

    method = "fusion"

    def __init__(self, members: list[Reranker], rule: str = "rrf", k: int = 60, weights: list[float] | None = None):
        _check_fusion(rule, k, weights, len(members))
        self.members, self.rule, self.k, self.weights = members, rule, k, weights

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "rule": self.rule, "k": self.k, "weights": self.weights,
                "members": [m.cache_key for m in self.members]}

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        rankings = [m.rerank(query, docs) for m in self.members]
        cost: Counter = Counter()
        for r in rankings:
            cost.update(r.cost)
        fused = fuse_lists([r.docids for r in rankings], self.rule, self.k, self.weights)
        return Ranking([d for d, _ in fused], [s for _, s in fused], cost=cost,
                       extra={"members": [m.method for m in self.members]})
