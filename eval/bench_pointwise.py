"""Pointwise scoring speed (benchmark, not a test): llmrank's hf path vs a naive per-pair loop.

Same model, same dtype, same (query, document) prompts from TREC DL19's BM25 top candidates:

- naive: one pair at a time, ``model(**tokenizer(prompt))`` with logits for every position — the way
  pointwise rerankers are usually written;
- llmrank: ``PointwiseReranker`` over ``HFBackend`` — one query's documents batched by length, the shared
  instruction+query prefix computed once, the LM head on the last position only.

Also prints the fraction of this machine's measured bf16 matmul peak that the llmrank path reaches,
counting document tokens only (2 × non-embedding parameters FLOPs per token). The ratio is printed last.

    python -m eval.bench_pointwise [--model smollm2-135m] [--queries 3] [--docs 20] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from llmrank.backends.base import label_token_ids
from llmrank.backends.hf import HFBackend, resolve_dtype
from llmrank.data import load_dataset
from llmrank.rerankers.pointwise import PointwiseReranker

DATA = Path(os.environ.get("LLMRANK_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    data = load_dataset(DATA / "trec-dl19" / "bm25_top100.json").first_queries(args.queries)
    backend = HFBackend(args.model, dtype=args.dtype)
    reranker = PointwiseReranker(backend, "yes_no")
    tok, lm = backend.tokenizer, backend.lm
    jobs = [(data.queries[q].text, [data.docs[d].contents for d in data.candidates.docids(q)[: args.docs]]) for q in data.queries]
    pairs = sum(len(d) for _, d in jobs)
    yes, no = label_token_ids(tok, "yes"), label_token_ids(tok, "no")

    reranker.score(*jobs[0])  # warm-up
    t0 = time.perf_counter()
    fast = np.concatenate([reranker.score(q, docs) for q, docs in jobs])
    t_fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = []
    with torch.no_grad():
        for q, docs in jobs:
            for prompt in reranker.prompts_for(q, docs)[0]:
                enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
                logp = lm(**enc).logits[0, -1].float().log_softmax(-1)
                y, n = torch.logsumexp(logp[yes], 0), torch.logsumexp(logp[no], 0)
                naive.append(torch.sigmoid(y - n).item())
    t_naive = time.perf_counter() - t0

    prompts = [p for q, docs in jobs for p in reranker.prompts_for(q, docs)[0]]
    doc_tokens = sum(len(tok.encode(d, add_special_tokens=False)) for _, docs in jobs for d in docs)
    n_params = sum(p.numel() for name, p in lm.named_parameters() if "embed" not in name)
    peak = matmul_peak(resolve_dtype(args.dtype))
    achieved = 2 * n_params * doc_tokens / t_fast
    print(f"model {args.model} ({args.dtype}), {pairs} pairs, {sum(len(tok.encode(p)) for p in prompts) / pairs:.0f} tokens/prompt, "
          f"torch threads {torch.get_num_threads()}")
    print(f"max |score difference| naive vs llmrank: {np.abs(np.array(naive) - fast).max():.2e}")
    print(f"naive per-pair loop: {pairs / t_naive:.2f} pairs/s")
    print(f"llmrank hf path:     {pairs / t_fast:.2f} pairs/s")
    print(f"bf16 matmul peak {peak / 1e9:.1f} GFLOP/s; llmrank reaches {achieved / 1e9:.1f} GFLOP/s on document tokens "
          f"= {achieved / peak:.1%} of peak")
    print(f"speed-up llmrank / naive: {t_naive / t_fast:.2f}x")


if __name__ == "__main__":
    main()
