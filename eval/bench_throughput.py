"""Throughput at scale (benchmark, not a test): queries in flight, every teacher method, against the ceiling.

    python -m eval.bench_throughput                        # every part, the sizes of issue 14
    python -m eval.bench_throughput --parts b,d --pairs 80 --queries-d 2 --threads 1

Parts (ratios are taken within one run; every row prints tokens/s, pairs/s and the fraction of this
machine's measured matmul ceiling in that dtype):

- (a) listwise teacher (RankGPT window 10, step 5, top 20) on ``--queries-a`` DL19 queries: one query at a
  time against all of them in flight, on ``hf`` and on vLLM offline;
- (b) pointwise: a naive per-pair loop (``model(**tokenizer(prompt))``, logits at every position) against
  llmrank's hf path (in flight) against vLLM offline against the vLLM server (openai backend), the same
  ``--pairs`` pairs, in bf16 and in fp32;
- (c) the rationale teacher (generation-heavy), in flight, hf against vLLM offline;
- (d) every teacher method (pointwise, pairwise heapsort, setwise heapsort, listwise, rationale) on the same
  ``--queries-d`` DL19 queries on hf, in flight: prompt tokens/s and generated tokens/s per method, and the
  prompt rate as a fraction of the pointwise path's.

vLLM rows run this script again under the vLLM python (``$LLMRANK_VLLM_PYTHON`` or ``.venv-vllm``, built by
``make vllm``); without it they are skipped with a note. FLOPs are counted on the tokens actually computed:
2 × (non-embedding parameters) per prompt token the model ran (prompt tokens minus those served from a
reused prefix KV cache) and per generated token, plus the LM head on every generated token. The ceiling is a
square ``--peak-n`` matmul in the same dtype and thread count, measured in the same process right after.

Findings (torch.profiler on this 2-core avx512_bf16 box, SmolLM2-135M bf16, 8 DL19 pairs of one query through
``PointwiseReranker``, torch 2.13, machine shared with other jobs at load average ~15):

- Work: the hf path does less work than the naive loop before any kernel speed-up: the shared
  instruction+query prefix runs once per query (``prefix_tokens_saved``), and the LM head runs on the last
  position and the label rows only, where the naive loop computes 49k-wide logits at every position (~26% of
  its FLOPs for this model, at high matmul efficiency: that is why the naive row's ceiling fraction looks
  good). The remaining time is the decoder body on document tokens.
- What bounds hf / naive (part b, 40 pairs = 2 DL19 queries × 20, bf16, 1 thread, load ~8): the naive loop does
  1748 GFLOP (1380 in the body on 6501 prompt tokens, 368 in the full LM head at every position) at 83% of the
  bf16 ceiling; the hf path does 1090 GFLOP (the body on 6501 − 1368 prefix-reused tokens) at 87%. 1.60× less
  work × the efficiency gives 1.69×. What is left is the body on document tokens, each computed once; 2× would
  need 20% fewer of them (shorter documents), not a faster kernel: at 87% of the ceiling the path is within
  13% of what the matmul rate allows.
- Where the body's time goes, 1 thread: ``aten::mm`` 81%, attention (``sdpa`` flash kernel for CPU) 9%,
  elementwise ops (RMSNorm ``pow``/``mul``, RoPE, SiLU, residual ``add``, fp32 up-casts ``copy_``, the prefix
  KV ``cat``) ~8%. The path is matmul-bound; its ceiling is the matmul rate at the model's shapes (M = batch ×
  suffix tokens ≈ 600, K = 576, N = 192…1536), which is what the ceiling column compares with.
- With 2 threads on the oversubscribed box the picture inverts: ``mm`` 32%, elementwise ops 63%
  (``mul`` 17.6%, ``copy_`` 11.3%, ``cat`` 9.9%, ``add`` 7.5%, …). Every OpenMP-parallel op waits until both
  threads are scheduled: a bf16 ``mul`` of a [4, 150, 1536] tensor took 22.6 ms with 2 threads and 0.66 ms
  with 1 at load ~20. ``--threads 1`` is then several times faster; on a quiet machine use every core.
- dtype: on this loaded box, best of 5, 1 thread: fp32 1024² matmul 18.8 GFLOP/s, bf16 11.4; at the model's
  shape 19.5 vs 11.4; 2 threads: 13.6 vs 13.0 and 10.4 vs 13.9. bf16 was not faster here; part (b) prints
  both dtypes side by side.
- Label-logit methods (pairwise, setwise) send 1–2 prompts per request, and a comparison shares only the
  instruction with the other prompts of its query, so one query alone runs batches of 1–2 rows with little
  prefix reuse. In flight, the requests of many queries fill the hf batches (``HFBackend.run_requests``),
  and vLLM gets every query's next comparisons in one engine call.
- vLLM rows use the engine's own threads (every core), so their ceiling fraction is taken against the
  all-core matmul rate (``--peak-n`` square, every core), printed separately.
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

METHODS_D = [
    ("pointwise", {}),
    ("pairwise", {"strategy": "heapsort", "top_k": 10}),
    ("setwise", {"strategy": "heapsort", "top_k": 10}),
    ("listwise", {"window": 10, "step": 5}),
    ("rationale", {"max_tokens": 64}),
]


def data_dir() -> Path:
    return Path(os.environ.get("LLMRANK_DATA") or REPO.parent / "shared" / "data")


def load_data(queries: int):
    from llmrank.data import load_dataset

    path = data_dir() / "trec-dl19" / "bm25_top100.json"
    if not path.is_file():
        sys.exit(f"bench_throughput: {path} not found (set LLMRANK_DATA)")
    return load_dataset(path).first_queries(queries)


def matmul_peak(dtype: str, n: int, reps: int = 8) -> float:
    """FLOP/s of an ``n``×``n`` matmul in ``dtype``: the ceiling the scoring path is compared with."""
    import torch

    dt = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def model_params(model: str) -> tuple[int, int]:
    """(non-embedding parameters, LM-head parameters) from the checkpoint's config (no weights loaded)."""
    from transformers import AutoConfig

    from llmrank.models import resolve_model

    c = AutoConfig.from_pretrained(resolve_model(model))
    c = getattr(c, "text_config", None) or c
    h, i, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    heads, kv = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    hd = getattr(c, "head_dim", None) or h // heads
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * i
    return L * per_layer, h * v


