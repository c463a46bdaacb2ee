from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from llmrank.checks import positive_int
from llmrank.data import load_run, read_qrels
from llmrank.eval.metrics import DEFAULT_METRICS, default_rel_threshold, evaluate, label

NAME = "evaluate"
HELP = "Score a run (TREC run, candidates JSON or teacher run) against qrels (TREC qrels or BEIR qrels/*.tsv)."


def add_arguments(p) -> None:
    p.add_argument("run", help="TREC run file, candidates JSON, or teacher run (from `llmrank teach`)")
    p.add_argument("--qrels", required=True, help="TREC qrels or BEIR qrels/<split>.tsv")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="e.g. ndcg@10 recall@100 mrr@10 map")
    p.add_argument("--rel-threshold", type=positive_int, default=None,
                   help="minimum grade counted relevant by binary measures (trec_eval -l); default: the collection's "
                        "convention, 2 on TREC DL's graded 0-3 judgements, else 1")
    p.add_argument("--lenient", action="store_true",
                   help="NaN/inf scores rank last and the first of a duplicate docid wins, counted as warnings "
                        "(default: strict, as trec_eval: they are errors naming the line)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by the metric names")


def _is_teacher_run(path: Path) -> bool:
    if not path.is_file() or path.suffix not in (".jsonl", ".gz"):
        return False
    with open(path, "rb") as f:
        first = f.readline()
    try:
        rec = json.loads(first)
    except ValueError:
        return False
    return isinstance(rec, dict) and "key" in rec and isinstance(rec.get("ranking"), list)


def run(args) -> int:
    qrels = read_qrels(args.qrels)
    issues: Counter = Counter()
    path = Path(args.run)
    if _is_teacher_run(path):
        from llmrank.teacher import read_teacher_run, teacher_candidates

        run_ = teacher_candidates(read_teacher_run(path))
    else:
        run_ = load_run(path, lenient=args.lenient, issues=issues)
    rel = args.rel_threshold if args.rel_threshold is not None else default_rel_threshold(qrels)
    scores = evaluate(run_, qrels, args.metrics, rel)
    for what, n in sorted(issues.items()):
        print(f"warning: {args.run}: {n} {what.replace('_', ' ')} (--lenient)", file=sys.stderr)
    if args.json:
        print(json.dumps({**scores, "rel_threshold": rel}))
    else:
        shown = {label(k, rel): v for k, v in scores.items()}
        width = max(len(k) for k in shown)
        for k, v in shown.items():
            print(f"{k:<{width}}  {v:.4f}")
    return 0
