from __future__ import annotations

import json

from llmrank.data import load_run, read_qrels
from llmrank.eval.metrics import DEFAULT_METRICS, evaluate

NAME = "evaluate"
HELP = "Score a run (TREC run or candidates JSON) against qrels (TREC qrels or BEIR qrels/*.tsv)."


def add_arguments(p) -> None:
    p.add_argument("run", help="TREC run file or candidates JSON")
    p.add_argument("--qrels", required=True, help="TREC qrels or BEIR qrels/<split>.tsv")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="e.g. ndcg@10 recall@100 mrr@10 map")
    p.add_argument("--rel-threshold", type=int, default=1,
                   help="minimum grade counted relevant by binary measures (trec_eval -l; TREC DL uses 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by the metric names")


def run(args) -> int:
    scores = evaluate(load_run(args.run), read_qrels(args.qrels), args.metrics, args.rel_threshold)
    if args.json:
        print(json.dumps(scores))
    else:
        width = max(len(k) for k in scores)
        for k, v in scores.items():
            print(f"{k:<{width}}  {v:.4f}")
    return 0