def make_backend(kind: str, model: str, dtype: str, batch_size: int | None):
    if kind == "vllm":
        from llmrank.backends.vllm import VLLMBackend

        return VLLMBackend(model, dtype=dtype)
    from llmrank.backends.hf import HFBackend

    return HFBackend(model, dtype=dtype, batch_size=batch_size)


def rank(backend, method: str, options: dict, data, top_k: int, in_flight: int) -> dict:
    """Run one method over every query of ``data``; wall seconds and summed cost."""
    from llmrank.rerankers import build_reranker
    from llmrank.rerankers.base import total_cost

    reranker = build_reranker(method, backend, **options)
    reranker.in_flight = in_flight
    t0 = time.perf_counter()
    _, rankings = reranker.rerank_all(data, data.candidates, top_k, progress=False)
    seconds = time.perf_counter() - t0
    cost = {k: v for k, v in total_cost(rankings).items() if not k.endswith("_per_query")}
    return {"method": method, "options": options, "in_flight": in_flight, "queries": len(rankings),
            "seconds": seconds, "cost": cost, "orders": {q: r.docids for q, r in rankings.items()}}


def naive_pointwise(backend, data, top_k: int) -> dict:
    """One pair at a time, the whole model, logits at every position."""
    import torch

    from llmrank.backends.base import label_token_ids
    from llmrank.rerankers.pointwise import PointwiseReranker

    reranker = PointwiseReranker(backend, "yes_no")
    tok, lm = backend.tokenizer, backend.lm
    yes, no = label_token_ids(tok, "yes"), label_token_ids(tok, "no")
    tokens, pairs = 0, 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for qid in data.queries:
            docs = [data.docs[d].contents for d in data.candidates.docids(qid)[:top_k]]
            for prompt in reranker.prompts_for(data.queries[qid].text, docs)[0]:
                enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
                logp = lm(**enc).logits[0, -1].float().log_softmax(-1)
                torch.sigmoid(torch.logsumexp(logp[yes], 0) - torch.logsumexp(logp[no], 0)).item()
                tokens += enc["input_ids"].shape[1]
                pairs += 1
    return {"method": "naive", "seconds": time.perf_counter() - t0,
            "cost": {"calls": pairs, "prompt_tokens": tokens, "naive_full_logits": tokens}}


