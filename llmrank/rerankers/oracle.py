"""The judgements as a ranker: judged documents first by grade, then in the candidates' order.

An upper bound for a teacher, and the "qrels-as-oracle" teacher of distillation experiments.
"""

from __future__ import annotations

from llmrank.data.types import Doc, Qrels, Query
from llmrank.rerankers.base import Ranking, Reranker


class OracleReranker(Reranker):
    method = "oracle"

    def __init__(self, qrels: Qrels):
        self.qrels = qrels

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        judged = self.qrels.get(query.qid, {})
        order = sorted(range(len(docs)), key=lambda i: (-judged.get(docs[i].docid, 0), i))
        n = len(docs)
        # grade first, then position: scores strictly decreasing in the final order
        return Ranking([docs[i].docid for i in order],
                       [float(judged.get(docs[i].docid, 0)) + (n - r) / (n + 1) for r, i in enumerate(order)])
