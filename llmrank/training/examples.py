"""From a teacher run (or the qrels as an oracle teacher) to training groups.

A *group* is one query with ``group_size`` of its candidates, the teacher's scores and ranks for them and
the judged labels where they exist; the distillation losses compare the student's scores on the whole
group with the teacher's. Groups always contain the teacher's best documents and a seeded sample of the
rest (hard negatives from the first stage, or from several retrievers merged upstream).
"""

from __future__ import annotations

import random

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError


def build_groups(data: RankingData, teacher: dict[str, dict], group_size: int = 8, top_keep: int | None = None,
                 seed: int = 0, max_groups: int | None = None) -> list[dict]:
    """One group per teacher record: the teacher's ``top_keep`` best (default half the group) plus a
    seeded sample of its other candidates, kept in teacher order.

    Each group: ``qid, query, docs (texts), docids, teacher_scores, teacher_ranks, labels``.
    """
    rng = random.Random(seed)
    top_keep = group_size // 2 if top_keep is None else top_keep
    groups = []
    for qid, rec in teacher.items():
        if qid not in data.queries:
            raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")
        ranking = rec["ranking"]
        if len(ranking) < 2:
            continue
        scores = rec.get("scores") or [float(len(ranking) - i) for i in range(len(ranking))]
        keep = list(range(min(top_keep, len(ranking))))
        rest = list(range(len(keep), len(ranking)))
        keep += sorted(rng.sample(rest, min(group_size - len(keep), len(rest))))
        docids = [ranking[i] for i in keep]
        missing = [d for d in docids if d not in data.docs]
        if missing:
            raise LlmrankError(f"teacher record for query '{qid}' names document '{missing[0]}' not in {data.source}")
        judged = (data.qrels or {}).get(qid, {})
        groups.append({
            "qid": qid,
            "query": data.queries[qid].text,
            "docids": docids,
            "docs": [data.docs[d].contents for d in docids],
            "teacher_scores": [float(scores[i]) for i in keep],
            "teacher_ranks": list(range(len(keep))),
            "labels": [float(judged.get(d, 0)) for d in docids],
        })
        if max_groups and len(groups) >= max_groups:
            break
    if not groups:
        raise LlmrankError("no training groups: the teacher run has no query with two or more ranked documents")
    return groups