class _Rows(list):
    """A list that shows each row as it is added (a long run keeps what it measured if it is cut short)."""

    def __init__(self, show):
        super().__init__()
        self.show = show

    def append(self, row):
        super().append(row)
        self.show([row])


def part_rows(part: str, kind: str, args) -> list[dict]:
    """The measurements of one part on one backend kind (``hf`` here, ``vllm`` in the vLLM python)."""
    rows = _Rows(args.show)
    if part == "a":
        data = load_data(args.queries_a)
        backend = make_backend(kind, args.model, args.dtype, args.batch_size)
        opts = {"window": 10, "step": 5}
        for n in (1, max(2, len(data.queries))):
            rows.append({"part": "a", "backend": kind, "dtype": args.dtype, **rank(backend, "listwise", opts, data, 20, n)})
        backend.close()
    elif part == "b":
        data = load_data(-(-args.pairs // 20))
        for dtype in args.dtypes_b.split(","):
            backend = make_backend(kind, args.model, dtype, args.batch_size)
            from llmrank.rerankers.pointwise import PointwiseReranker

            qid = next(iter(data.queries))  # warm-up (first-call allocations), not timed
            PointwiseReranker(backend).score(data.queries[qid].text, [data.docs[d].contents for d in data.candidates.docids(qid)[:2]])
            if kind == "hf":
                rows.append({"part": "b", "backend": "naive loop", "dtype": dtype, **naive_pointwise(backend, data, 20)})
            rows.append({"part": "b", "backend": kind, "dtype": dtype,
                         **rank(backend, "pointwise", {}, data, 20, len(data.queries))})
            backend.close()
    elif part == "c":
        data = load_data(args.queries_c)
        backend = make_backend(kind, args.model, args.dtype, args.batch_size)
        rows.append({"part": "c", "backend": kind, "dtype": args.dtype,
                     **rank(backend, "rationale", {"max_tokens": args.rationale_tokens}, data, args.top_k_c, len(data.queries))})
        backend.close()
    elif part == "d":
        data = load_data(args.queries_d)
        backend = make_backend(kind, args.model, args.dtype, args.batch_size)
        for method, opts in METHODS_D:
            if method not in args.methods_d.split(","):
                continue
            rows.append({"part": "d", "backend": kind, "dtype": args.dtype,
                         **rank(backend, method, opts, data, args.top_k_d, len(data.queries))})
        backend.close()
    return list(rows)


def run_vllm_part(part: str, args) -> list[dict] | str:
    """The vLLM rows of a part, computed by this script in the vLLM python; a reason string when unavailable."""
    try:
        from llmrank.serve.launch import find_vllm_python

        py = find_vllm_python(args.vllm_python)
    except Exception as e:  # noqa: BLE001 - no vLLM python: the part's vLLM rows are skipped
        return f"no vLLM python ({e}); `make vllm` builds .venv-vllm"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        # the vLLM python runs this module from the repository root, which puts llmrank on its path
        cmd = [py.path, "-m", "eval.bench_throughput", "--worker", str(out), "--parts", part] + args.passthrough
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.vllm_timeout, cwd=REPO)
        if proc.returncode != 0 or not out.is_file():
            return f"vLLM worker failed:\n{proc.stderr[-2000:]}"
        return json.loads(out.read_text())


def server_rows(args) -> list[dict] | str:
    """Part (b) through `vllm serve` and the openai backend."""
    try:
        from llmrank.backends.openai import OpenAIBackend
        from llmrank.models import resolve_model
        from llmrank.serve.launch import VLLMServer, find_vllm_python

        find_vllm_python(args.vllm_python)
    except Exception as e:  # noqa: BLE001
        return f"no vLLM python ({e})"
    data = load_data(-(-args.pairs // 20))
    rows = []
    for dtype in args.dtypes_b.split(","):
        with VLLMServer(args.model, runner="generate", dtype=dtype, python=args.vllm_python) as server:
            backend = OpenAIBackend(str(resolve_model(args.model)), base_url=server.url,
                                    served_model=server.served_model_name, chunk=20)
            rows.append({"part": "b", "backend": "vllm server", "dtype": dtype,
                         **rank(backend, "pointwise", {}, data, 20, len(data.queries))})
            backend.close()
    return rows


def describe(rows: list[dict], body: int, head: int, peaks: dict, header: bool = True) -> None:
    if header:
        print(f"{'part':<4} {'backend':<12} {'dtype':<8} {'method':<10} {'in flight':>9} {'q':>3} {'s':>8} "
              f"{'pairs/s':>8} {'prompt tok/s':>12} {'gen tok/s':>9} {'GFLOP/s':>8} {'ceiling':>7}")
    for r in rows:
        c = r["cost"]
        computed = c.get("prompt_tokens", 0) - c.get("prefix_tokens_saved", 0)
        gen = c.get("completion_tokens", 0)
        flops = 2 * body * (computed + gen) + 2 * head * (gen + c.get("naive_full_logits", 0))
        r["gflops"] = flops / r["seconds"] / 1e9
        peak = peaks.get(r["dtype"] + ("/all cores" if r["backend"].startswith("vllm") else ""))
        r["ceiling_fraction"] = flops / r["seconds"] / peak if peak else None
        r["prompt_tok_s"] = c.get("prompt_tokens", 0) / r["seconds"]
        r["gen_tok_s"] = gen / r["seconds"]
        r["pairs_s"] = c.get("calls", 0) / r["seconds"]
        ceiling = f"{r['ceiling_fraction']:.0%}" if r["ceiling_fraction"] is not None else "-"
        print(f"{r['part']:<4} {r['backend']:<12} {r['dtype']:<8} {r['method']:<10} {r.get('in_flight', 1):>9} "
              f"{r.get('queries', '-'):>3} {r['seconds']:>8.1f} {r['pairs_s']:>8.2f} {r['prompt_tok_s']:>12.1f} "
              f"{r['gen_tok_s']:>9.1f} {r['gflops']:>8.1f} {ceiling:>7}")


def find(rows, **kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def ratios(rows: list[dict]) -> None:
    print()
    for kind in ("hf", "vllm"):
        one, many = find(rows, part="a", backend=kind, in_flight=1), None
        many = next((r for r in rows if r["part"] == "a" and r["backend"] == kind and r["in_flight"] > 1), None)
        if one and many:
            same = one["orders"] == many["orders"]
            print(f"(a) listwise {kind}: in flight {one['seconds'] / many['seconds']:.2f}x per-query "
                  f"(rankings identical: {same}){'; target >= 3x on vllm' if kind == 'vllm' else ''}")
    for dtype in ("bfloat16", "float32"):
        naive, hf = find(rows, part="b", backend="naive loop", dtype=dtype), find(rows, part="b", backend="hf", dtype=dtype)
        if naive and hf:
            print(f"(b) pointwise {dtype}: hf {naive['seconds'] / hf['seconds']:.2f}x naive (target >= 2x), "
                  f"{hf['ceiling_fraction']:.0%} of the {dtype} matmul ceiling (target >= 70% in bf16)")
        for other in ("vllm", "vllm server"):
            o = find(rows, part="b", backend=other, dtype=dtype)
            if o and hf:
                print(f"(b) pointwise {dtype}: {other} {hf['seconds'] / o['seconds']:.2f}x hf")
    hf, vl = find(rows, part="c", backend="hf"), find(rows, part="c", backend="vllm")
    if hf and vl:
        print(f"(c) rationale: vllm {hf['seconds'] / vl['seconds']:.2f}x hf (target >= 5x)")
    pw = find(rows, part="d", method="pointwise")
    if pw:
        for r in rows:
            if r["part"] == "d" and r["method"] != "pointwise":
                target = " (target >= 0.5x)" if r["method"] in ("pairwise", "setwise") else ""
                print(f"(d) {r['method']}: prompt tokens/s {r['prompt_tok_s'] / pw['prompt_tok_s']:.2f}x pointwise{target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="a,b,c,d")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16", help="dtype of parts a, c, d")
    ap.add_argument("--dtypes-b", default="bfloat16,float32", help="dtypes of part b")
    ap.add_argument("--queries-a", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=400, help="part b: pairs (20 per query)")
    ap.add_argument("--queries-c", type=int, default=5)
    ap.add_argument("--top-k-c", type=int, default=20)
    ap.add_argument("--rationale-tokens", type=int, default=192)
    ap.add_argument("--queries-d", type=int, default=5)
    ap.add_argument("--top-k-d", type=int, default=20)
    ap.add_argument("--methods-d", default=",".join(m for m, _ in METHODS_D))
    ap.add_argument("--batch-size", type=int, default=None, help="hf batch size (default: the backend's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 helps on an overloaded box)")
    ap.add_argument("--peak-n", type=int, default=1024)
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM rows")
    ap.add_argument("--server", action="store_true", help="part b: also the vLLM server through the openai backend")
    ap.add_argument("--vllm-python", default=None)
    ap.add_argument("--vllm-timeout", type=int, default=3600)
    ap.add_argument("--out", default=None, help="write every row as JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.passthrough = [a for a in sys.argv[1:] if not a.startswith("--parts") and a != args.parts
                        and a not in ("--server", "--no-vllm")]
    parts = [p for p in args.parts.split(",") if p]
    if args.worker:
        args.show = lambda rows: None
        rows = [r for p in parts for r in part_rows(p, "vllm", args)]
        Path(args.worker).write_text(json.dumps(rows))
        return

    from llmrank.models import resolve_model

    resolve_model(args.model)
    load0 = os.getloadavg()[0]
    print(f"{args.model}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load0:.1f}",
          flush=True)
    dtypes = sorted({args.dtype} | (set(args.dtypes_b.split(",")) if "b" in parts else set()))
    peaks = {d: matmul_peak(d, args.peak_n) for d in dtypes}
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    peaks.update({f"{d}/all cores": matmul_peak(d, args.peak_n) for d in dtypes})
    torch.set_num_threads(threads)
    body, head = model_params(args.model)
    print(f"matmul ceiling ({args.peak_n}², {torch.get_num_threads()} threads): "
          + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items()), flush=True)
    rows: list[dict] = []

    shown = []

    def show(new: list[dict]) -> None:
        describe(new, body, head, peaks, header=not shown)
        shown.extend(new)
        sys.stdout.flush()

    args.show = show
    for p in parts:
        rows += part_rows(p, "hf", args)
        print(f"  part {p} hf done ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})", flush=True)
        if p in "abc" and not args.no_vllm:
            got = run_vllm_part(p, args)
            if isinstance(got, str):
                print(f"  part {p}: vLLM rows skipped: {got}", flush=True)
            else:
                rows += got
                print(f"  part {p} vllm done ({time.strftime('%H:%M:%S')})", flush=True)
        if p == "b" and args.server and not args.no_vllm:
            got = server_rows(args)
            if isinstance(got, str):
                print(f"  part b: server rows skipped: {got}", flush=True)
            else:
                rows += got
    print(f"\nall rows (load average now {os.getloadavg()[0]:.1f}):")
    describe(rows, body, head, peaks)
    ratios(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "load_start": load0,
                                              "peaks": peaks, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
