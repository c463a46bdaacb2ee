"""Student–teacher agreement: how well one ranking reproduces another's order on the same candidates.

Two measures, per query, then the mean over the queries both runs rank:

- **Kendall τ** (τ-b, ``scipy.stats.kendalltau``) between the two rank positions of the documents both runs
  list: 1 = the same order, 0 = unrelated, −1 = reversed.
- **nDCG@k against the teacher**: the teacher's ranking taken as graded labels (its best document gets
  grade ``depth``, its second ``depth − 1``, … its ``depth``-th grade 1, the rest 0; :func:`teacher_qrels`)
  and the student's ranking scored against them with the ordinary nDCG (ir_measures, trec_eval's linear
  gains). 1 = the student puts the teacher's top documents in the teacher's order at the top.

Used by the run report next to nDCG@10 against the qrels: a distilled student should agree with its
teacher more than its zero-shot self does.
"""

from __future__ import annotations

import math

from llmrank.data.types import Candidates, Qrels
from llmrank.errors import LlmrankError


def teacher_qrels(teacher: Candidates, depth: int = 10) -> Qrels:
    """The teacher's ranking as graded judgements: the document at 0-based position ``r < depth`` gets
    grade ``depth - r``; the rest are judged 0."""
    if depth < 1:
        raise LlmrankError(f"agreement depth must be a positive integer, got {depth}")
    return {q: {d: max(depth - r, 0) for r, (d, _) in enumerate(items)} for q, items in teacher.items()}


def kendall_tau(student: Candidates, teacher: Candidates) -> dict[str, float]:
    """``{qid: τ-b}`` between the list positions of the documents both runs rank for that query (queries with
    fewer than two shared documents are left out)."""
    from scipy.stats import kendalltau

    out = {}
    for q in student:
        if q not in teacher:
            continue
        t_pos = {d: r for r, d in enumerate(teacher.docids(q))}
        shared = [(r, t_pos[d]) for r, d in enumerate(student.docids(q)) if d in t_pos]
        if len(shared) < 2:
            continue
        tau = kendalltau([s for s, _ in shared], [t for _, t in shared]).statistic
        if not math.isnan(tau):
            out[q] = float(tau)
    return out


def agreement(student: Candidates, teacher: Candidates, k: int = 10, depth: int = 10) -> dict:
    """Mean Kendall τ and mean nDCG@k of ``student`` against ``teacher`` (as graded labels), over the queries
    both rank: ``{"kendall_tau": …, "ndcg@k_vs_teacher": …, "queries": n}``."""
    from llmrank.eval.metrics import evaluate

    common = [q for q in student if q in teacher]
    if not common:
        raise LlmrankError(f"student and teacher runs share no query (student has {len(student)}, teacher {len(teacher)})")
    taus = kendall_tau(student, teacher)
    ndcg = evaluate(student.subset(common), teacher_qrels(teacher.subset(common), depth), [f"ndcg@{k}"])[f"ndcg@{k}"]
    return {"kendall_tau": sum(taus.values()) / len(taus) if taus else float("nan"),
            f"ndcg@{k}_vs_teacher": ndcg, "queries": len(common)}
