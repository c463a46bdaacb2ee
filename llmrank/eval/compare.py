"""Compare prompts, methods and models on the same candidates: every (model, method, prompt) cell is a
reranking run, cached like a teacher run, evaluated, tested for paired significance against a baseline
row, and (optionally) attacked with prompt injection.

Caching. Each cell writes ``DIR/cells/<dataset>/<cell>-<hash>.jsonl`` through
:func:`llmrank.teacher.run_teacher`: one fsynced record per query, keyed by (query, candidate ids, the
reranker's cache key), so a re-run reuses finished queries and a killed run loses at most the query in
flight. ``<hash>`` covers the cell's settings, the rerank depth and the attack variant, so another
setting is another file (nothing is overwritten). Beside each file, ``<…>.key.json`` keeps the reranker's
cache key: a re-run whose every query is already on disk does not even load the model.

Everything reported (metrics, cost, scores) is read back from the cell files, so a second run of the
same command computes nothing and rewrites no output whose bytes would not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.data.types import Candidates, RankingData
from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)

CELL_VERSION = 1
QUALITY_METRICS = ("ndcg@10", "mrr@10")


@dataclass
class Cell:
    """One configuration to compare: a ranking method with a prompt on a model through a backend."""

    method: str
    model: str | None
    prompt: str | None = None
    backend: str = "hf"
    backend_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    label: str | None = None

    def prompt_template(self):
        """The loaded prompt (the method's default when none is given); None for methods without one."""
        from llmrank.prompts import load_prompt
        from llmrank.rerankers import RERANKERS

        if self.method not in RERANKERS:
            raise LlmrankError(f"unknown method '{self.method}' (one of {', '.join(RERANKERS)})")
        default = RERANKERS[self.method][1]
        if default is None:
            return None
        return load_prompt(self.prompt or default, method=self.method)

    def name(self) -> str:
        if self.label:
            return self.label
        p = self.prompt_template()
        from llmrank.students import is_student_dir

        model = Path(self.model).name if self.model else "server"
        if model in ("merged", "adapter") and is_student_dir(self.model):  # a student folder: named by its run (runs/x/distill/merged)
            model = "/".join(Path(self.model).parts[-3:])
        parts = [model, self.method] + ([p.name] if p is not None else [])
        if self.backend not in ("hf",):
            parts.append(self.backend)
        if self.options:
            parts.append(",".join(f"{k}={v}" for k, v in sorted(self.options.items())))
        return " · ".join(parts)

    def spec(self) -> dict:
        """What the cell's output depends on (the prompt by its content, so an edited file is a new cell)."""
        p = self.prompt_template()
        prompt = None
        if p is not None:
            prompt = {"key": p.key, "sha256": hashlib.sha256(Path(p.path).read_bytes()).hexdigest()}
        return {"v": CELL_VERSION, "method": self.method, "model": self.model, "prompt": prompt,
                "backend": self.backend, "backend_options": self.backend_options, "options": self.options}


def expand_cells(models: list[str], methods: list[str], prompts: list[str] | None, backend: str = "hf",
                 backend_options: dict | None = None, extra: list[Cell] | None = None) -> list[Cell]:
    """The cross product of models × methods × the prompts that fit each method, then ``extra`` cells.

    A given prompt that fits none of the methods is an error naming its file (checked before any model
    loads); a method that none of the given prompts fits runs with its default prompt.
    """
    from llmrank.prompts import load_prompt
    from llmrank.rerankers import RERANKERS

    for m in methods:
        if m not in RERANKERS:
            raise LlmrankError(f"unknown method '{m}' (one of {', '.join(RERANKERS)})")
    loaded = [load_prompt(p) for p in prompts or []]
    for spec, p in zip(prompts or [], loaded):
        if not any(m in p.methods for m in methods):
            raise LlmrankError(f"{p.path}: prompt '{p.name}' is written for {', '.join(p.methods)} (key 'methods'), "
                               f"which is none of the methods compared ({', '.join(methods)}); given as '{spec}'")
    cells = []
    for model in models:
        for m in methods:
            fits = [spec for spec, p in zip(prompts or [], loaded) if m in p.methods]
            for spec in fits or [None]:
                cells.append(Cell(m, model, spec, backend, dict(backend_options or {})))
    cells += list(extra or [])
    names = [c.name() for c in cells]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise LlmrankError(f"two compared cells are both '{dup}'; each (model, method, prompt) once, or give labels")
    if not cells:
        raise LlmrankError("nothing to compare: give at least one model and one method")
    return cells


def dataset_label(data: RankingData) -> str:
    """The dataset's name in the report: a candidates file is named by its folder (``trec-dl19``)."""
    src = Path(data.source) if data.source else None
    if src is not None and src.is_file():
        return src.parent.name or data.name
    return data.name or (src.name if src else "dataset")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "cell"


def _hash(obj) -> str:
    from llmrank.teacher import canonical_json

    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:12]


