from __future__ import annotations

import json
import sys

from llmrank.backends import make_backend
from llmrank.checks import dtype_name, positive_int
from llmrank.data import load_dataset, write_run
from llmrank.data.bm25 import ensure_candidates
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import default_rel_threshold, evaluate, labelled
from llmrank.outputs import check_output
from llmrank.rerankers import RERANKERS, build_reranker, needs_backend
from llmrank.rerankers.base import total_cost

NAME = "rerank"
HELP = "Rerank a dataset's first-stage candidates with an LLM (pointwise, pairwise, listwise, setwise)."


def add_model_arguments(p) -> None:
    """Options shared by every command that runs a model (rerank, teach)."""
    p.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m, gemma3-270m), local path or hub id")
    p.add_argument("--backend", default="hf", help="hf | vllm | openai, or an http:// base URL of an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="server URL for --backend openai")
    p.add_argument("--dtype", type=dtype_name, default="auto",
                   help="hf/vllm weights dtype: auto (bfloat16 where the GPU or CPU computes it natively — avx512_bf16 "
                        "or AMX — else float32) | float32 | bfloat16")
    p.add_argument("--batch-size", type=positive_int, default=None, help="prompts per forward pass (hf; default 4 on CPU and 16 on GPU for scoring, 16 for generation)")
    p.add_argument("--in-flight", type=positive_int, default=None,
                   help="queries ranked at once, their prompts sent to the backend together (default: sized for "
                        "the backend: hf 8 on CPU / 64 on GPU, vllm 256, openai 4 x --concurrency)")
    p.add_argument("--concurrency", type=positive_int, default=None,
                   help="openai backend: requests open at once over ALL its base URLs (default 8)")


def add_data_arguments(p) -> None:
    p.add_argument("dataset", help="dataset path (BEIR dir, candidates JSON, BRIGHT dir, jsonl)")
    p.add_argument("--split", default="test", help="BEIR qrels split, or BRIGHT task")
    p.add_argument("--top-k", type=positive_int, default=20, help="rerank the first k candidates of each query")
    p.add_argument("--first-stage-k", type=positive_int, default=100, help="BM25 depth when the dataset has no candidates")
    p.add_argument("--queries", type=positive_int, default=None, help="keep only the first N queries")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if llmrank did not write it")


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
    from llmrank.students import STUDENT_KINDS

    p.add_argument("--method", default="pointwise", choices=sorted({*RERANKERS, *STUDENT_KINDS}),
                   help="ranking method (a saved student is scored as its kind: --method student, or the kind itself: "
                        + ", ".join(STUDENT_KINDS) + "; a bi-encoder student also as dense)")
    p.add_argument("--prompt", default=None, help="prompt name under prompts/ or a YAML path (default: the method's)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. window=4 (value read as JSON when it parses, else a string; repeatable)")
    p.add_argument("-o", "--output", required=True, help="TREC run to write (a .json path writes a candidates JSON)")


def parse_options(items: list[str]) -> dict:
    """``["max_tokens=128", "variants=false", "x=abc"]`` -> ``{"max_tokens": 128, "variants": False, "x": "abc"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LlmrankError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _build(method: str, backend, prompt, options: dict):
    try:
        return build_reranker(method, backend, prompt, **options)
    except TypeError as e:
        if options and "unexpected keyword argument" in str(e):
            raise LlmrankError(f"method '{method}' does not take option(s) {', '.join(options)} ({e})") from None
        if not options:
            raise
        given = " ".join(f"--option {k}={v}" for k, v in options.items() if k != "qrels")
        raise LlmrankError(f"{given}: a value of the wrong type ({e})") from None
    except ValueError as e:  # a constructor refusing an option's value (window=0, step > window …)
        given = " ".join(f"--option {k}={v}" for k, v in options.items() if k != "qrels")
        raise LlmrankError(f"{given or 'method ' + repr(method)}: {e}") from None


def build_from_args(args, options: dict):
    """The reranker the flags name. A ``--model`` that is a saved student (a folder with
    ``llmrank_student.json``: distill's adapter/ or merged/, or an export) is scored through the student
    layer, exactly as it was trained (its prompt, answer tokens and document length); the method must then
    be the student's own."""
    from llmrank.students import is_student_dir, load_student, student_kind

    if is_student_dir(args.model) and args.method != "served":  # "served": the export names the /rerank server's model
        kind = student_kind(args.model)
        if args.method not in (kind, "student") and not (kind == "bi-encoder" and args.method == "dense"):
            raise LlmrankError(f"--model {args.model} is a {kind} student; rerank it with --method {kind} "
                               f"(not {args.method})")
        if args.prompt:
            raise LlmrankError(f"--model {args.model} is a student trained with its own prompt; drop --prompt")
        opts = {"dtype": args.dtype}
        if args.batch_size:
            opts["batch_size"] = args.batch_size
        return load_student(args.model, **opts)
    from llmrank.rerankers import RERANKERS
    from llmrank.students import STUDENT_KINDS

    # a kind that is also a ranking method (pointwise) scores a plain model with that method
    if (args.method in STUDENT_KINDS and args.method not in RERANKERS) or args.method == "student":
        raise LlmrankError(f"--method {args.method} scores a saved student: give its folder as --model (distill's "
                           f"merged/ or adapter/, or an export; {args.model} is none)"
                           + (" (a sentence-transformers model that is not a student: --method dense)"
                              if args.method == "bi-encoder" else ""))
    if needs_backend(args.method):
        return _build(args.method, make_backend(args.backend, args.model, **backend_options(args)), args.prompt, options)
    return build_reranker(args.method, None, model=args.model, **options)  # e.g. dense: its own encoder


def check_model_args(args, method: str, model: str | None) -> None:
    """Model name and backend checked before any work (no hub retry loop for a name that is none)."""
    from llmrank.students import is_student_dir

    if model and is_student_dir(model):
        from llmrank.model_files import check_model_folder
        from llmrank.students import student_kind

        student_kind(model)
        check_model_folder(model, "student")  # named before any data loads
        return
    if method in RERANKERS and needs_backend(method) and args.backend in ("hf", "vllm") and model:
        from llmrank.models import check_model

        check_model(model)


def run(args) -> int:
    options = parse_options(args.options)
    check_output(args.output, "candidates" if args.output.endswith(".json") else "run", args.overwrite,
                 inputs=[args.dataset])
    check_model_args(args, args.method, args.model)
    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    first = ensure_candidates(data, args.first_stage_k, show_progress=sys.stderr.isatty()).subset(data.queries)
    reranker = build_from_args(args, options)
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
        rel = default_rel_threshold(data.qrels)
        # the very run written (reranked head + first-stage tail), so `llmrank evaluate` of the file agrees
        before = evaluate(first.subset(judged), data.qrels, metrics, rel)
        after = evaluate(run_.subset(judged), data.qrels, metrics, rel)
        print(json.dumps({"first_stage": labelled(before, rel), args.method: labelled(after, rel),
                          "judged_queries": len(judged), "top_k": args.top_k}))
    return 0
