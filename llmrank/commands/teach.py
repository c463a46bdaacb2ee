from __future__ import annotations

import json
import os
import sys

from llmrank.backends import make_backend
from llmrank.commands.rerank import (
    _build,
    add_data_arguments,
    add_model_arguments,
    backend_options,
    check_model_args,
    configure,
    parse_options,
)
from llmrank.data import load_dataset
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import default_rel_threshold, evaluate, labelled
from llmrank.outputs import check_output
from llmrank.rerankers import RERANKERS, needs_backend
from llmrank.stages import DEFAULT_DENSE_MODEL, FIRST_STAGES, first_stage, first_stage_name, teach
from llmrank.teacher import COST_FIELDS, read_teacher_run, teacher_candidates

NAME = "teach"
HELP = ("Run an expensive ranker (the teacher) over a dataset into a teacher file: one JSON record per query, "
        "append-only; rerunning the command resumes where it stopped.")



def add_arguments(p) -> None:
    add_data_arguments(p)
    add_model_arguments(p)
    llm_default = p.get_default("model")
    p.set_defaults(model=None, llm_default_model=llm_default)
    p.add_argument("--method", default=None, choices=sorted(RERANKERS),
                   help="ranking method (default: listwise; rationale with --rationales)")
    p.add_argument("--prompt", default=None, help="prompt name under prompts/ or a YAML path (default: the method's)")
    p.add_argument("-o", "--output", required=True, help="teacher file (JSONL) to write, or to resume")
    p.add_argument("--rationales", action="store_true",
                   help="keep an explanation per document in each record (needs a method that writes them: "
                        "rationale, the default with this flag)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a reranker option, e.g. max_tokens=128 (value read as JSON when it parses, else a string; "
                        "repeatable); options are part of the teacher key")
    p.add_argument("--first-stage", type=_first_stage_name, default="bm25", metavar="{" + ",".join(FIRST_STAGES) + "}",
                   help="candidates when the dataset has none: BM25, dense (--dense-model), or both merged by RRF "
                        "(bm25+dense, as in a recipe's data.first_stage; 'hybrid' is taken too)")
    p.add_argument("--dense-model", default=DEFAULT_DENSE_MODEL,
                   help="bi-encoder for --first-stage dense/bm25+dense and the default model of --method dense")


def _first_stage_name(text: str) -> str:
    import argparse

    name = first_stage_name(text)
    if name not in FIRST_STAGES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(FIRST_STAGES)})")
    return name


def _cost_line(cost: dict) -> str:
    parts = [f"{cost.get('calls', 0):.1f} calls", f"{cost.get('prompt_tokens', 0):,.0f} prompt tokens",
             f"{cost.get('completion_tokens', 0):,.0f} completion tokens", f"{cost.get('seconds', 0):.2f} s"]
    parts += [f"{v:g} {k.replace('_', ' ')}" for k, v in sorted(cost.items()) if k not in COST_FIELDS and v]
    return ", ".join(parts)


def run(args) -> int:
    method = args.method or ("rationale" if args.rationales else "listwise")
    if method not in RERANKERS:
        raise LlmrankError(f"unknown method '{method}' (one of {', '.join(RERANKERS)})")
    check_output(args.output, "teacher", inputs=[args.dataset], resume=True)
    if os.path.isfile(args.output):
        read_teacher_run(args.output)  # a line that is no record is named now, not after the model loads
    if needs_backend(method):
        check_model_args(args, method, args.model or args.llm_default_model)
    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    kind = args.first_stage
    if data.candidates is not None and kind != "bm25":
        print(f"note: {data.source} has its own candidates; --first-stage {kind} is not used", file=sys.stderr)
        kind = "bm25"
    first = first_stage(data, kind, args.first_stage_k, args.dense_model, progress=sys.stderr.isatty())
    options = parse_options(args.options)
    if options.get("rationalize") is True:  # rationalization explains the judged labels: give it the qrels
        if not data.qrels:
            raise LlmrankError(f"--option rationalize=true: {data.source} has no judgements (qrels) to explain")
        options["qrels"] = data.qrels
    backend = None
    from llmrank.students import is_student_dir

    if args.model and is_student_dir(args.model):  # a saved student teaches as it was trained to score
        from llmrank.commands.rerank import build_from_args

        args.method = method
        reranker = build_from_args(args, options)
    elif needs_backend(method):
        backend = make_backend(args.backend, args.model or args.llm_default_model, **backend_options(args))
        reranker = _build(method, backend, args.prompt, options)
    else:
        reranker = _build(method, None, args.prompt, {"model": args.model or args.dense_model, **options})
    configure(reranker, args)
    if args.rationales and not getattr(reranker, "has_rationales", False):
        raise LlmrankError(f"--rationales: method '{method}' writes no explanations; use --method rationale")
    try:
        stats = teach(reranker, data, first, args.top_k, args.output, require_rationales=args.rationales)
    finally:
        if backend is not None:
            backend.close()
    if not stats["main_process"]:  # a worker process of a sharded run: the main process reports
        return 0
    if stats["processes"] > 1:
        print(f"{stats['processes']} processes taught {stats['done']} queries into {args.output}", file=sys.stderr)
    print(f"{args.output}: {stats['queries']} queries, {stats['done']} done now, {stats['skipped']} skipped "
          f"(already in the file), top-{args.top_k} ranked by {method}", file=sys.stderr)
    if stats["repaired_bytes"]:
        print(f"note: a torn last record ({stats['repaired_bytes']} bytes) from an interrupted run was dropped "
              "and its query run again", file=sys.stderr)
    if stats["done"]:
        print(f"cost per query: {_cost_line(stats['cost_per_query'])}", file=sys.stderr)
    if data.qrels:
        run_ = read_teacher_run(args.output)
        qids = [q for q in first.qids() if q in run_ and q in data.qrels]
        if qids:
            teacher = teacher_candidates({q: run_[q] for q in qids})
            rel = default_rel_threshold(data.qrels)
            metrics = ["ndcg@10", "mrr@10"]
            before = evaluate(first.subset(qids).top(args.top_k), data.qrels, metrics, rel)
            after = evaluate(teacher, data.qrels, metrics, rel)
            print(json.dumps({"queries": len(qids), "first_stage": labelled(before, rel), "teacher": labelled(after, rel)}))
    return 0
