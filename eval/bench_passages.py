"""Whole documents with a distilled student: head truncation vs MaxP vs the IDCM cascade, same run.

    python -m eval.bench_passages --student /work/runs/demo/quickstart-cpu/distill/merged --queries 40 \
        --threads 1 --out /work/runs/passages/bench_passages.json

SciFact test, the first ``--queries`` queries, BM25 top-``--depth`` (20). Rows, all with the same student:

- ``head``: the student as trained, each document cut at its ``max_doc_tokens`` (64 in the quickstart);
- ``MaxP``: every ``--tokens``-token window of each document scored, a document's score its best window's;
- ``IDCM``: a selector (``--selector``: bm25 or dense) scores every window, the student reads only the
  ``--select`` best windows per document, MaxP over those;
- ``idcm_first`` (only when named in ``--rows``): IDCM that always reads the first window (title and head)
  and the selector's ``--select`` - 1 best others.

Each row: nDCG@10, windows the student scored per query, prompt tokens it read per query, windows the
selector read per query and its seconds, seconds per query (selector included); then how much of MaxP's
gain over head IDCM keeps ((IDCM - head) / (MaxP - head)) and at what fraction of MaxP's cost (windows
scored, tokens, seconds). Timings depend on the machine's load: read the
ratios. On a 2-core machine shared with another job, pass ``--threads 1``: two torch threads there scored
about 10x fewer pairs per second (measured; oversubscribed cores).
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


def summarize(rows: dict) -> dict:
    """IDCM against MaxP, both against head: the nDCG@10 gains, the share of MaxP's gain IDCM keeps (None
    when MaxP gained nothing: a share of a loss means nothing) and IDCM's fraction of MaxP's cost."""
    if not all(k in rows for k in ("head", "maxp", "idcm")):
        return {}
    h, m, i = rows["head"], rows["maxp"], rows["idcm"]
    gain = m["ndcg@10"] - h["ndcg@10"]
    return {"maxp_gain": gain, "idcm_gain": i["ndcg@10"] - h["ndcg@10"],
            "gain_kept": (i["ndcg@10"] - h["ndcg@10"]) / gain if gain > 0 else None,
            "passages_fraction": i["passages_scored_per_query"] / m["passages_scored_per_query"],
            "tokens_fraction": (i["prompt_tokens_per_query"] / m["prompt_tokens_per_query"]
                                if m.get("prompt_tokens_per_query") else None),
            "seconds_fraction": i["seconds_per_query"] / m["seconds_per_query"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="a saved student (adapter, merged or export folder)")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64, help="window length (the student's tokens)")
    ap.add_argument("--select", type=int, default=2, help="IDCM: windows per document the student reads")
    ap.add_argument("--selector", default="bm25", choices=["bm25", "dense"])
    ap.add_argument("--dtype", default="auto", help="auto: bf16 only where the CPU/GPU computes it natively")
    ap.add_argument("--rows", nargs="+", default=["head", "maxp", "idcm"],
                    choices=["head", "maxp", "idcm", "idcm_first"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own; 1 when another job shares the cores)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.eval.metrics import evaluate
    from llmrank.rerankers.base import total_cost
    from llmrank.rerankers.passages import PassageReranker
    from llmrank.students import load_student

    data = load_dataset(data_dir() / "scifact", "test").first_queries(args.queries)
    first = ensure_candidates(data, 100).subset(data.queries).top(args.depth)
    from llmrank.backends.dtype import resolve

    args.dtype = resolve(args.dtype)[0]  # the header names the dtype that ran
    student = load_student(args.student, dtype=args.dtype)
    rerankers = {
        "head": student,
        "maxp": PassageReranker(student, {"tokens": args.tokens, "aggregate": "max"}),
        "idcm": PassageReranker(student, {"tokens": args.tokens, "aggregate": "max", "select": args.select,
                                          "selector": args.selector}),
        "idcm_first": PassageReranker(student, {"tokens": args.tokens, "aggregate": "max", "select": args.select,
                                                "selector": args.selector, "keep_first": True}),
    }
    rows = {"BM25": {"ndcg@10": evaluate(first, data.qrels, ["ndcg@10"])["ndcg@10"]}}
    for name in args.rows:
        t0 = time.perf_counter()
        run, rankings = rerankers[name].rerank_all(data, first, args.depth, progress=False)
        wall = time.perf_counter() - t0
        cost = total_cost(rankings)
        n = len(rankings)
        rows[name] = {"ndcg@10": evaluate(run.top(args.depth), data.qrels, ["ndcg@10"])["ndcg@10"],
                      "passages_scored_per_query": cost.get("passages_scored_per_query", float(args.depth)),
                      "selector_passages_per_query": cost.get("selector_passages_per_query", 0.0),
                      "passages_total_per_query": cost.get("passages_total_per_query", float(args.depth)),
                      "prompt_tokens_per_query": cost.get("prompt_tokens_per_query", 0.0),
                      "selector_seconds_per_query": cost.get("selector_seconds_per_query", 0.0),
                      "seconds_per_query": wall / n}
        print(f"  {name}: {rows[name]}", file=sys.stderr, flush=True)
        if args.out:  # each finished row at once: a long run stopped later keeps what it measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "complete": False}, indent=1))
    header = (f"SciFact test, first {len(data.queries)} queries, BM25 top-{args.depth}, student {args.student} "
              f"({args.dtype}), windows of {args.tokens} tokens, IDCM keeps {args.select} per document "
              f"(selector {args.selector})")
    print(header)
    print("| row | nDCG@10 | windows scored/q | prompt tokens scored/q | selector windows/q | selector s/q | s/q |\n"
          "|---|---|---|---|---|---|---|")
    print(f"| BM25 | {rows['BM25']['ndcg@10']:.4f} | | | | | |")
    for name in args.rows:
        r = rows[name]
        print(f"| {name} | {r['ndcg@10']:.4f} | {r['passages_scored_per_query']:.1f} | {r['prompt_tokens_per_query']:.0f} | "
              f"{r['selector_passages_per_query']:.1f} | {r['selector_seconds_per_query']:.2f} | "
              f"{r['seconds_per_query']:.2f} |")
    summary = summarize(rows)
    if summary:
        gain = summary["maxp_gain"]
        kept = (f"IDCM keeps {summary['gain_kept']:.0%} of it" if summary["gain_kept"] is not None else
                f"no gain to keep; IDCM vs head {summary['idcm_gain']:+.4f}")
        print(f"MaxP gain over head: {gain:+.4f}; {kept}, with {summary['passages_fraction']:.0%} of "
              f"MaxP's windows scored and {summary['seconds_fraction']:.0%} of its seconds (selector included)")
    for name in ("idcm", "idcm_first"):
        if name in rows and "head" in rows:
            print(f"{name} vs head: nDCG@10 {rows[name]['ndcg@10'] - rows['head']['ndcg@10']:+.4f}, windows scored "
                  f"x{rows[name]['passages_scored_per_query'] / rows['head']['passages_scored_per_query']:.2f}, "
                  f"seconds x{rows[name]['seconds_per_query'] / rows['head']['seconds_per_query']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"header": header, "rows": rows, "summary": summary, "complete": True}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
