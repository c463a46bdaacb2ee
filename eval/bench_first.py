"""FIRST (first-identifier logits) against the generating listwise teacher (RankGPT), same run, same backend.

    python -m eval.bench_first --queries 10 --threads 1 --out /work/runs/passages/bench_first.json

TREC DL19, the first ``--queries`` queries, BM25 top-``--depth`` (20), the embedded instruct model
(``smollm2-135m``) on the hf backend. Both rerankers use the same sliding window (``--window``/``--step``)
and document cut (``--max-doc-tokens``). The table: nDCG@10, windows repaired and identifiers the generated
answers missed per query, prompt and completion tokens and seconds per query, and the ratios FIRST /
generated measured in this process; then the mean Kendall τ between the two rankings of each query.
Timings depend on the machine's load: read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("LLMRANK_DATA") or REPO.parent / "shared" / "data")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--max-doc-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own; 1 when another job shares the cores)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from llmrank.backends.hf import HFBackend
    from llmrank.data import load_dataset
    from llmrank.eval.agreement import kendall_tau
    from llmrank.eval.metrics import evaluate
    from llmrank.rerankers import build_reranker
    from llmrank.rerankers.base import total_cost

    path = data_dir() / "trec-dl19" / "bm25_top100.json"
    data = load_dataset(path).first_queries(args.queries)
    cands = data.candidates.top(args.depth)
    backend = HFBackend(args.model, dtype=args.dtype)
    opts = {"window": args.window, "step": args.step, "max_doc_tokens": args.max_doc_tokens}
    rows, runs = {}, {}
    rows["BM25"] = {"ndcg@10": evaluate(cands, data.qrels, ["ndcg@10"])["ndcg@10"]}
    for name, method in (("listwise (generated)", "listwise"), ("first (logits)", "first")):
        r = build_reranker(method, backend, **opts)
        t0 = time.perf_counter()
        run, rankings = r.rerank_all(data, cands, top_k=args.depth, progress=False)
        wall = time.perf_counter() - t0
        cost = total_cost(rankings)
        n = len(rankings)
        runs[name] = run
        rows[name] = {
            "ndcg@10": evaluate(run.top(args.depth), data.qrels, ["ndcg@10"])["ndcg@10"],
            "windows_per_query": cost.get("windows_per_query", 0.0),
            "repaired_windows_per_query": cost.get("repaired_windows_per_query", 0.0),
            "missing_ids_per_query": cost.get("repair_missing_per_query", 0.0),
            "prompt_tokens_per_query": cost.get("prompt_tokens_per_query", 0.0),
            "completion_tokens_per_query": cost.get("completion_tokens_per_query", 0.0),
            "seconds_per_query": wall / n,
            "first_unseen_per_query": cost.get("first_unseen_per_query", 0.0),
        }
        print(f"  {name}: {rows[name]}", file=sys.stderr, flush=True)
        if args.out:  # each finished row at once: a long run stopped later keeps what it measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "complete": False}, indent=1))
    g, f = rows["listwise (generated)"], rows["first (logits)"]
    tok = lambda r: r["prompt_tokens_per_query"] + r["completion_tokens_per_query"]  # noqa: E731
    taus = kendall_tau(runs["first (logits)"].top(args.depth), runs["listwise (generated)"].top(args.depth))
    ratios = {"tokens": tok(f) / tok(g), "seconds": f["seconds_per_query"] / g["seconds_per_query"],
              "kendall_tau_mean": sum(taus.values()) / max(1, len(taus))}
    header = (f"TREC DL19, first {len(data.queries)} queries, BM25 top-{args.depth}, {args.model} ({args.dtype}, hf), "
              f"window {args.window}, step {args.step}, max_doc_tokens {args.max_doc_tokens}")
    print(header)
    print("| reranker | nDCG@10 | windows/q | repaired windows/q | missing ids/q | prompt tok/q | completion tok/q | s/q |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| BM25 | {rows['BM25']['ndcg@10']:.4f} | | | | | | |")
    for name in ("listwise (generated)", "first (logits)"):
        r = rows[name]
        print(f"| {name} | {r['ndcg@10']:.4f} | {r['windows_per_query']:.1f} | {r['repaired_windows_per_query']:.1f} | "
              f"{r['missing_ids_per_query']:.1f} | {r['prompt_tokens_per_query']:.0f} | "
              f"{r['completion_tokens_per_query']:.0f} | {r['seconds_per_query']:.2f} |")
    print(f"FIRST / generated: tokens x{ratios['tokens']:.3f}, seconds x{ratios['seconds']:.3f}; "
          f"Kendall tau between the two rankings (mean over {len(taus)} queries): {ratios['kendall_tau_mean']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"header": header, "rows": rows, "ratios": ratios,
                                              "kendall_tau": taus, "complete": True}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
