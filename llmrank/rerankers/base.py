"""The ``Reranker`` protocol: what teachers, students, baselines and served endpoints all are.

``rerank(query, docs)`` returns the docs best first with scores; ``rerank_all`` applies it to the top-k
candidates of every query of a dataset (the tail keeps its first-stage order below them) and reports
cost (model calls, prompt and completion tokens, seconds) per query.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)


@dataclass
class Ranking:
    """One query's reranked documents: ``docids`` best first, ``scores`` aligned (higher is better)."""

    docids: list[str]
    scores: list[float]
    rationales: dict[str, str] | None = None
    cost: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)


def ranking_from_scores(docs: list[Doc], scores, **kw) -> Ranking:
    """Order docs by score, descending; ties keep the input order (a stable sort)."""
    order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))
    return Ranking([docs[i].docid for i in order], [float(scores[i]) for i in order], **kw)


def ranking_from_order(docids: list[str]) -> Ranking:
    """A ranking given only as an order: scores are n, n-1, …, 1."""
    n = len(docids)
    return Ranking(list(docids), [float(n - i) for i in range(n)])


class Reranker(ABC):
    """Anything that orders a query's candidate documents."""

    method: str = "base"

    @property
    def cache_key(self) -> dict:
        """What identifies this reranker's output (method, model, prompt, options): used by teacher caches."""
        return {"method": self.method}

    @abstractmethod
    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        """``docs`` reordered best first, with scores and the cost of doing it."""

    def rerank_all(self, data: RankingData, candidates: Candidates, top_k: int = 20,
                   progress: bool | None = None, on_ranking=None) -> tuple[Candidates, dict[str, Ranking]]:
        """Rerank the top-``top_k`` of every query; returns the new run and each query's :class:`Ranking`.

        ``on_ranking(qid, ranking)`` is called as each query finishes (teacher runs write it at once).
        """
        from tqdm.auto import tqdm

        out: dict[str, list[tuple[str, float]]] = {}
        rankings: dict[str, Ranking] = {}
        qids = [q for q in candidates.qids() if q in data.queries]
        missing_q = [q for q in candidates.qids() if q not in data.queries]
        if missing_q:
            raise LlmrankError(f"{len(missing_q)} candidate queries have no query text in {data.source} (first: {missing_q[0]})")
        check = getattr(self, "check_query", None)
        for qid in qids:  # before any scoring: every candidate has text, every query fits (e.g. the context)
            missing = next((d for d, _ in candidates[qid][:top_k] if d not in data.docs), None)
            if missing is not None:
                raise LlmrankError(f"query {qid}: candidate document '{missing}' has no text in {data.source}")
            if check is not None:
                check(data.queries[qid])
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(qids, desc=f"{self.method}", unit="q", disable=not show)
        every = max(1, len(qids) // 10)  # without a bar (a log), a line per tenth of the queries (past 2 s), and at the end
        t_start = time.perf_counter()
        for n, qid in enumerate(bar, 1):
            items = candidates[qid]
            head, tail = items[:top_k], items[top_k:]
            docs = []
            for docid, _ in head:
                if docid not in data.docs:
                    raise LlmrankError(f"query {qid}: candidate document '{docid}' has no text in {data.source}")
                docs.append(data.docs[docid])
            if not docs:
                log.warning("query %s has an empty candidate list; it is kept empty", qid)
                ranking = Ranking([], [])
            else:
                t0 = time.perf_counter()
                ranking = self.rerank(data.queries[qid], docs)
                ranking.cost["seconds"] = ranking.cost.get("seconds", 0.0) or (time.perf_counter() - t0)
            bad = next((s for s in ranking.scores if not math.isfinite(s)), None)
            if bad is not None:
                raise LlmrankError(f"query {qid}: {self.method} gave the score {bad}, not a finite number "
                                   "(a broken model or backend?)")
            rankings[qid] = ranking
            # the tail stays in first-stage order, below every reranked document
            floor = min(ranking.scores, default=0.0)
            out[qid] = list(zip(ranking.docids, ranking.scores)) + [
                (d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
            if on_ranking is not None:
                on_ranking(qid, ranking)
            elapsed = time.perf_counter() - t_start
            if not show and len(qids) > 1 and (n % every == 0 and elapsed > 2 or n == len(qids)):
                print(f"[{self.method}] {n}/{len(qids)} queries, {elapsed:.0f} s", file=sys.stderr)
        return Candidates(out), rankings


def total_cost(rankings: dict[str, Ranking]) -> dict[str, float]:
    """Summed and per-query cost over rankings."""
    tot: Counter = Counter()
    for r in rankings.values():
        tot.update(r.cost)
    n = max(len(rankings), 1)
    return {**{k: float(v) for k, v in tot.items()}, **{f"{k}_per_query": float(v) / n for k, v in tot.items()}}
