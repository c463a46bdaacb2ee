"""One pointwise scoring job through the ``hf`` backend and through vLLM, side by side: pairs per second.

    python -m eval.bench_vllm                      # 200 TREC DL19 BM25 (query, passage) pairs, SmolLM2-135M fp32
    python -m eval.bench_vllm --pairs 400 --depth 20 --dtype bfloat16
    python -m eval.bench_vllm --server             # also through `llmrank serve` + the openai backend

The job: the first ``--pairs`` pairs of ``trec-dl19/bm25_top100.json`` (``--depth`` passages per query,
queries in file order), each scored by :class:`~llmrank.rerankers.pointwise.PointwiseReranker` (P(yes) of
the ``yes_no`` prompt), one call per query — what ``llmrank rerank`` does. The ``hf`` half runs in this
python; the ``vllm`` half (offline ``vllm.LLM``, :class:`llmrank.backends.vllm.VLLMBackend`) re-runs this
script under the vLLM python (``$LLMRANK_VLLM_PYTHON`` or ``.venv-vllm``; ``make vllm``), because vLLM
pins its own torch and transformers. ``--server`` adds a third row: vLLM's OpenAI server (started with
:class:`llmrank.serve.launch.VLLMServer`) read by the ``openai`` backend through ``logprob_token_ids``.

Printed per path: startup seconds (model load / engine start / server start), scoring seconds, pairs/s,
and the largest |score difference| from ``hf``; the last line is the vLLM/hf throughput ratio. The data
directory is ``$LLMRANK_DATA`` or ``<repo>/../shared/data``. ``--out FILE`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("LLMRANK_DATA") or REPO.parent / "shared" / "data")


def load_job(pairs: int, depth: int) -> list[tuple[str, list[str]]]:
    """``[(query, [passages])]`` with ``pairs`` pairs in all, ``depth`` per query."""
    path = data_dir() / "trec-dl19" / "bm25_top100.json"
    if not path.is_file():
        sys.exit(f"bench_vllm: {path} not found (set LLMRANK_DATA)")
    items = json.loads(path.read_text())
    job, left = [], pairs
    for item in items:
        if left <= 0:
            break
        docs = [h["content"] for h in item["hits"][: min(depth, left)]]
        job.append((item["query"], docs))
        left -= len(docs)
    return job


def score_job(backend, job, prompt: str, max_doc_tokens: int) -> tuple[list[list[float]], float, dict]:
    from llmrank.rerankers.pointwise import PointwiseReranker

    reranker = PointwiseReranker(backend, prompt, max_doc_tokens=max_doc_tokens)
    reranker.score(job[0][0], job[0][1][:1])  # warm-up: one pair (first-call allocations), not timed
    backend.stats.clear()
    t0 = time.perf_counter()
    scores = [reranker.score(q, docs).tolist() for q, docs in job]
    return scores, time.perf_counter() - t0, dict(backend.stats)


def run_hf(args, job) -> dict:
    import torch

    from llmrank.backends.hf import HFBackend

    t0 = time.perf_counter()
    backend = HFBackend(args.model, dtype=args.dtype, batch_size=args.batch_size)
    startup = time.perf_counter() - t0
    scores, seconds, stats = score_job(backend, job, args.prompt, args.max_doc_tokens)
    return {"path": f"hf (transformers, {torch.get_num_threads()} threads, batch {args.batch_size})",
            "startup_s": startup, "seconds": seconds, "scores": scores, "stats": stats}


def run_vllm_worker(args, job) -> dict:
    """Inside the vLLM python: the offline engine."""
    t0 = time.perf_counter()
    from llmrank.backends.vllm import VLLMBackend

    backend = VLLMBackend(args.model, dtype=args.dtype)
    startup = time.perf_counter() - t0
    scores, seconds, stats = score_job(backend, job, args.prompt, args.max_doc_tokens)
    import vllm

    backend.close()
    return {"path": f"vllm offline (vllm {vllm.__version__}, LLM.generate + logprob_token_ids)",
            "startup_s": startup, "engine_init_s": backend.startup_seconds, "seconds": seconds,
            "scores": scores, "stats": stats}


def run_vllm(args) -> dict:
    from llmrank.serve.launch import find_vllm_python

    py = find_vllm_python(args.vllm_python)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        # the vLLM python runs this module from the repository root, which puts llmrank on its path
        cmd = [py.path, "-m", "eval.bench_vllm", "--worker", str(out), "--pairs", str(args.pairs),
               "--depth", str(args.depth), "--model", args.model, "--dtype", args.dtype, "--prompt", args.prompt,
               "--max-doc-tokens", str(args.max_doc_tokens)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0 or not out.is_file():
            sys.exit(f"bench_vllm: the vLLM half failed ({py.path}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        res = json.loads(out.read_text())
        res["process_s"] = time.perf_counter() - t0
        return res


def run_server(args, job) -> dict:
    from llmrank.backends.openai import OpenAIBackend
    from llmrank.models import resolve_model
    from llmrank.serve.launch import VLLMServer

    t0 = time.perf_counter()
    with VLLMServer(args.model, runner="generate", dtype=args.dtype, python=args.vllm_python) as server:
        startup = time.perf_counter() - t0
        backend = OpenAIBackend(str(resolve_model(args.model)), base_url=server.url,
                                served_model=server.served_model_name, chunk=args.depth)
        scores, seconds, stats = score_job(backend, job, args.prompt, args.max_doc_tokens)
        backend.close()
    return {"path": "vllm server (/v1/completions + logprob_token_ids, openai backend)", "startup_s": startup,
            "seconds": seconds, "scores": scores, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--depth", type=int, default=20, help="passages per query")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompt", default="yes_no")
    ap.add_argument("--max-doc-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16, help="hf batch size")
    ap.add_argument("--vllm-python", default=None, help="python with vLLM (default: $LLMRANK_VLLM_PYTHON, .venv-vllm)")
    ap.add_argument("--server", action="store_true", help="also time the vLLM server with the openai backend")
    ap.add_argument("--skip-hf", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="write the numbers as JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    job = load_job(args.pairs, args.depth)
    n = sum(len(d) for _, d in job)
    if args.worker:  # the vLLM half, in the vLLM python
        Path(args.worker).write_text(json.dumps(run_vllm_worker(args, job)))
        return

    from llmrank.models import resolve_model

    resolve_model(args.model)  # prepare the checkpoint once, outside any timing
    print(f"job: {n} (query, passage) pairs from {len(job)} TREC DL19 queries, {args.model} {args.dtype}, "
          f"prompt {args.prompt}, documents cut to {args.max_doc_tokens} tokens; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    if not args.skip_hf:
        results.append(run_hf(args, job))
        print(f"  hf done: {results[-1]['seconds']:.1f} s", flush=True)
    results.append(run_vllm(args))
    print(f"  vllm done: {results[-1]['seconds']:.1f} s", flush=True)
    if args.server:
        results.append(run_server(args, job))
        print(f"  server done: {results[-1]['seconds']:.1f} s", flush=True)

    import numpy as np

    ref = np.concatenate([np.array(s) for s in results[0]["scores"]])
    print(f"\n{'path':<72} {'startup s':>9} {'score s':>8} {'pairs/s':>8} {'max |Δscore|':>12}")
    for r in results:
        r["pairs_per_s"] = n / r["seconds"]
        r["max_abs_diff_vs_first"] = float(np.max(np.abs(np.concatenate([np.array(s) for s in r["scores"]]) - ref)))
        print(f"{r['path']:<72} {r['startup_s']:>9.1f} {r['seconds']:>8.1f} {r['pairs_per_s']:>8.2f} "
              f"{r['max_abs_diff_vs_first']:>12.2e}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"pairs": n, "queries": len(job), "args": vars(args),
                                              "results": [{k: v for k, v in r.items() if k != "scores"} for r in results]},
                                             indent=1))
    hf = next((r for r in results if r["path"].startswith("hf")), None)
    vl = next(r for r in results if r["path"].startswith("vllm offline"))
    sv = next((r for r in results if r["path"].startswith("vllm server")), None)
    if hf is not None:
        extra = f"; server {sv['pairs_per_s'] / hf['pairs_per_s']:.2f}x" if sv else ""
        print(f"\nvllm/hf throughput ratio: {vl['pairs_per_s'] / hf['pairs_per_s']:.2f}x "
              f"({vl['pairs_per_s']:.2f} vs {hf['pairs_per_s']:.2f} pairs/s{extra}; target >= 5x)")


if __name__ == "__main__":
    main()
