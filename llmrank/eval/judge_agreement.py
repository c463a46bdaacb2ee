"""How far LLM-judged qrels can stand in for human ones (UMBRELA, Upadhyay et al. 2024, and the TREC
tradition of validating new judgements by the system rankings they produce).

- **Cohen's κ** between the human and the judged grade of each judged (query, document) pair:
  ``κ = (p_o − p_e) / (1 − p_e)``, ``p_o`` the share of pairs on which both agree, ``p_e`` the agreement
  expected by chance from each side's own label frequencies. Reported on the graded scale and binarised
  (each side at its own relevance threshold: human 1 for SciFact, 2 for TREC DL; judged 2 on the 0–3 scale).
- **Kendall τ between system orderings**: each system's mean nDCG@10 under the human qrels and under the
  judged qrels; τ-b between the two score lists (1: the judged qrels order the systems exactly as the human
  ones do).
"""

from __future__ import annotations

import math
from collections import Counter

from llmrank.data.types import Candidates, Qrels
from llmrank.errors import LlmrankError


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's κ of two raters' labels for the same items (NaN when chance agreement is 1: both constant)."""
    if len(a) != len(b):
        raise LlmrankError(f"κ needs one label per item from each rater ({len(a)} vs {len(b)})")
    if not a:
        raise LlmrankError("κ of no items")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if p_e == 1:
        return math.nan
    return (p_o - p_e) / (1 - p_e)


def qrels_kappa(human: Qrels, judged: Qrels, human_threshold: int = 1, judged_threshold: int = 2,
                max_grade: int = 3) -> dict:
    """κ over the pairs the judge labelled (a pair the human qrels do not list is human grade 0): graded (human
    grades clipped to ``0..max_grade``) and binarised at each side's threshold, with the confusion counts."""
    h, j = [], []
    for q, docs in judged.items():
        if q not in human:
            continue
        for d, g in docs.items():
            h.append(min(max(int(human[q].get(d, 0)), 0), max_grade))
            j.append(int(g))
    if not h:
        raise LlmrankError("the judged qrels share no query with the human qrels")
    hb = [int(x >= human_threshold) for x in h]
    jb = [int(x >= judged_threshold) for x in j]
    return {"pairs": len(h), "kappa_graded": cohen_kappa(h, j), "kappa_binary": cohen_kappa(hb, jb),
            "agreement_binary": sum(x == y for x, y in zip(hb, jb)) / len(h),
            "human_relevant": sum(hb), "judged_relevant": sum(jb),
            "confusion": {f"{x}{y}": c for (x, y), c in sorted(Counter(zip(hb, jb)).items())},
            "judged_grades": dict(sorted(Counter(j).items())), "human_grades": dict(sorted(Counter(h).items())),
            "human_threshold": human_threshold, "judged_threshold": judged_threshold}


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's τ-b of two paired score lists (ties corrected, as ``scipy.stats.kendalltau``)."""
    if len(x) != len(y) or len(x) < 2:
        raise LlmrankError(f"τ needs two equally long lists of at least 2 scores ({len(x)}, {len(y)})")
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for k in range(i + 1, len(x)):
            dx, dy = x[i] - x[k], y[i] - y[k]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else math.nan


def system_order_tau(runs: dict[str, Candidates], human: Qrels, judged: Qrels, metric: str = "ndcg@10",
                     human_rel: int = 1, judged_rel: int = 2) -> dict:
    """Each system's ``metric`` under both qrels (over the queries the judge labelled) and τ-b between the two
    orderings. ``runs`` needs at least 3 systems (5 or more for a τ worth reading)."""
    from llmrank.eval.metrics import evaluate

    if len(runs) < 3:
        raise LlmrankError(f"system-order τ needs at least 3 systems, got {len(runs)}")
    qids = [q for q in judged if q in human]
    scores = {}
    for name, run in runs.items():
        sub = run.subset([q for q in qids if q in run])
        if len(sub) != len(qids):
            raise LlmrankError(f"system '{name}' ranks {len(sub)} of the {len(qids)} judged queries")
        scores[name] = {"human": evaluate(sub, {q: human[q] for q in qids}, [metric], human_rel)[metric],
                        "judged": evaluate(sub, {q: judged[q] for q in qids}, [metric], judged_rel)[metric]}
    names = list(scores)
    tau = kendall_tau_b([scores[n]["human"] for n in names], [scores[n]["judged"] for n in names])
    return {"metric": metric, "queries": len(qids), "systems": scores, "kendall_tau": tau}
