"""Evaluation of a recipe's rankers on its eval datasets: one table row per ranker.

Rows: ``first_stage`` (BM25 top-k as retrieved), ``teacher`` (the recipe's teacher reranking the same
top-k; a rationalizing teacher judges unaided here, since the eval labels would make it the oracle),
``student_before`` (the student's base model, zero-shot, with the student's prompt and scoring) and
``student`` (the distilled student). Each row is written to ``eval/<dataset>/<row>.json`` as soon as it is
done (metrics, per-query metrics, cost, and the run), so an interrupted evaluation resumes by row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import ensure_candidates
from llmrank.data.io import atomic_write_text
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import default_rel_threshold, evaluate
from llmrank.recipe import SUITES_DIR, EvalDataset, eval_entries, load_suite, same_paths
from llmrank.rerankers.base import total_cost

log = logging.getLogger(__name__)
__all__ = ["SUITES_DIR", "evaluate_recipe", "row_key", "suite_datasets"]


def suite_datasets(suite: str) -> list[dict]:
    """The datasets of an eval suite YAML (``eval/<suite>.yaml`` or a path, ``:variant`` for one of its
    variants), each validated as a recipe's ``eval.datasets`` entry (:class:`~llmrank.recipe.EvalDataset`):
    a bad entry names the suite file, its line and the key."""
    return [d.model_dump() for d in load_suite(suite)[1]]


def student_dtype(recipe) -> str:
    """The dtype the student rows score in: ``eval.dtype``, else the student's training dtype."""
    return recipe.eval.dtype or recipe.distill.dtype


def _reranker(recipe, row: str, qrels, students: dict):
    if row == "teacher":
        from llmrank.rerankers import build_teacher

        teacher = recipe.teacher
        if teacher.options.get("rationalize"):  # given the eval labels it would be the oracle: judge unaided
            teacher = teacher.model_copy(update={"options": {k: v for k, v in teacher.options.items() if k != "rationalize"}})
        return build_teacher(teacher, qrels)
    if row == "student_before":
        from llmrank.students import get_student

        return get_student(recipe.distill.kind).zero_shot(recipe.distill, dtype=student_dtype(recipe))
    if row in students:
        from llmrank.students import load_student

        return load_student(students[row][0], dtype=student_dtype(recipe))
    raise LlmrankError(f"unknown eval row '{row}' (first_stage, teacher, student_before, {', '.join(students) or 'student'})")


def row_key(recipe, entry: EvalDataset, row: str, students: dict | None = None) -> str:
    """What a table row depends on, hashed: a row file with another key is stale and is computed again
    (the teacher's and first stage's rows survive a change to the student, the zero-shot student's row
    survives retraining)."""
    parts: dict = {"row": row, "entry": entry.model_dump(exclude={"name"}), "top_k": recipe.eval.top_k,
                   "metrics": list(recipe.eval.metrics)}
    if row == "teacher":
        parts["teacher"] = recipe.teacher.model_dump()
    elif row == "student_before":
        d = recipe.distill
        parts["student"] = {k: getattr(d, k, None) for k in ("kind", "model", "prompt", "max_doc_tokens",
                                                             "max_new_tokens")}
        parts["student"]["dtype"] = student_dtype(recipe)
    elif students and row in students:
        parts["student"] = students[row][1]
        if recipe.eval.dtype is not None:
            parts["dtype"] = recipe.eval.dtype
    elif row == "first_stage":
        parts["cost"] = "timed"  # rows written before the first stage was timed carry no cost
    # one folder spelled two ways (../shared/data, /work/shared/data) is one dataset: the row is kept
    return hashlib.sha256(json.dumps(same_paths(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_recipe(recipe, eval_dir: Path, students: dict[str, tuple[Path, str]] | None = None,
                    progress: bool = False) -> dict:
    """Every eval row of ``recipe`` on every eval dataset, written under ``eval_dir``. ``students`` maps a
    row name (``student``, and ``student_refined`` when the recipe refines) to ``(saved student dir, hash of
    what it was trained from)``."""
    students = students or {}
    ev = recipe.eval
    entries = eval_entries(ev)
    rows = list(ev.baselines) + [r for r in students if r not in ev.baselines]
    loaded: dict = {}  # student rows do not depend on the dataset: each model is loaded once for all datasets
    results = {}
    for entry in entries:
        name = entry.label()
        data = load_dataset(entry.dataset, entry.split, query_field=entry.query_field).first_queries(entry.queries)
        if not data.qrels:
            raise LlmrankError(f"eval dataset {entry.dataset} (split {entry.split}) has no judgements to evaluate against")
        first = ensure_candidates(data, max(ev.top_k, 100), show_progress=progress).subset(data.queries)
        out_dir = Path(eval_dir) / name
        results[name] = {}
        for row in rows:
            if row.startswith("student") and recipe.distill is None:
                continue
            if row.startswith("student") and row != "student_before" and row not in students:
                continue
            path = out_dir / f"{row}.json"
            key = row_key(recipe, entry, row, students)
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
                if row.startswith("student"):
                    if row not in loaded:
                        loaded[row] = _reranker(recipe, row, data.qrels, students)
                    reranker = loaded[row]
                else:  # the teacher may read this dataset's qrels (oracle, rationalize)
                    reranker = _reranker(recipe, row, data.qrels, students)
                if ev.in_flight:
                    reranker.in_flight = ev.in_flight
                # without a terminal, rerank_all prints a line per tenth of the queries (also in logs)
                run, rankings = reranker.rerank_all(data, first, ev.top_k, progress=progress)
                run = run.top(ev.top_k)
                cost = total_cost(rankings)
            rec = {"row": row, "key": key, "dataset": entry.dataset, "split": entry.split,
                   "query_field": entry.query_field, "queries": len(run),
                   "metrics": evaluate(run, data.qrels, ev.metrics, default_rel_threshold(data.qrels)),
                   "rel_threshold": default_rel_threshold(data.qrels),
                   "per_query": evaluate(run, data.qrels, ["ndcg@10"], per_query=True)["ndcg@10"],
                   "cost": cost, "scores": {q: [s for _, s in items] for q, items in run.items()}}
            write_run(run, out_dir / f"{row}.trec", tag=row)
            atomic_write_text(path, json.dumps(rec))
            results[name][row] = rec
    atomic_write_text(Path(eval_dir) / "results.json",
                      json.dumps({n: {r: {k: v[k] for k in ("metrics", "cost", "queries")} for r, v in rows.items()}
                                  for n, rows in results.items()}, indent=1))
    return {"inputs": {"datasets": [e.dataset for e in entries]}}
