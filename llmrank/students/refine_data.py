"""What a student kind's refine rows are built from (its ``refine_rows`` hook: DPO pairs, GRPO prompts): each
teacher record's query and documents, and which documents count as relevant. Shared by the kinds, below the
refiners that train on the rows (:mod:`llmrank.training.refiners`).
"""

from __future__ import annotations

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError


def relevance_targets(data: RankingData, rec: dict, top_m: int) -> dict[str, bool]:
    """``{docid: relevant?}`` for a teacher record's documents: the qrels label (> 0) when the query is
    judged (unjudged documents are not relevant), else the teacher's verdict / top-``top_m``."""
    from llmrank.teacher import teacher_verdicts

    judged = (data.qrels or {}).get(str(rec["qid"]))
    verdicts = teacher_verdicts(rec, top_m=top_m)
    out = {}
    for d in rec["ranking"]:
        if judged:
            out[d] = float(judged.get(d, 0)) > 0
        elif verdicts.get(d) is not None:
            out[d] = bool(verdicts[d])
    return out


def each_query(qids: list[str], desc: str, progress: bool):
    """``qids`` one by one, with a bar on a terminal (``progress``) or periodic lines for a log."""
    if progress:
        from tqdm.auto import tqdm

        yield from tqdm(qids, desc=desc, unit="query")
        return
    from llmrank.progress import ProgressLines

    lines = ProgressLines(f"[refine] {desc}", len(qids))
    for qid in qids:
        yield qid
        lines()


def query_docs(data: RankingData, rec: dict):
    """``(query, documents)`` of a teacher record; a query or document the data lacks is an error naming it."""
    qid = str(rec["qid"])
    if qid not in data.queries:
        raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")
    missing = [d for d in rec["ranking"] if d not in data.docs]
    if missing:
        raise LlmrankError(f"teacher record for query '{qid}' names document '{missing[0]}' not in {data.source}")
    return data.queries[qid], [data.docs[d] for d in rec["ranking"]]
