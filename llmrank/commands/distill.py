from __future__ import annotations

import sys
from pathlib import Path

from llmrank.checks import dtype_name, positive_float, positive_int
from llmrank.errors import LlmrankError

NAME = "distill"
HELP = "Distil a teacher run into a pointwise LoRA student (from a recipe, or from flags)."


def add_arguments(p) -> None:
    p.add_argument("recipe", nargs="?", help="a recipe YAML: runs its teach and distill stages (other flags ignored)")
    p.add_argument("--dataset", help="training dataset (BEIR dir, candidates JSON, jsonl …)")
    p.add_argument("--split", default="train", help="training split (default: train)")
    p.add_argument("--teacher", help="teacher run jsonl (from `llmrank teach`); or --oracle")
    p.add_argument("--oracle", action="store_true", help="use the dataset's qrels as the teacher")
    p.add_argument("--top-k", type=positive_int, default=20, help="first-stage depth for the oracle teacher")
    p.add_argument("--model", default="smollm2-135m", help="student base model")
    p.add_argument("--prompt", default="yes_no", help="pointwise prompt the student is trained and served with")
    p.add_argument("--loss", default="listnet", help="ranking loss (ranknet, margin_mse, listnet, listmle, pld, cprd, bce, label_ce)")
    p.add_argument("--group-size", type=positive_int, default=8)
    p.add_argument("--max-doc-tokens", type=positive_int, default=256)
    p.add_argument("--lora-r", type=positive_int, default=16)
    p.add_argument("--qlora", action="store_true", help="4-bit nf4 base under the LoRA (bitsandbytes)")
    p.add_argument("--dtype", type=dtype_name, default="float32")
    p.add_argument("--max-steps", type=positive_int, default=50)
    p.add_argument("--learning-rate", type=positive_float, default=1e-4)
    p.add_argument("--batch-size", type=positive_int, default=1, help="query groups per device per step")
    p.add_argument("--queries", type=positive_int, default=None, help="first N training queries")
    p.add_argument("--merge", action="store_true", help="also save the merged model")
    p.add_argument("-o", "--output-dir", default="runs/distill")
    p.add_argument("--overwrite", action="store_true", help="write into --output-dir even if llmrank did not create it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run(args) -> int:
    if args.recipe:
        from llmrank.recipe import load_recipe
        from llmrank.runner import Runner

        runner = Runner(load_recipe(args.recipe, args.overrides))
        if runner.recipe.distill is None:
            raise LlmrankError(f"{args.recipe}: the recipe has no 'distill' section")
        runner.run("teach")
        runner.run("distill")
        return 0
    if not args.dataset or not (args.teacher or args.oracle):
        raise LlmrankError("give a recipe, or --dataset with --teacher TEACHER.jsonl or --oracle")
    from llmrank.models import check_model
    from llmrank.outputs import check_output, mark_dir

    check_output(args.output_dir, "distill", args.overwrite, inputs=[args.dataset] + ([args.teacher] if args.teacher else []))
    check_model(args.model)
    from transformers import TrainingArguments

    from llmrank.data import load_dataset
    from llmrank.data.bm25 import ensure_candidates
    from llmrank.teacher import read_teacher_run
    from llmrank.training.distill import DistillConfig, train_distill
    from llmrank.training.examples import build_groups

    data = load_dataset(args.dataset, args.split).first_queries(args.queries)
    if args.oracle:
        from llmrank.rerankers.oracle import OracleReranker

        if not data.qrels:
            raise LlmrankError(f"{args.dataset}: --oracle needs judgements for split '{args.split}'")
        cands = ensure_candidates(data, args.top_k).subset(data.queries).top(args.top_k)
        _, rankings = OracleReranker(data.qrels).rerank_all(data, cands, args.top_k, progress=False)
        teacher = {q: {"qid": q, "ranking": r.docids, "scores": r.scores} for q, r in rankings.items()}
    else:
        whole = read_teacher_run(args.teacher)
        teacher = {q: rec for q, rec in whole.items() if q in data.queries}
        if whole and not teacher:
            raise LlmrankError(f"{args.teacher}: none of its {len(whole)} query ids is in {args.dataset} split "
                               f"'{args.split}' (first teacher qid: {next(iter(whole))}); was it taught on another dataset?")
    groups = build_groups(data, teacher, args.group_size)
    cfg = DistillConfig(model=args.model, prompt=args.prompt, loss=args.loss, group_size=args.group_size,
                        max_doc_tokens=args.max_doc_tokens, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                        qlora=args.qlora, dtype=args.dtype, merge=args.merge)
    import torch

    targs = TrainingArguments(output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate,
                              per_device_train_batch_size=args.batch_size, logging_steps=max(1, args.max_steps // 10),
                              save_steps=max(10, args.max_steps // 2), save_total_limit=1, report_to=[],
                              use_cpu=not torch.cuda.is_available(), bf16=args.dtype in ("bf16", "bfloat16"))
    mark_dir(args.output_dir, "distill")
    out = train_distill(cfg, groups, targs)
    print(f"student saved to {Path(out) / 'adapter'}" + (f" and {Path(out) / 'merged'}" if args.merge else ""), file=sys.stderr)
    return 0
