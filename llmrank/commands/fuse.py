from __future__ import annotations

import json
import sys

from llmrank.checks import positive_float
from llmrank.data import read_qrels
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate
from llmrank.outputs import check_output
from llmrank.teacher import FUSION_METHODS, fuse_runs, read_teacher_run, teacher_candidates, write_teacher_run

NAME = "fuse"
HELP = "Fuse teacher runs (an ensemble of teachers) by reciprocal rank fusion or Borda count into a teacher run."


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", help="teacher files (JSONL) written by `llmrank teach`")
    p.add_argument("--method", choices=FUSION_METHODS, default="rrf", help="rrf (Cormack et al., 2009) or borda")
    p.add_argument("--k", type=positive_float, default=60.0, help="RRF constant k: score = sum of w / (k + rank)")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per run (default: all 1)")
    p.add_argument("-o", "--output", required=True,
                   help="fused teacher file to write (an existing teacher run there is replaced; never one of the inputs)")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if it is not a teacher run")
    p.add_argument("--qrels", default=None, help="TREC or BEIR qrels: print nDCG@10 of each run and of the fusion")


def run(args) -> int:
    if args.weights is not None and len(args.weights) != len(args.runs):
        raise LlmrankError(f"--weights: {len(args.weights)} weights for {len(args.runs)} runs; give one per run")
    if args.weights is not None and not any(w > 0 for w in args.weights):
        raise LlmrankError("--weights: all weights are 0, so every document would score 0; give at least one run "
                           "a weight > 0")
    check_output(args.output, "teacher", args.overwrite, inputs=args.runs)
    if args.qrels:
        read_qrels(args.qrels)
    runs = [read_teacher_run(path) for path in args.runs]
    fused = fuse_runs(runs, args.method, args.k, args.weights)
    write_teacher_run(fused, args.output)
    method = next(iter(fused.values()))["method"] if fused else args.method
    print(f"wrote {args.output}: {len(fused)} queries fused from {len(runs)} runs by {method}", file=sys.stderr)
    if args.qrels:
        qrels = read_qrels(args.qrels)
        out = {}
        for name, r in [*zip(args.runs, runs), (args.output, fused)]:
            judged = {q: rec for q, rec in r.items() if q in qrels}
            if judged:
                out[name] = evaluate(teacher_candidates(judged), qrels, ["ndcg@10"])["ndcg@10"]
        print(json.dumps({"ndcg@10": out}))
    return 0
