"""IR metrics through ir_measures (pytrec_eval underneath), with trec_eval conventions.

Metric names are written the way IR papers write them, case-insensitively: ``ndcg@10``, ``mrr@10``,
``recall@100``, ``map``, ``map@100``, ``p@10``, ``r-prec``. nDCG uses graded gains; binary measures
(recall, MRR, MAP, precision) count a document relevant when its grade is ≥ ``rel_threshold`` (as
``trec_eval -l``; TREC DL passage evaluation uses 2).
"""

from __future__ import annotations

import re

import ir_measures

from llmrank.data.types import Candidates, Qrels
from llmrank.errors import LlmrankError

_NAMES = {
    "ndcg": "nDCG",
    "mrr": "RR",
    "rr": "RR",
    "recall": "R",
    "r": "R",
    "map": "AP",
    "ap": "AP",
    "p": "P",
    "precision": "P",
    "r-prec": "Rprec",
    "rprec": "Rprec",
}
_BINARY = {"RR", "R", "AP", "P", "Rprec"}
_NEEDS_CUTOFF = {"R", "P"}  # pytrec_eval has no uncut recall / precision
_NO_CUTOFF = {"Rprec"}
DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def parse_metric(name: str, rel_threshold: int = 1):
    """An ir_measures measure for a metric name; an unknown name is a user error listing the known ones."""
    m = re.fullmatch(r"([a-zA-Z-]+)(?:@(\d+))?", name.strip())
    base = _NAMES.get(m.group(1).lower()) if m else None
    if base is None:
        raise LlmrankError(f"unknown metric '{name}' (known: ndcg@k, mrr@k, recall@k, map, map@k, p@k, r-prec)")
    cutoff = m.group(2)
    if cutoff is not None and int(cutoff) < 1:
        raise LlmrankError(f"metric '{name}': the cutoff must be a positive integer")
    if base in _NEEDS_CUTOFF and cutoff is None:
        raise LlmrankError(f"metric '{name}' needs a cutoff, e.g. {name.strip()}@100")
    if base in _NO_CUTOFF and cutoff is not None:
        raise LlmrankError(f"metric '{name}' takes no cutoff (r-prec)")
    text = base
    if base in _BINARY and rel_threshold != 1:
        text += f"(rel={rel_threshold})"
    if cutoff is not None:
        text += f"@{int(cutoff)}"
    return ir_measures.parse_measure(text)


def check_metric(name) -> str | None:
    """Why ``name`` is not a metric llmrank can compute, or None when it is."""
    if not isinstance(name, str):
        return f"expected a metric name such as ndcg@10 (got {name!r})"
    try:
        parse_metric(name)
    except LlmrankError as e:
        return str(e)
    return None


def is_binary(name: str) -> bool:
    """Whether a metric name is a binary measure (reads the relevance threshold)."""
    m = re.fullmatch(r"([a-zA-Z-]+)(?:@(\d+))?", name.strip())
    return bool(m) and _NAMES.get(m.group(1).lower()) in _BINARY


def default_rel_threshold(qrels: Qrels) -> int:
    """The collection's convention for binary measures: 2 on TREC DL's graded 0–3 passage judgements (the
    track counts grades 2 and 3 relevant), 1 otherwise (BEIR, BRIGHT, binary qrels)."""
    grades = {g for docs in qrels.values() for g in docs.values()}
    return 2 if grades and max(grades) == 3 and min(grades) == 0 and len(grades) >= 3 else 1


def label(name: str, rel_threshold: int) -> str:
    """A metric name with the threshold its figure used when it is binary: ``mrr@10(rel>=2)``."""
    return f"{name}(rel>={rel_threshold})" if is_binary(name) else name


def labelled(scores: dict, rel_threshold: int) -> dict:
    """``scores`` keyed by :func:`label` (for printing: every binary figure shows its threshold)."""
    return {label(k, rel_threshold): v for k, v in scores.items()}


def _check(run: Candidates, qrels: Qrels) -> None:
    if not len(run):
        raise LlmrankError("the run is empty: no query to evaluate")
    unknown = [q for q in run if q not in qrels]
    if unknown and len(unknown) == len(run):
        raise LlmrankError(f"none of the run's {len(run)} queries is in the qrels (first run qid: {unknown[0]})")
    if unknown:
        raise LlmrankError(f"the run names {len(unknown)} queries that the qrels do not judge (first: {unknown[0]}); "
                           "evaluate against the qrels of the same split")


def evaluate(run: Candidates, qrels: Qrels, metrics=DEFAULT_METRICS, rel_threshold: int = 1,
             per_query: bool = False) -> dict:
    """Mean of each metric over the run's queries, keyed by the metric names as given.

    ``rel_threshold`` is trec_eval's ``-l`` (1 by default, as trec_eval); the commands pass the collection's
    convention (:func:`default_rel_threshold`) and print it beside every binary figure (:func:`labelled`).

    With ``per_query=True`` returns ``{name: {qid: value}}`` instead. Queries of the qrels that the run
    lacks count as 0 only if they are in the run; as in trec_eval, the mean is over the run's queries.
    """
    _check(run, qrels)
    measures = {name: parse_metric(name, rel_threshold) for name in metrics}
    scores = run.run_scores()
    judged = {q: qrels[q] for q in scores}
    if per_query:
        out: dict[str, dict[str, float]] = {name: {q: 0.0 for q in scores} for name in metrics}
        by_measure: dict = {}  # two names may parse to one measure (mrr@10, rr@10)
        for n, m in measures.items():
            by_measure.setdefault(m, []).append(n)
        for r in ir_measures.iter_calc(list(set(measures.values())), judged, scores):
            for n in by_measure[r.measure]:
                out[n][r.query_id] = float(r.value)
        return out
    agg = ir_measures.calc_aggregate(list(measures.values()), judged, scores)
    return {name: float(agg[m]) for name, m in measures.items()}
