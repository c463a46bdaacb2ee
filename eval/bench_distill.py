"""Distillation benchmark (not a test): SmolLM2-135M distilled on SciFact train queries, each loss.

Teachers: the qrels as an oracle (``oracle``), and a teacher run from a file (``--teacher-run``, e.g. one
written by ``llmrank teach``). For each (teacher, loss): a bounded LoRA run, then nDCG@10 on SciFact test
(BM25 top-20 reranked) next to the zero-shot student (same prompt, same single yes/no token pair).

    python -m eval.bench_distill --train-queries 200 --test-queries 50 --steps 60 --losses listnet ranknet bce cprd
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from llmrank.backends.hf import HFBackend
from llmrank.data import load_dataset
from llmrank.data.bm25 import ensure_candidates
from llmrank.eval.metrics import evaluate
from llmrank.rerankers.oracle import OracleReranker
from llmrank.rerankers.pointwise import PointwiseReranker
from llmrank.teacher import read_teacher_run
from llmrank.students import load_student
from llmrank.students.pointwise import PointwiseStudent
from llmrank.students.examples import build_groups

DATA = Path(os.environ.get("LLMRANK_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def ndcg(reranker, data, cands, k: int) -> float:
    run, _ = reranker.rerank_all(data, cands, k, progress=False)
    return evaluate(run.top(k), data.qrels, ["ndcg@10"])["ndcg@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train-queries", type=int, default=200)
    ap.add_argument("--test-queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-doc-tokens", type=int, default=192)
    ap.add_argument("--losses", nargs="+", default=["listnet", "ranknet", "bce", "cprd"])
    ap.add_argument("--teacher-run", default=None, help="a teacher jsonl over SciFact train (adds a row per loss)")
    ap.add_argument("--out", default="runs/bench-distill")
    args = ap.parse_args()
    torch.manual_seed(0)
    train = load_dataset(DATA / "scifact", "train").first_queries(args.train_queries)
    train_c = ensure_candidates(train, args.k).subset(train.queries).top(args.k)
    test = load_dataset(DATA / "scifact", "test").first_queries(args.test_queries)
    test_c = ensure_candidates(test, args.k).subset(test.queries).top(args.k)
    bm25 = evaluate(test_c, test.qrels, ["ndcg@10"])["ndcg@10"]
    t0 = time.perf_counter()
    zero = ndcg(PointwiseReranker(HFBackend(args.model, dtype="bfloat16"), "yes_no", args.max_doc_tokens, variants=False),
                test, test_c, args.k)
    print(f"SciFact test ({len(test_c)} q, BM25 top-{args.k}): BM25 {bm25:.4f}; zero-shot student {zero:.4f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    teachers = {"oracle": {q: {"ranking": r.docids, "scores": r.scores}
                           for q, r in OracleReranker(train.qrels).rerank_all(train, train_c, args.k, progress=False)[1].items()}}
    if args.teacher_run:
        teachers["teacher-run"] = {q: r for q, r in read_teacher_run(args.teacher_run).items() if q in train.queries}
    rows = []
    print("| teacher | loss | steps | train s | nDCG@10 after | Δ vs zero-shot |\n|---|---|---|---|---|---|", flush=True)
    for tname, teacher in teachers.items():
        groups = build_groups(train, teacher, args.group_size)
        for loss in args.losses:
            out = Path(args.out) / f"{tname}-{loss}"
            cfg = PointwiseStudent.config_class()(
                model=args.model, loss=loss, group_size=args.group_size, max_doc_tokens=args.max_doc_tokens,
                lora_dropout=0.0, dtype="bfloat16", merge=False, output_dir=str(out), max_steps=args.steps,
                learning_rate=args.lr, per_device_train_batch_size=1, gradient_accumulation_steps=2, warmup_steps=5,
                logging_steps=10, save_strategy="no", report_to=[], use_cpu=True, bf16=True, seed=0)
            t1 = time.perf_counter()
            PointwiseStudent.train(cfg, groups)
            secs = time.perf_counter() - t1
            after = ndcg(load_student(out / "adapter", dtype="bfloat16"), test, test_c, args.k)
            rows.append({"teacher": tname, "loss": loss, "steps": args.steps, "train_seconds": secs, "ndcg@10": after,
                         "zero_shot": zero, "bm25": bm25})
            print(f"| {tname} | {loss} | {args.steps} | {secs:.0f} | {after:.4f} | {after - zero:+.4f} |", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