class CellRunner:
    """Builds each cell's reranker only when something has to be computed, sharing one backend (one loaded
    model) between the cells that use the same model and backend settings."""

    def __init__(self, progress: bool | None = None, in_flight: int | None = None):
        self.progress = progress
        self.in_flight = in_flight  # queries ranked at once (None: each backend's default)
        self._backends: dict[str, object] = {}
        self._rerankers: dict[str, object] = {}
        self.computed_queries = 0

    def reranker(self, cell: Cell):
        from llmrank.backends import make_backend
        from llmrank.rerankers import build_reranker, needs_backend

        key = _hash(cell.spec())
        if key in self._rerankers:
            return self._rerankers[key]
        if cell.method == "served":  # a student behind `llmrank serve`: the URL is the backend
            where = {"export_dir": cell.model} if cell.model and Path(cell.model).is_dir() else {"model": cell.model}
            r = build_reranker("served", cell.backend, None, **where, **cell.options)
        elif not needs_backend(cell.method):
            r = build_reranker(cell.method, None, model=cell.model, **cell.options)
        else:
            bkey = _hash([cell.backend, cell.model, cell.backend_options])
            if bkey not in self._backends:
                self._backends[bkey] = make_backend(cell.backend, cell.model, **cell.backend_options)
            r = build_reranker(cell.method, self._backends[bkey], cell.prompt_template(), **cell.options)
        if self.in_flight:
            r.in_flight = self.in_flight
        self._rerankers[key] = r
        return r

    def run(self, cell: Cell, data: RankingData, candidates: Candidates, top_k: int, path: Path,
            note: str = "") -> dict[str, dict]:
        """``{qid: record}`` of ``cell`` on the top-``top_k`` of ``candidates``, computing only what
        ``path`` lacks."""
        from llmrank.data.io import atomic_write_text
        from llmrank.teacher import read_teacher_run, run_teacher, teacher_key

        key_file = path.with_name(path.name[: -len(".jsonl")] + ".key.json")
        qids = [q for q in candidates.qids() if q in data.queries]
        if path.is_file() and key_file.is_file():
            rkey = json.loads(key_file.read_text())["reranker"]
            recs = read_teacher_run(path)
            want = {q: teacher_key(data.queries[q].text, candidates.docids(q)[:top_k], rkey) for q in qids}
            if all(q in recs and recs[q]["key"] == k for q, k in want.items()):
                return {q: recs[q] for q in qids}
        reranker = self.reranker(cell)
        from llmrank.teacher import canonical_json

        rkey = json.loads(canonical_json(reranker.cache_key))
        if not key_file.is_file() or json.loads(key_file.read_text()).get("reranker") != rkey:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(key_file, json.dumps({"cell": cell.name(), "spec": cell.spec(), "reranker": rkey},
                                                   indent=1, sort_keys=True))
        print(f"[compare] {cell.name()}{note}: ranking {len(qids)} queries (cached ones are skipped) …",
              file=sys.stderr, flush=True)
        stats = run_teacher(reranker, data, candidates, top_k, path, progress=self.progress)
        self.computed_queries += stats["done"]
        recs = read_teacher_run(path)
        return {q: recs[q] for q in qids}


