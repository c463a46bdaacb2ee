"""Held-out nDCG@10 of a recipe's student at its training checkpoints (benchmark, not a test).

Reads a recipe and its run directory; for each ``distill/checkpoint-N`` (the LoRA adapter the Trainer saved at
step N) scores the recipe's first eval dataset (BM25 top-k reranked, the eval stage's setting) with the
student's prompt, truncation and dtype, and prints ``step, nDCG@10`` next to the zero-shot student (step 0),
so a learning curve can be read against held-out quality, not training loss alone.

    python -m eval.bench_checkpoints recipes/quickstart-cpu.yaml --out runs [--set k=v ...] [--queries 10] [--steps 20 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from llmrank.backends.hf import HFBackend
from llmrank.data import load_dataset
from llmrank.data.bm25 import ensure_candidates
from llmrank.eval.metrics import evaluate
from llmrank.progress import ProgressLines
from llmrank.recipe import eval_entries, load_recipe
from llmrank.rerankers.pointwise import PointwiseReranker
from llmrank.runner import Runner, checkpoints


def student_at(path, recipe) -> PointwiseReranker:
    """The base model with the LoRA adapter of one checkpoint (or the checkpoint's own weights when the student
    is fully fine-tuned), scoring as the eval stage scores the student."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrank.backends.hf import resolve_dtype
    from llmrank.models import resolve_model

    d = recipe.distill
    base = resolve_model(d.model)
    if path is not None and d.finetune == "full":
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(d.dtype))
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=resolve_dtype(d.dtype))
    if path is not None and d.finetune != "full":
        model = PeftModel.from_pretrained(model, str(path))
    backend = HFBackend(base, dtype=d.dtype, model_obj=model, tokenizer=AutoTokenizer.from_pretrained(base))
    return PointwiseReranker(backend, d.prompt, max_doc_tokens=d.max_doc_tokens, variants=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--out", default="runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--queries", type=int, default=None, help="first N queries of the eval dataset (default: the recipe's)")
    ap.add_argument("--steps", type=int, nargs="*", default=None, help="only these checkpoint steps (default: all)")
    ap.add_argument("--zero-shot", action="store_true", help="also score the base model (step 0)")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    runner = Runner(recipe, args.out, progress=False)
    entry = eval_entries(recipe.eval)[0]
    data = load_dataset(entry.dataset, entry.split, query_field=entry.query_field).first_queries(args.queries or entry.queries)
    first = ensure_candidates(data, max(recipe.eval.top_k, 100)).subset(data.queries)
    ckpts = [(int(p.name.split("-")[1]), p) for p in checkpoints(runner.stage_dir("distill"))]
    if args.steps:
        ckpts = [(s, p) for s, p in ckpts if s in args.steps]
    todo = ([(0, None)] if args.zero_shot else []) + ckpts
    print(f"{entry.label()}: {len(data.queries)} queries, BM25 top-{recipe.eval.top_k}; checkpoints {[s for s, _ in todo]}",
          file=sys.stderr)
    for step, path in todo:
        t0 = time.perf_counter()
        reranker = student_at(path, recipe)
        lines = ProgressLines(f"step {step}", len(first))
        run, _ = reranker.rerank_all(data, first, recipe.eval.top_k, progress=False, on_ranking=lines)
        m = evaluate(run.top(recipe.eval.top_k), data.qrels, ["ndcg@10"], per_query=True)["ndcg@10"]
        print(json.dumps({"step": step, "ndcg@10": sum(m.values()) / len(m), "queries": len(m),
                          "seconds": round(time.perf_counter() - t0, 1), "per_query": m}), flush=True)


if __name__ == "__main__":
    main()
