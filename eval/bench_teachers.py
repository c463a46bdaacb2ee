"""Which teacher carries the most signal offline? (benchmark, not a test)

Measures the teachers available with no hub — the embedded LLMs with pointwise scoring, the packaged
MiniLM bi-encoder, and rank fusions — on SciFact TRAIN queries (BM25 top-20, the quickstart's setting),
next to BM25 itself. The quickstart recipe uses the strongest.

    python -m eval.bench_teachers --queries 40 [--llms smollm2-135m gemma3-270m] [--out teachers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from llmrank.backends.hf import HFBackend
from llmrank.data import load_dataset
from llmrank.data.bm25 import ensure_candidates
from llmrank.eval.metrics import evaluate
from llmrank.rerankers.base import total_cost
from llmrank.rerankers.dense import DenseReranker
from llmrank.rerankers.fusion import FirstStage, FusionReranker
from llmrank.rerankers.pointwise import PointwiseReranker

DATA = Path(os.environ.get("LLMRANK_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--llms", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = load_dataset(DATA / "scifact", "train").first_queries(args.queries)
    first = ensure_candidates(data, args.top_k).subset(data.queries).top(args.top_k)
    dense = DenseReranker(model="minilm-l6")
    rerankers = {"dense (MiniLM-L6)": dense,
                 "fusion: BM25 + dense": FusionReranker([FirstStage(), dense])}
    llm_members = []
    for name in args.llms:
        pw = PointwiseReranker(HFBackend(name, dtype=args.dtype), "yes_no")
        rerankers[f"pointwise {name}"] = pw
        llm_members.append(pw)
    if llm_members:
        rerankers["fusion: BM25 + dense + LLMs"] = FusionReranker([FirstStage(), dense, *llm_members])
    metrics = ["ndcg@10", "mrr@10"]
    rows = {"BM25": {**evaluate(first, data.qrels, metrics), "s/q": 0.0}}
    print(f"SciFact train, first {len(first)} queries, BM25 top-{args.top_k}")
    print(f"| teacher | {' | '.join(metrics)} | s/q |\n|---|---|---|---|")
    bm25 = " | ".join(f"{rows['BM25'][m]:.4f}" for m in metrics)
    print(f"| BM25 | {bm25} | 0 |", flush=True)
    for name, r in rerankers.items():
        t0 = time.perf_counter()
        run, rankings = r.rerank_all(data, first, args.top_k, progress=False)
        secs = (time.perf_counter() - t0) / len(first)
        rows[name] = {**evaluate(run.top(args.top_k), data.qrels, metrics), "s/q": secs,
                      "cost_per_query": {k: v for k, v in total_cost(rankings).items() if k.endswith("_per_query")}}
        print(f"| {name} | {' | '.join(f'{rows[name][m]:.4f}' for m in metrics)} | {secs:.2f} |", flush=True)
    best = max((n for n in rows if n != "BM25"), key=lambda n: rows[n]["ndcg@10"])
    print(f"strongest teacher: {best} (nDCG@10 {rows[best]['ndcg@10']:.4f} vs BM25 {rows['BM25']['ndcg@10']:.4f})")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