def records_run(records: dict[str, dict], candidates: Candidates, top_k: int) -> Candidates:
    """The reranked top-``top_k`` as a run (scores when the method gives them, else n, n-1, …)."""
    from llmrank.teacher import teacher_candidates

    return teacher_candidates(records).subset(candidates.qids()).top(top_k)


def cell_summary(records: dict[str, dict]) -> dict:
    """Cost per query (model calls, prompt and completion tokens, seconds) and the shares of generated
    outputs that needed repair or could not be parsed (None for methods that read logits only)."""
    n = max(len(records), 1)
    tot: dict[str, float] = {}
    for rec in records.values():
        for k, v in (rec.get("cost") or {}).items():
            if isinstance(v, (int, float)):
                tot[k] = tot.get(k, 0.0) + float(v)
    per_q = {f"{k}_per_query": tot.get(k, 0.0) / n for k in ("calls", "prompt_tokens", "completion_tokens", "seconds")}
    generated = tot.get("completion_tokens", 0.0) > 0
    calls = tot.get("calls", 0.0)
    repaired = tot.get("repaired_windows", 0.0)
    failed = tot.get("unparseable", 0.0) + tot.get("parse_failures", 0.0)
    return {"cost": {**per_q, "total": tot},
            "repaired_share": (repaired / calls if calls else 0.0) if generated else None,
            "failed_share": (failed / calls if calls else 0.0) if generated else None}


def evaluate_row(run: Candidates, qrels, top_k: int, rel_threshold: int = 1) -> tuple[dict, dict]:
    """``(metrics, per-query nDCG@10)`` of a run: nDCG@10, MRR@10 and Recall@top_k."""
    from llmrank.eval.metrics import evaluate

    judged = [q for q in run.qids() if q in qrels]
    if not judged:
        raise LlmrankError("none of the compared queries has relevance judgements")
    sub = run.subset(judged).top(top_k)
    metrics = evaluate(sub, qrels, [*QUALITY_METRICS, f"recall@{top_k}"], rel_threshold=rel_threshold)
    per_q = evaluate(sub, qrels, ["ndcg@10"], per_query=True)["ndcg@10"]
    return metrics, per_q


def significance_rows(rows: list[dict], baseline: str, alpha: float, resamples: int, seed: int) -> None:
    """Adds ``significance`` to each row other than ``baseline``: the paired t-test and the paired
    randomization test on per-query nDCG@10, each Holm-corrected across the rows."""
    from llmrank.eval.significance import holm, paired_randomization_test, paired_t_test

    base = next(r for r in rows if r["name"] == baseline)
    others = [r for r in rows if r["name"] != baseline]
    qids = sorted(base["per_query"])
    for r in others:
        missing = [q for q in qids if q not in r["per_query"]]
        if missing:
            raise LlmrankError(f"row '{r['name']}' lacks query {missing[0]} that the baseline has")
        a = [r["per_query"][q] for q in qids]
        b = [base["per_query"][q] for q in qids]
        t, p_t = paired_t_test(a, b) if len(qids) >= 2 else (float("nan"), 1.0)
        p_r = paired_randomization_test(a, b, n_resamples=resamples, seed=seed)
        wins = sum(x > y + 1e-12 for x, y in zip(a, b))
        losses = sum(x < y - 1e-12 for x, y in zip(a, b))
        r["significance"] = {"baseline": baseline, "queries": len(qids), "mean_diff": (sum(a) - sum(b)) / len(qids),
                             "t": t, "p_t": p_t, "p_rand": p_r, "wins": wins, "ties": len(qids) - wins - losses,
                             "losses": losses}
    for test in ("p_t", "p_rand"):
        adj = holm([r["significance"][test] for r in others]) if others else []
        for r, p in zip(others, adj):
            r["significance"][f"{test}_holm"] = p
            r["significance"][f"{test}_significant"] = p < alpha


