"""Bi-encoder student benchmark: reranking, first-stage retrieval, cost per query against the LLM student,
and TREC DL19 transfer, all in one process (so cost ratios share the machine's load).

    LLMRANK_DATA=../shared/data python -m eval.bench_biencoder \
        --student runs/biencoder-cpu/distill/merged --llm-student runs/quickstart-cpu/distill/merged \
        --out runs/bench-biencoder.json [--parts rerank first_stage cost dl19]

Parts (each written to --out as soon as it is done; a part already in --out is kept unless --redo):

- ``rerank``: nDCG@10 / MRR@10 of the 40 SciFact test queries' BM25 top-20 reranked by the zero-shot MiniLM
  (``--zero-shot``) and by each ``--student`` (the same rows as a recipe's eval);
- ``first_stage``: each model as a first stage over the whole SciFact corpus (exact cosine top-100, the corpus
  embeddings cached by llmrank's dense index): Recall@100 and nDCG@10 on the first 40 and on all test queries,
  next to BM25;
- ``cost``: seconds per query to rerank the first ``--cost-queries`` (default 40) queries' top-20 with the LLM student (bf16, as the quickstart's
  eval scores it) and with the first ``--student`` with documents pre-encoded (one query encoding and 20 dot
  products a query; timed before and after the LLM student), and without (20 documents encoded a query);
  the ratios are printed;
- ``dl19``: TREC DL19 (43 queries, BM25 top-20): BM25, the zero-shot MiniLM, each student and the LLM student.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("LLMRANK_DATA", "../shared/data"))


def _metrics(run, qrels):
    from llmrank.eval.metrics import default_rel_threshold, evaluate

    rel = default_rel_threshold(qrels)
    return evaluate(run, qrels, ["ndcg@10", "mrr@10", "recall@20"], rel)


def _rerank(reranker, data, first, top_k=20):
    from llmrank.rerankers.base import total_cost

    t0 = time.perf_counter()
    run, rankings = reranker.rerank_all(data, first, top_k, progress=False)
    cost = total_cost(rankings)
    return {**_metrics(run.top(top_k), data.qrels), "seconds_per_query": cost.get("seconds_per_query"),
            "calls_per_query": cost.get("calls_per_query"), "wall_s": time.perf_counter() - t0,
            "queries": len(rankings)}


def _scifact(queries):
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates

    data = load_dataset(str(DATA / "scifact"), "test").first_queries(queries)
    first = ensure_candidates(data, 100).subset(data.queries)
    return data, first


def part_rerank(args, models):
    data, first = _scifact(40)
    from llmrank.rerankers.dense import DenseReranker

    out = {"bm25": _metrics(first.top(20), data.qrels)}
    for name, path in models.items():
        out[name] = _rerank(DenseReranker(model=path), data, first)
        print(f"[rerank] {name}: nDCG@10 {out[name]['ndcg@10']:.4f}", file=sys.stderr)
    return out


def part_first_stage(args, models):
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import retrieve
    from llmrank.eval.metrics import evaluate
    from llmrank.rerankers.dense import dense_retrieve

    data = load_dataset(str(DATA / "scifact"), "test")
    first40 = list(data.queries)[:40]
    metrics = ["recall@100", "ndcg@10"]
    out = {"corpus_docs": len(data.docs), "queries_all": len(data.queries)}
    runs = {"bm25": retrieve(data, 100)}
    for name, path in models.items():
        t0 = time.perf_counter()
        runs[name] = dense_retrieve(data, 100, path, show_progress=sys.stderr.isatty())
        out.setdefault("retrieve_seconds", {})[name] = time.perf_counter() - t0
    for name, run in runs.items():
        out[name] = {"first40": evaluate(run.subset(first40), data.qrels, metrics),
                     "all": evaluate(run, data.qrels, metrics)}
        print(f"[first_stage] {name}: R@100 {out[name]['first40']['recall@100']:.4f} (40 q), "
              f"{out[name]['all']['recall@100']:.4f} (all)", file=sys.stderr)
    return out


def part_cost(args, models):
    from llmrank.rerankers.dense import DenseReranker
    from llmrank.students import load_student

    data, first = _scifact(args.cost_queries)
    # pre-encoding is offline work: only these queries' candidates are encoded here (the whole corpus in use)
    data.docs = {d: data.docs[d] for q in data.queries for d in first.docids(q)[:20]}
    student = args.cost_model or models[args.student_names[0]]
    out = {"student": student, "llm_student": args.llm_student}
    pre = DenseReranker(model=student, pre_encode=True)
    out["biencoder_pre_encoded_before"] = _rerank(pre, data, first)
    out["corpus_encoding"] = pre.index_info
    llm = load_student(args.llm_student, dtype=args.llm_dtype)
    out["llm_student"] = _rerank(llm, data, first)
    del llm
    out["biencoder_pre_encoded_after"] = _rerank(pre, data, first)
    out["biencoder_encoding_documents"] = _rerank(DenseReranker(model=student), data, first)
    llm_s = out["llm_student"]["seconds_per_query"]
    pre_s = max(out["biencoder_pre_encoded_before"]["seconds_per_query"],
                out["biencoder_pre_encoded_after"]["seconds_per_query"])
    out["ratio_pre_encoded"] = pre_s / llm_s
    out["ratio_encoding_documents"] = out["biencoder_encoding_documents"]["seconds_per_query"] / llm_s
    print(f"[cost] LLM student {llm_s:.3f} s/query; bi-encoder pre-encoded {pre_s:.4f} s/query "
          f"(1/{1 / out['ratio_pre_encoded']:.0f}); encoding documents "
          f"{out['biencoder_encoding_documents']['seconds_per_query']:.3f} s/query "
          f"(1/{1 / out['ratio_encoding_documents']:.1f})", file=sys.stderr)
    return out


def part_dl19(args, models):
    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.rerankers.dense import DenseReranker
    from llmrank.students import load_student

    data = load_dataset(str(DATA / "trec-dl19"), "test")
    first = ensure_candidates(data, 100).subset(data.queries)
    out = {"queries": len(data.queries), "bm25": _metrics(first.top(20), data.qrels)}
    for name, path in models.items():
        out[name] = _rerank(DenseReranker(model=path), data, first)
        print(f"[dl19] {name}: nDCG@10 {out[name]['ndcg@10']:.4f}", file=sys.stderr)
    if args.llm_student and not args.skip_llm_dl19:
        out["llm_student"] = _rerank(load_student(args.llm_student, dtype=args.llm_dtype), data, first)
        print(f"[dl19] llm_student: nDCG@10 {out['llm_student']['ndcg@10']:.4f}", file=sys.stderr)
    return out


PARTS = {"rerank": part_rerank, "first_stage": part_first_stage, "cost": part_cost, "dl19": part_dl19}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", action="append", default=[], metavar="[NAME=]DIR",
                   help="a bi-encoder student folder (repeatable; NAME defaults to the folder's run name)")
    p.add_argument("--zero-shot", default="minilm-l6", help="the students' zero-shot self (default: minilm-l6)")
    p.add_argument("--llm-student", default=None, help="the LLM student to compare cost (and DL19) with")
    p.add_argument("--llm-dtype", default="bfloat16", help="dtype the LLM student scores in (the quickstart eval's)")
    p.add_argument("--cost-queries", type=int, default=40, help="queries the cost part times (default: 40)")
    p.add_argument("--cost-model", default=None, help="the bi-encoder the cost part times (default: the first "
                                                      "--student; any MiniLM-L6 with the same max_seq_length costs the same)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--skip-llm-dl19", action="store_true", help="dl19 without the LLM student")
    p.add_argument("--redo", action="store_true", help="recompute parts already in --out")
    p.add_argument("--out", required=True, help="results JSON (updated after each part)")
    args = p.parse_args()
    models = {"zero_shot": args.zero_shot}
    args.student_names = []
    for item in args.student:
        name, sep, path = item.partition("=")
        if not sep:
            path, name = item, Path(item).resolve().parent.parent.name
        models[name] = path
        args.student_names.append(name)
    if "cost" in args.parts and (not (args.student_names or args.cost_model) or not args.llm_student):
        p.error("--parts cost needs --student (or --cost-model) and --llm-student")
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results["models"] = {**results.get("models", {}), **models}
    for part in args.parts:
        if part in results and not args.redo and part != "rerank":
            print(f"[{part}] kept from {out_path}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        res = PARTS[part](args, models)
        if part == "rerank" and part in results and not args.redo:
            res = {**results[part], **res}
        results[part] = res
        results[part]["part_wall_s"] = time.perf_counter() - t0
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "models"}, indent=1))


if __name__ == "__main__":
    main()
