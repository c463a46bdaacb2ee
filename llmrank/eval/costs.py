"""Cost per query of each ranker of a run, side by side: first stage, teacher, student.

The first stage's cost is measured the way it runs in a pipeline: the (cached) BM25 index is loaded once,
then the eval queries are searched and timed. Where the candidates were given with the dataset (a TREC
candidates file) the first stage did not run here and has no measured cost.

:func:`cost_lines` writes the report's cost paragraph: seconds and model calls per query for each ranker,
and the teacher-to-student ratio, stated in the direction it goes (a teacher cheaper than its student is
said to be so, not printed as a speed-up below 1).
"""

from __future__ import annotations

import time

from llmrank.data.types import RankingData

LABELS = {"first_stage": "first stage (BM25)", "teacher": "teacher", "student_before": "student, zero-shot",
          "student": "student, distilled", "student_refined": "student, refined"}


def first_stage_cost(data: RankingData, k: int) -> dict:
    """``{"seconds_per_query", "calls_per_query": 0, ...}`` of BM25 top-``k`` over the data's corpus; ``{}``
    when the data came with its candidates (nothing was retrieved here)."""
    if data.kind not in ("beir", "bright") or not data.docs or not data.queries:
        return {}
    from llmrank.data.bm25 import BM25Index

    index = BM25Index(data.docs)
    t0 = time.perf_counter()
    index.search(list(data.queries.values()), k)
    seconds = time.perf_counter() - t0
    n = len(data.queries)
    return {"seconds": seconds, "seconds_per_query": seconds / n, "calls_per_query": 0.0, "prompt_tokens_per_query": 0.0}


def cost_lines(rows: dict) -> list[str]:
    """The report's cost paragraph from eval rows (each with a ``cost`` dict)."""
    cells = []
    for row in ("first_stage", "teacher", "student"):
        c = (rows.get(row) or {}).get("cost") or {}
        if c.get("seconds_per_query"):
            cells.append(f"{LABELS[row]} {c['seconds_per_query'] * 1000:.0f} ms"
                         + (f" ({c['calls_per_query']:.0f} model calls)" if c.get("calls_per_query") else ""))
        elif row in rows:
            cells.append(f"{LABELS[row]} not measured (candidates given)")
    others = [r for r in rows if r not in LABELS]  # saved students of other runs (eval.students), measured here too
    for row in others:
        c = (rows.get(row) or {}).get("cost") or {}
        if c.get("seconds_per_query"):
            cells.append(f"{row} {c['seconds_per_query'] * 1000:.0f} ms")
    lines = ["Cost per query on this machine: " + "; ".join(cells) + "."] if cells else []
    s = ((rows.get("student") or {}).get("cost") or {}).get("seconds_per_query")
    for row in others:
        o = ((rows.get(row) or {}).get("cost") or {}).get("seconds_per_query")
        if o and s:
            lines.append(f"{row}-to-student cost ratio: {o / s:.1f}× (the student ranks {o / s:.1f}× "
                         + ("faster" if o >= s else "slower, i.e. " + f"{s / o:.1f}× the cost") + f" than {row}, measured in this run).")
    tc, sc = (rows.get("teacher") or {}).get("cost") or {}, (rows.get("student") or {}).get("cost") or {}
    t, s = tc.get("seconds_per_query"), sc.get("seconds_per_query")
    if t and s:
        if t >= s:
            lines.append(f"Teacher-to-student cost ratio: {t / s:.1f}× (the student ranks {t / s:.1f}× faster than its teacher).")
        else:
            lines.append(f"Teacher-to-student cost ratio: {t / s:.2f}× (this teacher is {s / t:.1f}× cheaper than the "
                         "student: see the note below on what this run demonstrates).")
    return lines