@dataclass
class CompareSettings:
    """How a comparison runs (the CLI's options and a recipe's ``compare:`` section both become this)."""

    top_k: int = 20
    baseline: str | None = None
    alpha: float = 0.05
    attack: tuple[str, ...] = ()
    resamples: int = 10000
    seed: int = 0
    rel_threshold: int = 1
    progress: bool | None = None


def compare(data: RankingData, first: Candidates, cells: list[Cell], out_dir: str | Path,
            settings: CompareSettings, runner: CellRunner | None = None) -> dict:
    """Run (or read back) every cell on ``first``'s top-k, and return the dataset's comparison:
    ``{"dataset", "queries", "top_k", "baseline", "alpha", "rows": [...], "injection": {...}}``
    with rows sorted by nDCG@10. Writes only the cell files; :mod:`llmrank.eval.compare_report` writes
    the report."""
    from llmrank.eval.injection import injection_row

    if not data.qrels:
        raise LlmrankError(f"{data.source}: comparing needs relevance judgements (qrels)")
    s = settings
    runner = runner or CellRunner(s.progress)
    out_dir = Path(out_dir)
    label = dataset_label(data)
    cells_dir = out_dir / "cells" / _slug(label)
    first = first.subset([q for q in first.qids() if q in data.queries])
    names = [c.name() for c in cells]
    baseline = s.baseline or names[0]
    if baseline not in names and baseline != "first_stage":
        raise LlmrankError(f"baseline '{baseline}' is not a compared row (rows: first_stage, {', '.join(names)})")

    rows, cell_records = [], {}
    fs_metrics, fs_per_q = evaluate_row(first.top(s.top_k), data.qrels, s.top_k, s.rel_threshold)
    rows.append({"name": "first_stage", "cell": None, "metrics": fs_metrics, "per_query": fs_per_q,
                 "cost": {}, "repaired_share": None, "failed_share": None, "scores": None})
    for i, cell in enumerate(cells):
        name = names[i]
        path = cells_dir / f"{_slug(name)}-{_hash({'spec': cell.spec(), 'top_k': s.top_k})}.jsonl"
        recs = runner.run(cell, data, first, s.top_k, path, note=f" [{i + 1}/{len(cells)}]")
        cell_records[name] = recs
        run = records_run(recs, first, s.top_k)
        metrics, per_q = evaluate_row(run, data.qrels, s.top_k, s.rel_threshold)
        scores = [x for r in recs.values() if r.get("scores") for x in r["scores"]]
        rows.append({"name": name, "cell": cell.spec() | {"label": name}, "file": str(path.relative_to(out_dir)),
                     "metrics": metrics, "per_query": per_q, **cell_summary(recs), "scores": scores or None})
    significance_rows(rows, baseline, s.alpha, s.resamples, s.seed)
    rows.sort(key=lambda r: -r["metrics"]["ndcg@10"])

    injection = {}
    for variant_set in ([list(s.attack)] if s.attack else []):
        for i, cell in enumerate(cells):
            name = names[i]
            clean = records_run(cell_records[name], first, s.top_k)

            def rank(adata, acands, variant, cell=cell, name=name):
                path = cells_dir / f"{_slug(name)}-{_hash({'spec': cell.spec(), 'top_k': s.top_k, 'attack': variant})}.jsonl"
                recs = runner.run(cell, adata, acands, s.top_k, path, note=f" [injection: {variant}]")
                return records_run(recs, acands, s.top_k)

            row = injection_row(rank, data, first, clean, s.top_k, cell.method, cell.prompt_template(),
                                variants=variant_set, seed=s.seed)
            injection[name] = row
    return {"dataset": label, "source": data.source, "queries": len(first),
            "top_k": s.top_k, "baseline": baseline, "alpha": s.alpha, "rows": rows, "injection": injection}
