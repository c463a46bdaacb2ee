"""What the refinement benchmarks (``eval.bench_dpo_cpu``, ``eval.bench_grpo_cpu``) share: SciFact train queries
with BM25's order as the teacher, held-out nDCG@10 of a saved student, and first/last-quarter means of a
trainer log."""

from __future__ import annotations

from pathlib import Path


def train_queries(dataset: str, queries: int, k: int):
    """``(data, teacher records)``: the first ``queries`` training queries, BM25 top-``k`` as the teacher."""
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates

    data = load_dataset(dataset, "train").first_queries(queries)
    cands = ensure_candidates(data, 100).subset(data.queries).top(k)
    return data, {q: {"qid": q, "ranking": cands.docids(q)} for q in cands.qids()}


def ndcg(student_dir: Path, dataset: str, queries: int, k: int) -> float:
    """nDCG@10 of a saved student reranking BM25 top-``k`` of the first ``queries`` test queries (float32)."""
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.eval.metrics import evaluate
    from llmrank.students import load_student

    data = load_dataset(dataset, "test").first_queries(queries)
    cands = ensure_candidates(data, 100).subset(data.queries).top(k)
    run, _ = load_student(student_dir, dtype="float32", batch_size=k).rerank_all(data, cands, k, progress=True)
    return evaluate(run, data.qrels, ["ndcg@10"])["ndcg@10"]


def quarters(log: list[dict], key: str) -> tuple[float, float, int]:
    """Mean of ``key`` over the first and the last quarter of the log's rows that have it, and their count."""
    vals = [r[key] for r in log if key in r]
    q = max(1, len(vals) // 4)
    return sum(vals[:q]) / q, sum(vals[-q:]) / q, len(vals)
