"""Evaluation of a recipe's rankers on its eval datasets: one table row per ranker.

Rows: ``first_stage`` (BM25 top-k as retrieved), ``teacher`` (the recipe's teacher reranking the same
top-k), ``student_before`` (the student's base model, zero-shot, with the student's prompt and scoring)
and ``student`` (the distilled student). Each row is written to ``eval/<dataset>/<row>.json`` as soon as
it is done (metrics, per-query metrics, cost, and the run), so an interrupted evaluation resumes by row.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml

from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import ensure_candidates
from llmrank.data.io import atomic_write_text
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate
from llmrank.rerankers.base import total_cost

log = logging.getLogger(__name__)
SUITES_DIR = Path(__file__).resolve().parents[2] / "eval"


def suite_datasets(suite: str) -> list[dict]:
    """The datasets of an eval suite YAML (``eval/<suite>.yaml`` or a path)."""
    path = Path(suite)
    if not path.suffix:
        path = SUITES_DIR / f"{suite}.yaml"
    if not path.is_file():
        raise LlmrankError(f"eval suite '{suite}' not found (expected {path})")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), list):
        raise LlmrankError(f"{path}: an eval suite has a 'datasets' list")
    return raw["datasets"]


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


def evaluate_recipe(runner) -> dict:
    ev = runner.recipe.eval
    entries = [d.model_dump() for d in ev.datasets] + (suite_datasets(ev.suite) if ev.suite else [])
    results = {}
    for entry in entries:
        name = entry.get("name") or f"{Path(entry['dataset']).name}-{entry.get('split', 'test')}"
        data = load_dataset(entry["dataset"], entry.get("split", "test")).first_queries(entry.get("queries"))
        if not data.qrels:
            raise LlmrankError(f"eval dataset {entry['dataset']} has no judgements to evaluate against")
        first = ensure_candidates(data, max(ev.top_k, 100), show_progress=runner.progress).subset(data.queries)
        out_dir = runner.stage_dir("eval") / name
        results[name] = {}
        for row in ev.baselines:
            if row in ("student", "student_before") and runner.recipe.distill is None:
                continue
            path = out_dir / f"{row}.json"
            if path.is_file():
                results[name][row] = json.loads(path.read_text())
                continue
            print(f"[eval] {name}: {row} …", file=sys.stderr)
            if row == "first_stage":
                run, cost = first.top(ev.top_k), {}
            else:
                reranker = _rerankers(runner, row, data.qrels)
                run, rankings = reranker.rerank_all(data, first, ev.top_k, progress=runner.progress)
                run = run.top(ev.top_k)
                cost = total_cost(rankings)
            rec = {"row": row, "dataset": entry["dataset"], "split": entry.get("split", "test"), "queries": len(run),
                   "metrics": evaluate(run, data.qrels, ev.metrics),
                   "per_query": evaluate(run, data.qrels, ["ndcg@10"], per_query=True)["ndcg@10"],
                   "cost": cost, "scores": {q: [s for _, s in items] for q, items in run.items()}}
            write_run(run, out_dir / f"{row}.trec", tag=row)
            atomic_write_text(path, json.dumps(rec))
            results[name][row] = rec
    atomic_write_text(runner.stage_dir("eval") / "results.json",
                      json.dumps({n: {r: {k: v[k] for k in ("metrics", "cost", "queries")} for r, v in rows.items()}
                                  for n, rows in results.items()}, indent=1))
    return {"inputs": {"datasets": [e["dataset"] for e in entries]}}
