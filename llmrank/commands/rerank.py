from __future__ import annotations

import json
import sys

from llmrank.backends import make_backend
from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import ensure_candidates
from llmrank.eval.metrics import evaluate
from llmrank.rerankers import RERANKERS, build_reranker, needs_backend
from llmrank.rerankers.base import total_cost

NAME = "rerank"
HELP = "Rerank a dataset's first-stage candidates with an LLM (pointwise, pairwise, listwise, setwise)."


def add_model_arguments(p) -> None:
    """Options shared by every command that runs a model (rerank, teach)."""
    p.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m, gemma3-270m), local path or hub id")
    p.add_argument("--backend", default="hf", help="hf | vllm | openai, or an http:// base URL of an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="server URL for --backend openai")
    p.add_argument("--dtype", default="auto",
                   help="hf/vllm weights dtype: auto (bfloat16 where the GPU or CPU computes it natively — avx512_bf16 "
                        "or AMX — else float32) | float32 | bfloat16")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per forward pass (hf; default 4 on CPU, 16 on GPU)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="queries ranked at once, their prompts sent to the backend together (default: sized for "
                        "the backend: hf 8 on CPU / 64 on GPU, vllm 256, openai 4 x --concurrency)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="openai backend: requests open at once over ALL its base URLs (default 8)")


def add_data_arguments(p) -> None:
    p.add_argument("dataset", help="dataset path (BEIR dir, candidates JSON, BRIGHT dir, jsonl)")
    p.add_argument("--split", default="test", help="BEIR qrels split, or BRIGHT task")
    p.add_argument("--top-k", type=int, default=20, help="rerank the first k candidates of each query")
    p.add_argument("--first-stage-k", type=int, default=100, help="BM25 depth when the dataset has no candidates")
    p.add_argument("--queries", type=int, default=None, help="keep only the first N queries")


def backend_options(args) -> dict:
    opts = {}
    backend = args.backend
    if backend == "hf" or backend == "vllm":
        opts["dtype"] = args.dtype
    if backend == "hf" and args.batch_size:
        opts["batch_size"] = args.batch_size
    if args.base_url:
        opts["base_url"] = args.base_url
    if getattr(args, "concurrency", None) and (backend == "openai" or backend.startswith("http")):
        opts["concurrency"] = args.concurrency
    return opts


def configure(reranker, args):
    """Apply the run options every model command shares (queries in flight) and say what ``auto`` chose."""
    if getattr(args, "in_flight", None) is not None:
        if args.in_flight < 1:
            from llmrank.errors import LlmrankError

            raise LlmrankError(f"--in-flight must be at least 1, got {args.in_flight}")
        reranker.in_flight = args.in_flight
    backend = getattr(reranker, "backend", None)
    reason = getattr(backend, "dtype_reason", None)
    if reason:
        print(f"dtype auto: {str(backend.dtype).removeprefix('torch.')} ({reason})", file=sys.stderr)
    return reranker


def add_arguments(p) -> None:
    add_data_arguments(p)
    add_model_arguments(p)
    p.add_argument("--method", default="pointwise", choices=sorted(RERANKERS), help="ranking method")
    p.add_argument("--prompt", default=None, help="prompt name under prompts/ or a YAML path (default: the method's)")
    p.add_argument("-o", "--output", required=True, help="TREC run to write (a .json path writes a candidates JSON)")


def run(args) -> int:
    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    first = ensure_candidates(data, args.first_stage_k, show_progress=sys.stderr.isatty()).subset(data.queries)
    if needs_backend(args.method):
        reranker = build_reranker(args.method, make_backend(args.backend, args.model, **backend_options(args)), args.prompt)
    else:  # e.g. dense: its own encoder, named by --model
        reranker = build_reranker(args.method, None, model=args.model)
    configure(reranker, args)
    run_, rankings = reranker.rerank_all(data, first, args.top_k)
    if args.output.endswith(".json"):
        from llmrank.data.trec import write_candidates_json

        write_candidates_json(data, run_, args.output)
    else:
        write_run(run_, args.output, tag=f"llmrank-{args.method}")
    cost = total_cost(rankings)
    print(f"wrote {args.output}: {len(run_)} queries, top-{args.top_k} reranked by {args.method} "
          f"({cost.get('calls_per_query', 0):.1f} calls, {cost.get('seconds_per_query', 0):.2f} s per query)", file=sys.stderr)
    if cost.get("truncated_docs"):
        print(f"note: {int(cost['truncated_docs'])} documents were truncated (from the document side) to fit", file=sys.stderr)
    judged = [q for q in run_.qids() if q in (data.qrels or {})]
    if judged:
        metrics = ["ndcg@10", "mrr@10"]
        before = evaluate(first.subset(judged).top(args.top_k), data.qrels, metrics)
        after = evaluate(run_.subset(judged).top(args.top_k), data.qrels, metrics)
        print(json.dumps({"first_stage": before, args.method: after}))
    return 0
