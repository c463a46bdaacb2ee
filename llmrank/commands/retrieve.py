from __future__ import annotations

import sys

from llmrank.checks import non_negative_float, positive_float, positive_int
from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import BM25Config, retrieve
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate, labelled
from llmrank.outputs import check_output

NAME = "retrieve"
HELP = "First-stage retrieval over a dataset (BM25, or a bi-encoder with --model), written as a TREC run."


def add_arguments(p) -> None:
    p.add_argument("dataset", help="dataset path (BEIR dir, BRIGHT dir with documents, jsonl, candidates JSON)")
    p.add_argument("--split", default="test", help="BEIR qrels split, or BRIGHT task (default: test)")
    p.add_argument("--k", type=positive_int, default=100, help="candidates per query (default: 100)")
    p.add_argument("--k1", type=positive_float, default=BM25Config.k1, help="BM25 k1")
    p.add_argument("--b", type=non_negative_float, default=BM25Config.b, help="BM25 b (0 to 1)")
    p.add_argument("--model", default=None,
                   help="retrieve with this bi-encoder instead of BM25: a bi-encoder student's folder (distill's "
                        "merged/ or an export), a sentence-transformers folder or minilm-l6; the corpus is encoded "
                        "once and its embeddings cached")
    p.add_argument("-o", "--output", required=True, help="TREC run file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if it is not a run llmrank wrote")
    p.add_argument("--metrics", nargs="+", default=["ndcg@10", "recall@100"],
                   help="metrics printed when the dataset has judgements")


def run(args) -> int:
    if args.b > 1:
        raise LlmrankError(f"--b {args.b}: BM25 b lies between 0 and 1")
    from llmrank.eval.metrics import parse_metric

    for m in args.metrics:
        parse_metric(m)
    check_output(args.output, "run", args.overwrite, inputs=[args.dataset])
    data = load_dataset(args.dataset, args.split)
    if args.model:
        from llmrank.rerankers.dense import dense_retrieve

        run_ = dense_retrieve(data, args.k, args.model, show_progress=sys.stderr.isatty())
        write_run(run_, args.output, tag="llmrank-dense")
    else:
        run_ = retrieve(data, args.k, BM25Config(k1=args.k1, b=args.b), show_progress=sys.stderr.isatty())
        write_run(run_, args.output, tag="llmrank-bm25")
    print(f"wrote {args.output}: {len(run_)} queries × top-{args.k}", file=sys.stderr)
    if data.qrels:
        from llmrank.eval.metrics import default_rel_threshold

        rel = default_rel_threshold(data.qrels)
        scores = evaluate(run_, data.qrels, args.metrics, rel)
        print("  ".join(f"{k}={v:.4f}" for k, v in labelled(scores, rel).items()))
    return 0
