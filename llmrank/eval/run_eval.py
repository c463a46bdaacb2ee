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
from llmrank.data.io import atomic_write_text, same_paths
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import default_rel_threshold, evaluate
from llmrank.eval.suites import SUITES_DIR, EvalDataset, eval_entries, load_suite
from llmrank.rerankers.base import total_cost

log = logging.getLogger(__name__)
__all__ = ["SUITES_DIR", "evaluate_recipe", "row_key", "suite_datasets"]


def suite_datasets(suite: str) -> list[dict]:
    """The datasets of an eval suite YAML (``eval/<suite>.yaml`` or a path, ``:variant`` for one of its
    variants), each validated as a recipe's ``eval.datasets`` entry (:class:`~llmrank.eval.suites.EvalDataset`):
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
    parts: dict = {"row": row, "entry": entry.model_dump(exclude={"name"} | ({"documents"} if entry.documents == "short" else set())), "top_k": recipe.eval.top_k,
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
    # row by row, each over every dataset: one model is resident at a time (a student row's model serves all
    # datasets, then is released before the next row's model or the teacher's vLLM engine is built)
    datasets = {}
    results = {e.label(): {} for e in entries}
    for row in rows:
        if row.startswith("student") and recipe.distill is None:
            continue
        if row.startswith("student") and row != "student_before" and row not in students:
            continue
        student = None
        try:
            for entry in entries:
                name = entry.label()
                path = Path(eval_dir) / name / f"{row}.json"
                key = row_key(recipe, entry, row, students)
                if path.is_file():
                    rec = json.loads(path.read_text())
                    if rec.get("key") == key:
                        results[name][row] = rec
                        continue
                if name not in datasets:
                    data = load_dataset(entry.dataset, entry.split, query_field=entry.query_field,
                                        documents=entry.documents).first_queries(entry.queries)
                    if not data.qrels:
                        raise LlmrankError(f"eval dataset {entry.dataset} (split {entry.split}) has no judgements to "
                                           "evaluate against")
                    datasets[name] = (data, ensure_candidates(data, max(ev.top_k, 100), show_progress=progress)
                                      .subset(data.queries))
                data, first = datasets[name]
                rec = _eval_row(recipe, entry, row, key, data, first, students, progress, eval_dir, student)
                if rec is None:  # a kind without a zero-shot self (a cross-encoder's new head): no row
                    print(f"[eval] {name}: {row}: none for a {recipe.distill.kind} student, skipped", file=sys.stderr)
                    continue
                results[name][row] = rec
                if row.startswith("student") or row in students:
                    student = results[name][row].pop("_reranker", None) or student
        finally:
            if student is not None:
                from llmrank.rerankers import release

                release(student)
    results = {n: {r: rows_[r] for r in rows if r in rows_} for n, rows_ in results.items()}
    atomic_write_text(Path(eval_dir) / "results.json",
                      json.dumps({n: {r: {k: v[k] for k in ("metrics", "cost", "queries")} for r, v in rows.items()}
                                  for n, rows in results.items()}, indent=1))
    return {"inputs": {"datasets": [e.dataset for e in entries]}}


def _eval_row(recipe, entry: EvalDataset, row: str, key: str, data, first, students: dict, progress: bool,
              eval_dir: Path, student=None) -> dict | None:
    """One table row on one dataset, written to ``eval/<dataset>/<row>.json``. A student row reuses
    ``student`` (its model, loaded for the first dataset) and hands it back under ``_reranker``; the teacher
    is built for this dataset (it may read the qrels: oracle, rationalize) and released after it."""
    ev = recipe.eval
    name = entry.label()
    out_dir = Path(eval_dir) / name
    print(f"[eval] {name}: {row} …", file=sys.stderr)
    reranker = None
    if row == "first_stage":
        from llmrank.eval.costs import first_stage_cost

        run, cost = first.top(ev.top_k), first_stage_cost(data, ev.top_k)
    else:
        if row.startswith("student") or row in students:
            reranker = student if student is not None else _reranker(recipe, row, data.qrels, students)
        else:
            reranker = _reranker(recipe, row, data.qrels, students)
        if reranker is None:
            return None
        try:
            if ev.in_flight:
                reranker.in_flight = ev.in_flight
            # without a terminal, rerank_all prints a line per tenth of the queries (also in logs)
            run, rankings = reranker.rerank_all(data, first, ev.top_k, progress=progress)
        finally:
            if not (row.startswith("student") or row in students):
                from llmrank.rerankers import release

                release(reranker)
                reranker = None
        run = run.top(ev.top_k)
        cost = total_cost(rankings)
    rec = {"row": row, "key": key, "dataset": entry.dataset, "split": entry.split,
           "query_field": entry.query_field, "query_source": data.query_source, "documents": entry.documents,
           "queries": len(run),
           "metrics": evaluate(run, data.qrels, ev.metrics, default_rel_threshold(data.qrels)),
           "rel_threshold": default_rel_threshold(data.qrels),
           "per_query": evaluate(run, data.qrels, ["ndcg@10"], per_query=True)["ndcg@10"],
           "cost": cost, "scores": {q: [s for _, s in items] for q, items in run.items()}}
    write_run(run, out_dir / f"{row}.trec", tag=row)
    atomic_write_text(out_dir / f"{row}.json", json.dumps(rec))
    return {**rec, "_reranker": reranker} if reranker is not None else rec
