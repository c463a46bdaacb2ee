"""Zero-shot ranking methods side by side on TREC DL19 (BM25 top-20): quality, validity and cost.

    python -m eval.bench_methods --queries 5 --out runs/bench_methods.json
    python -m eval.bench_methods --model smollm2-135m --methods pointwise listwise

Every method reranks the BM25 top-``--depth`` (20) of each query with the same backend; the table has
nDCG@10, whether every ranking was a permutation of its input, model calls, prompt and completion tokens
and wall-clock seconds per query, and the pairwise methods' position bias (A-rate: how often the answer
"A" won in a single order; 0.5 is unbiased). The data directory is ``$LLMRANK_DATA`` or
``<repo>/../shared/data``; the table is printed as markdown and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (registry method, options)
METHODS = {
    "pointwise": ("pointwise", {}),
    "pairwise-allpair": ("pairwise", {"strategy": "allpair"}),
    "pairwise-heapsort": ("pairwise", {"strategy": "heapsort", "top_k": 10}),
    "pairwise-bubble": ("pairwise", {"strategy": "bubble", "top_k": 10}),
    "listwise": ("listwise", {"window": 10, "step": 5}),
    "setwise-heapsort": ("setwise", {"strategy": "heapsort", "top_k": 10}),
    "setwise-bubble": ("setwise", {"strategy": "bubble", "top_k": 10}),
}
DEFAULT_METHODS = ["pointwise", "pairwise-allpair", "pairwise-heapsort", "listwise", "setwise-heapsort"]


def data_dir() -> Path:
    return Path(os.environ.get("LLMRANK_DATA") or REPO.parent / "shared" / "data")


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def bench_one(name: str, backend, data, candidates, depth: int) -> dict:
    from llmrank.eval.metrics import evaluate
    from llmrank.rerankers import build_reranker

    method, options = METHODS[name]
    reranker = build_reranker(method, backend, **options)
    t0 = time.perf_counter()
    run, rankings = reranker.rerank_all(data, candidates, top_k=depth, progress=False)
    wall = time.perf_counter() - t0
    n = max(len(rankings), 1)
    valid = all(sorted(r.docids) == sorted(candidates.docids(q)[:depth]) and len(r.scores) == len(r.docids)
                for q, r in rankings.items())

    def per_query(key):
        return sum(r.cost.get(key, 0) for r in rankings.values()) / n

    row = {
        "method": name,
        "options": options,
        "cache_key": reranker.cache_key,
        "ndcg@10": evaluate(run, data.qrels, ["ndcg@10"])["ndcg@10"],
        "valid_permutations": valid,
        "calls_per_query": per_query("calls"),
        "prompt_tokens_per_query": per_query("prompt_tokens"),
        "completion_tokens_per_query": per_query("completion_tokens"),
        "seconds_per_query": wall / n,
        "backend_seconds_per_query": per_query("seconds"),
        "comparisons_per_query": per_query("comparisons") if method in ("pairwise", "setwise") else None,
        "a_rate": _mean(r.extra.get("a_rate") for r in rankings.values()) if method == "pairwise" else None,
        "inconsistent": _mean(r.extra.get("inconsistent") for r in rankings.values()) if method == "pairwise" else None,
        "unparseable_per_query": per_query("unparseable") if method in ("pairwise", "setwise") else None,
        "first_rate": _mean(r.extra.get("first_rate") for r in rankings.values()) if method == "setwise" else None,
    }
    if method == "listwise":
        row["repairs_per_query"] = {k[len("repair_"):]: per_query(k) for k in
                                    sorted({k for r in rankings.values() for k in r.cost if k.startswith("repair_")})}
        row["repaired_window_rate"] = per_query("repaired_windows") / max(per_query("windows"), 1e-9)
    return row


def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown(rows: list[dict], header: str) -> str:
    cols = [("method", "method", None), ("nDCG@10", "ndcg@10", 4), ("valid perm.", "valid_permutations", None),
            ("calls/q", "calls_per_query", 1), ("prompt tok/q", "prompt_tokens_per_query", 0),
            ("compl. tok/q", "completion_tokens_per_query", 1), ("s/q", "seconds_per_query", 2),
            ("comparisons/q", "comparisons_per_query", 1), ("A-rate", "a_rate", 3), ("inconsistent", "inconsistent", 3),
            ("repairs/q", "unparseable_per_query", 1)]
    notes = ("A-rate: pairwise, prompts won by the passage shown as A; setwise, sets won by the first passage. "
             "repairs/q: listwise, parser repairs (missing + duplicate + out-of-range + ...); others, unparseable answers.")
    lines = [header, "", notes, "", "| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        if row.get("a_rate") is None and row.get("first_rate") is not None:
            row = {**row, "a_rate": row["first_rate"]}  # setwise: how often the passage shown first won
        if "repairs_per_query" in row:
            row = {**row, "unparseable_per_query": sum(row["repairs_per_query"].values())}
        lines.append("| " + " | ".join(_fmt(row.get(key), d) if d is not None else _fmt(row.get(key))
                                       for _, key, d in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model name (llmrank.models) or HF checkpoint path")
    ap.add_argument("--queries", type=int, default=None, help="first N queries (default: all 43)")
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates reranked per query")
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=sorted(METHODS))
    ap.add_argument("--dataset", default=None, help="candidates JSON (default: <data>/trec-dl19/bm25_top100.json)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_methods.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from llmrank.backends.hf import HFBackend
    from llmrank.data import load_dataset
    from llmrank.eval.metrics import evaluate

    path = Path(args.dataset) if args.dataset else data_dir() / "trec-dl19" / "bm25_top100.json"
    data = load_dataset(path).first_queries(args.queries)
    if data.qrels is None:
        print(f"{path}: no qrels.txt beside it", file=sys.stderr)
        return 2
    candidates = data.candidates.top(args.depth)
    bm25 = evaluate(candidates, data.qrels, ["ndcg@10"])["ndcg@10"]
    t0 = time.perf_counter()
    backend = HFBackend(args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    print(f"{len(data.queries)} queries, BM25 top-{args.depth}, model {args.model} on {backend.device} "
          f"(loaded in {load_s:.1f}s); BM25 nDCG@10 = {bm25:.4f}", file=sys.stderr)

    rows = [{"method": "bm25 (no rerank)", "ndcg@10": bm25, "valid_permutations": True}]
    out = Path(args.out)
    header = (f"TREC DL19, {len(data.queries)} queries, BM25 top-{args.depth}, {args.model} "
              f"({args.dtype}, {backend.device}, torch threads {__import__('torch').get_num_threads()})")
    for name in args.methods:
        row = bench_one(name, backend, data, candidates, args.depth)
        rows.append(row)
        print(f"  {name}: nDCG@10 {row['ndcg@10']:.4f}, {row['seconds_per_query']:.1f} s/query", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"header": header, "model": args.model, "queries": len(data.queries),
                                   "depth": args.depth, "dataset": str(path), "rows": rows}, indent=1, default=str))
    print(markdown(rows, header))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
