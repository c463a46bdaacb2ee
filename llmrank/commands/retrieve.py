from __future__ import annotations

import sys

from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import BM25Config, retrieve
from llmrank.eval.metrics import evaluate

NAME = "retrieve"
HELP = "First-stage BM25 retrieval over a dataset, written as a TREC run."


def add_arguments(p) -> None:
    p.add_argument("dataset", help="dataset path (BEIR dir, BRIGHT dir with documents, jsonl, candidates JSON)")
    p.add_argument("--split", default="test", help="BEIR qrels split, or BRIGHT task (default: test)")
    p.add_argument("--k", type=int, default=100, help="candidates per query (default: 100)")
    p.add_argument("--k1", type=float, default=BM25Config.k1, help="BM25 k1")
    p.add_argument("--b", type=float, default=BM25Config.b, help="BM25 b")
    p.add_argument("-o", "--output", required=True, help="TREC run file to write")
    p.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"],
                   help="metrics printed when the dataset has judgements")


def run(args) -> int:
    data = load_dataset(args.dataset, args.split)
    run_ = retrieve(data, args.k, BM25Config(k1=args.k1, b=args.b), show_progress=sys.stderr.isatty())
    write_run(run_, args.output, tag="bm25")
    print(f"wrote {args.output}: {len(run_)} queries × top-{args.k}", file=sys.stderr)
    if data.qrels:
        scores = evaluate(run_, data.qrels, args.metrics)
        print("  ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    return 0
