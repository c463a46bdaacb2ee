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

    #: queries in flight in ``rerank_all`` (None: the backend's ``default_in_flight``); commands set it
    in_flight: int | None = None

    def rerank_all(self, data: RankingData, candidates: Candidates, top_k: int = 20,
                   progress: bool | None = None, on_ranking=None) -> tuple[Candidates, dict[str, Ranking]]:
        """Rerank the top-``top_k`` of every query; returns the new run and each query's :class:`Ranking`.

        ``on_ranking(qid, ranking)`` is called as each query finishes (teacher runs write it at once).
        A reranker written as steps (:class:`~llmrank.rerankers.scheduler.StepReranker`) runs up to
        ``self.in_flight`` queries at a time (default: its backend's ``default_in_flight``); queries may then
        finish out of order, the returned run and rankings are in candidate order. Without a progress bar
        (a log), a line is printed per tenth of the queries. A score that is not a finite number is an error.
        """
        from tqdm.auto import tqdm

        qids = [q for q in candidates.qids() if q in data.queries]
        missing_q = [q for q in candidates.qids() if q not in data.queries]
        if missing_q:
            raise LlmrankError(f"{len(missing_q)} candidate queries have no query text in {data.source} (first: {missing_q[0]})")
        check = getattr(self, "check_query", None)
        jobs, tails = [], {}
        for qid in qids:  # before any scoring: every candidate has text, every query fits (e.g. the context)
            items = candidates[qid]
            head, tails[qid] = items[:top_k], items[top_k:]
            docs = []
            for docid, _ in head:
                if docid not in data.docs:
                    raise LlmrankError(f"query {qid}: candidate document '{docid}' has no text in {data.source}")
                docs.append(data.docs[docid])
            if check is not None:
                check(data.queries[qid])
            jobs.append((qid, data.queries[qid], docs))
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(qids), desc=f"{self.method}", unit="q", disable=not show)
        every = max(1, len(qids) // 10)
        t_start = time.perf_counter()
        rankings: dict[str, Ranking] = {}

        def done(qid: str, ranking: Ranking) -> None:
            bad = next((s for s in ranking.scores if not math.isfinite(s)), None)
            if bad is not None:
                raise LlmrankError(f"query {qid}: {self.method} gave the score {bad}, not a finite number "
                                   "(a broken model or backend?)")
            rankings[qid] = ranking
            bar.update(1)
            if on_ranking is not None:
                on_ranking(qid, ranking)
            n, elapsed = len(rankings), time.perf_counter() - t_start
            if not show and len(qids) > 1 and (n % every == 0 and elapsed > 2 or n == len(qids)):
                print(f"[{self.method}] {n}/{len(qids)} queries, {elapsed:.0f} s", file=sys.stderr)

        for qid, _, docs in jobs:
            if not docs:
                log.warning("query %s has an empty candidate list; it is kept empty", qid)
                done(qid, Ranking([], []))
        self._rank_jobs([j for j in jobs if j[2]], done)
        bar.close()
        out: dict[str, list[tuple[str, float]]] = {}
        ordered: dict[str, Ranking] = {}
        for qid in qids:
            ranking = ordered[qid] = rankings[qid]
            # the tail stays in first-stage order, below every reranked document
            floor = min(ranking.scores, default=0.0)
            out[qid] = list(zip(ranking.docids, ranking.scores)) + [
                (d, floor - 1.0 - i) for i, (d, _) in enumerate(tails[qid])]
        return Candidates(out), ordered

    def _rank_jobs(self, jobs: list[tuple[str, Query, list[Doc]]], done) -> None:
        """Rank each ``(qid, query, docs)``, calling ``done(qid, ranking)``: one query at a time here."""
        for qid, query, docs in jobs:
            t0 = time.perf_counter()
            ranking = self.rerank(query, docs)
            ranking.cost["seconds"] = ranking.cost.get("seconds", 0.0) or (time.perf_counter() - t0)
            done(qid, ranking)


def total_cost(rankings: dict[str, Ranking]) -> dict[str, float]:
    """Summed and per-query cost over rankings."""
    tot: Counter = Counter()
    for r in rankings.values():
        tot.update(r.cost)
    n = max(len(rankings), 1)
    return {**{k: float(v) for k, v in tot.items()}, **{f"{k}_per_query": float(v) / n for k, v in tot.items()}}
