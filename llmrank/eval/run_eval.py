"""Evaluation of a recipe's rankers on its eval datasets: one table row per ranker.

Rows: ``first_stage`` (BM25 top-k as retrieved), ``teacher`` (the recipe's teacher reranking the same
top-k), ``student_before`` (the student's base model, zero-shot, with the student's prompt and scoring)
and ``student`` (the distilled student). Each row is written to ``eval/<dataset>/<row>.json`` as soon as
it is done (metrics, per-query metrics, cost, and the run), so an interrupted evaluation resumes by row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys

from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import ensure_candidates
from llmrank.data.io import atomic_write_text
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate
from llmrank.recipe import SUITES_DIR, EvalDataset, eval_entries, load_suite
from llmrank.rerankers.base import total_cost

log = logging.getLogger(__name__)
__all__ = ["SUITES_DIR", "evaluate_recipe", "row_key", "suite_datasets"]


def suite_datasets(suite: str) -> list[dict]:
    """The datasets of an eval suite YAML (``eval/<suite>.yaml`` or a path, ``:variant`` for one of its
    variants), each validated as a recipe's ``eval.datasets`` entry (:class:`~llmrank.recipe.EvalDataset`):
    a bad entry names the suite file, its line and the key."""
    return [d.model_dump() for d in load_suite(suite)[1]]


def _rerankers(runner, row: str, qrels):
    r = runner.recipe
    if row == "teacher":
        from llmrank.runner import build_teacher

        return build_teacher(r.teacher, qrels)
    if row == "student_before":
        from llmrank.backends.hf import HFBackend
        from llmrank.rerankers.pointwise import PointwiseReranker

        return PointwiseReranker(HFBackend(r.distill.model, dtype=r.distill.dtype), r.distill.prompt,
                                 max_doc_tokens=r.distill.max_doc_tokens, variants=False)
    if row == "student":
        from llmrank.training.distill import load_student

        return load_student(runner.student_dir(), dtype=r.distill.dtype)
    raise LlmrankError(f"unknown eval row '{row}' (first_stage, teacher, student_before, student)")


def row_key(runner, entry: EvalDataset, row: str) -> str:
    """What a table row depends on, hashed: a row file with another key is stale and is computed again
    (the teacher's and first stage's rows survive a change to the student, the zero-shot student's row
    survives retraining)."""
    r = runner.recipe
    parts: dict = {"row": row, "entry": entry.model_dump(exclude={"name"}), "top_k": r.eval.top_k,
                   "metrics": list(r.eval.metrics)}
    if row == "teacher":
        parts["teacher"] = r.teacher.model_dump()
    elif row == "student_before":
        parts["student"] = {k: getattr(r.distill, k) for k in ("model", "prompt", "dtype", "max_doc_tokens")}
    elif row == "student":
        parts["student"] = r.section_hash("data", "teacher", "distill", "refine")
    elif row == "first_stage":
        parts["cost"] = "timed"  # rows written before the first stage was timed carry no cost
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_recipe(runner) -> dict:
    ev = runner.recipe.eval
    entries = eval_entries(ev)
    results = {}
    for entry in entries:
        name = entry.label()
        data = load_dataset(entry.dataset, entry.split, query_field=entry.query_field).first_queries(entry.queries)
        if not data.qrels:
            raise LlmrankError(f"eval dataset {entry.dataset} (split {entry.split}) has no judgements to evaluate against")
        first = ensure_candidates(data, max(ev.top_k, 100), show_progress=runner.progress).subset(data.queries)
        out_dir = runner.stage_dir("eval") / name
        results[name] = {}
        for row in ev.baselines:
            if row in ("student", "student_before") and runner.recipe.distill is None:
                continue
            path = out_dir / f"{row}.json"
            key = row_key(runner, entry, row)
            if path.is_file():
                rec = json.loads(path.read_text())
                if rec.get("key") == key:
                    results[name][row] = rec
                    continue
            print(f"[eval] {name}: {row} …", file=sys.stderr)
            if row == "first_stage":
                from llmrank.eval.costs import first_stage_cost

                run, cost = first.top(ev.top_k), first_stage_cost(data, ev.top_k)
            else:
                from llmrank.eval.progress import ProgressLines

                reranker = _rerankers(runner, row, data.qrels)
                lines = None if runner.progress else ProgressLines(f"[eval] {name}: {row}", len(first))
                run, rankings = reranker.rerank_all(data, first, ev.top_k, progress=runner.progress, on_ranking=lines)
                run = run.top(ev.top_k)
                cost = total_cost(rankings)
            rec = {"row": row, "key": key, "dataset": entry.dataset, "split": entry.split,
                   "query_field": entry.query_field, "queries": len(run),
                   "metrics": evaluate(run, data.qrels, ev.metrics),
                   "per_query": evaluate(run, data.qrels, ["ndcg@10"], per_query=True)["ndcg@10"],
                   "cost": cost, "scores": {q: [s for _, s in items] for q, items in run.items()}}
            write_run(run, out_dir / f"{row}.trec", tag=row)
            atomic_write_text(path, json.dumps(rec))
            results[name][row] = rec
    atomic_write_text(runner.stage_dir("eval") / "results.json",
                      json.dumps({n: {r: {k: v[k] for k in ("metrics", "cost", "queries")} for r, v in rows.items()}
                                  for n, rows in results.items()}, indent=1))
    return {"inputs": {"datasets": [e.dataset for e in entries]}}
