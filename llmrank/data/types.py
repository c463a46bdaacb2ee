"""Typed records that every stage passes around: queries, documents, candidate lists and judgements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

Qrels = dict[str, dict[str, int]]
"""Relevance judgements: ``{qid: {docid: grade}}`` (graded, trec_eval convention)."""


@dataclass(frozen=True)
class Doc:
    """One document of a corpus. ``text`` is the body; ``title`` is optional (BEIR has it)."""

    docid: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """What a ranker reads: title and body joined, or the body alone."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    """One query. ``meta`` carries extra fields of the source (e.g. BRIGHT's ``reasoning``)."""

    qid: str
    text: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class Candidates:
    """Per query, an ordered list of ``(docid, score)``: a first-stage or reranked run.

    Order is the ranking (best first). Scores are whatever the producer had (BM25 scores, P(yes), ...).
    """

    def __init__(self, lists: dict[str, list[tuple[str, float]]] | None = None):
        self._lists: dict[str, list[tuple[str, float]]] = {}
        for qid, items in (lists or {}).items():
            self[qid] = items

    def __getitem__(self, qid: str) -> list[tuple[str, float]]:
        return self._lists[qid]

    def __setitem__(self, qid: str, items: Iterable[tuple[str, float]]) -> None:
        self._lists[str(qid)] = [(str(d), float(s)) for d, s in items]

    def __contains__(self, qid: object) -> bool:
        return qid in self._lists

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidates) and self._lists == other._lists

    def __repr__(self) -> str:
        return f"Candidates({len(self)} queries)"

    def items(self):
        return self._lists.items()

    def qids(self) -> list[str]:
        return list(self._lists)

    def docids(self, qid: str) -> list[str]:
        return [d for d, _ in self._lists[qid]]

    def top(self, k: int) -> Candidates:
        """The first ``k`` candidates of every query."""
        return Candidates({q: items[:k] for q, items in self._lists.items()})

    def subset(self, qids: Iterable[str]) -> Candidates:
        return Candidates({q: self._lists[q] for q in qids if q in self._lists})

    def without(self, excluded: dict[str, set[str]]) -> Candidates:
        """Drop ``excluded[qid]`` doc ids from each list (BRIGHT's ``excluded_ids``)."""
        return Candidates(
            {q: [(d, s) for d, s in items if d not in excluded.get(q, ())] for q, items in self._lists.items()}
        )

    def run_scores(self) -> dict[str, dict[str, float]]:
        """``{qid: {docid: score}}`` whose scores sort exactly in list order.

        trec_eval orders a run by score (ties by docid), not by rank, so a list whose scores are not
        strictly decreasing (ties, or a reranker's order with unrelated scores) is written with
        ``n - rank`` as score to keep the order it has.
        """
        out: dict[str, dict[str, float]] = {}
        for qid, items in self._lists.items():
            scores = [s for _, s in items]
            decreasing = all(a > b for a, b in zip(scores, scores[1:]))
            n = len(items)
            out[qid] = {d: (s if decreasing else float(n - i)) for i, (d, s) in enumerate(items)}
        return out


@dataclass
class RankingData:
    """A dataset in one shape whatever its source: queries, documents, judgements and candidate lists.

    ``docs`` may be empty when the source has no documents (a TREC run, BRIGHT without its corpus);
    ``candidates`` is None until a first stage ran (a BEIR directory) or given (a candidates JSON).
    """

    name: str
    queries: dict[str, Query]
    docs: dict[str, Doc]
    qrels: Qrels | None = None
    candidates: Candidates | None = None
    excluded: dict[str, set[str]] = field(default_factory=dict)
    source: str = ""
    kind: str = ""
    query_source: str = ""  # what the query texts are when not the dataset's plain queries (BRIGHT reasoning)

    def first_queries(self, n: int | None) -> RankingData:
        """The same data restricted to the first ``n`` queries (in candidate order when there are candidates)."""
        if n is None:
            return self
        order = self.candidates.qids() if self.candidates is not None else list(self.queries)
        keep = [q for q in order if q in self.queries][:n]
        return RankingData(
            name=self.name,
            queries={q: self.queries[q] for q in keep},
            docs=self.docs,
            qrels={q: self.qrels[q] for q in keep if q in self.qrels} if self.qrels is not None else None,
            candidates=self.candidates.subset(keep) if self.candidates is not None else None,
            excluded={q: v for q, v in self.excluded.items() if q in keep},
            source=self.source,
            kind=self.kind,
            query_source=self.query_source,
        )
