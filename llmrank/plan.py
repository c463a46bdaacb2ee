"""``llmrank plan RECIPE``: what a recipe will cost before it runs — models, memory per device, prompts, time.

Every figure is an estimate from arithmetic shown beside it; nothing loads a model or sends a prompt.

- **Models** resolve as the run would resolve them (:func:`llmrank.recipe.check_models`: alias, local folder,
  the local hub cache, or a hub id asked of the hub once, in seconds). A shape (layers, hidden size, heads,
  vocabulary) is read from the model's ``config.json`` when it is at hand (a local folder, a prepared alias,
  the hub cache), else taken from a table of the families the shipped recipes name (:data:`KNOWN`), else
  only the parameter count is read from the name (``7B``, ``135M``).
- **Memory per device** (GiB = 2³⁰ bytes), per stage:
  weights = parameters × bytes of the dtype (÷ tensor parallelism);
  LoRA = its parameters (rank r on every linear layer: r × (in + out) each) × 16 bytes (fp32 value, gradient,
  Adam's two moments); full fine-tuning = the trainable parameters × (gradient in the weights' dtype + 8 bytes
  of Adam moments);
  activations per micro-batch of T tokens: without checkpointing L × T × h × 17 × bytes (the tensors a decoder
  layer keeps for backward: q, k, v, attention output, MLP inputs and gate/up products, norms), with
  checkpointing L × T × h × bytes (each layer's input) plus one layer's full set; logits T' × V × 4 (fp32) for
  the positions whose logits are kept (the last one for a pointwise scorer);
  vLLM = its memory fraction × the device memory, of which weights, ~1 GiB of activations and the rest the KV
  cache: 2 × L × kv_heads × head_dim × bytes per token.
  A CPU run (no GPU) adds :data:`RUNTIME_GIB` for the python process itself (torch, transformers, trl,
  sentence-transformers, the data), measured as the peak RSS of importing them (581 MiB), and its peak is
  the largest stage. Checked once: for ``recipes/quickstart-cpu.yaml`` the plan says 3.2 GiB (the distill
  stage: full fine-tuning of SmolLM2-135M in float32); ``/usr/bin/time -v`` measured a peak RSS of
  4,309,868 kB (4.11 GiB) for ``make demo``'s run of it — the estimate is 22% under the measurement.
- **Prompts and tokens** the teacher sends: per query, by method (pointwise and rationale one per candidate,
  pairwise both orders of each comparison its sort asks — counted by running the sort itself —, listwise one per
  window, setwise one per group), times the training queries; documents are counted at their mean length in
  the corpus (characters / 4), cut at the method's document budget.
- **Time** = prompt tokens ÷ the prompt rate + generated tokens ÷ the generation rate (``--rate``/``--gen-rate``:
  measure them with ``eval/bench_throughput.py --parts d``), else FLOPs ÷ ``--tflops`` (2 × parameters per
  token for inference, 6 × for full training, 4 × for LoRA): optimistic for generation, which is bound by
  memory bandwidth rather than FLOPs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.recipe import Recipe, eval_entries, recipe_models

GIB = 2**30
TFLOPS_GPU = 400.0
"""Effective TFLOP/s assumed on a GPU when no rate is given: ~40% of an H100's dense bf16 peak."""
TFLOPS_CPU = 0.2
"""Effective TFLOP/s assumed on a small CPU (2 AVX-512 cores): measure yours with eval/bench_throughput.py."""
RUNTIME_GIB = 0.6
"""Peak RSS of a python process that has imported what a recipe run imports (torch 2.13, transformers 5,
trl, peft, sentence-transformers, llmrank): measured on this project's CPU machine (see eval/README.md)."""
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
PROMPT_OVERHEAD = 80
"""Tokens of a prompt around its documents (instruction, query, chat template): the shipped prompts' range."""


@dataclass
class Shape:
    """What the estimates need to know of a model."""

    params: float
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    intermediate: int | None = None
    vocab: int | None = None
    tied: bool = True
    source: str = ""

    @property
    def embedding(self) -> float:
        return (self.vocab or 0) * (self.hidden or 0)

    def lora_params(self, r: int) -> float | None:
        """LoRA rank ``r`` on every linear layer of every decoder layer (peft's ``all-linear``)."""
        if self.layers is None:
            return None
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * r * per_layer

    def kv_bytes_per_token(self, dtype_bytes: int) -> float | None:
        if self.layers is None:
            return None
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _shape_from_config(cfg: dict, source: str) -> Shape:
    cfg = cfg.get("text_config", cfg)
    h, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    i = cfg.get("intermediate_size") or 4 * h
    tied = bool(cfg.get("tie_word_embeddings", False))
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * i + 2 * h
    params = V * h * (1 if tied else 2) + L * per_layer + h
    return Shape(params, L, h, heads, kv, hd, i, V, tied, source)


def _qwen25(L, h, heads, kv, i, tied, vocab=151936):
    return {"num_hidden_layers": L, "hidden_size": h, "num_attention_heads": heads, "num_key_value_heads": kv,
            "intermediate_size": i, "tie_word_embeddings": tied, "vocab_size": vocab}


KNOWN = {
    "qwen/qwen2.5-0.5b": _qwen25(24, 896, 14, 2, 4864, True),
    "qwen/qwen2.5-1.5b": _qwen25(28, 1536, 12, 2, 8960, True),
    "qwen/qwen2.5-3b": _qwen25(36, 2048, 16, 2, 11008, True),
    "qwen/qwen2.5-7b": _qwen25(28, 3584, 28, 4, 18944, False, 152064),
    "qwen/qwen2.5-14b": _qwen25(48, 5120, 40, 8, 13824, False, 152064),
    "qwen/qwen2.5-32b": _qwen25(64, 5120, 40, 8, 27648, False, 152064),
    "qwen/qwen2.5-72b": _qwen25(80, 8192, 64, 8, 29568, False, 152064),
    "smollm2-135m": {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "intermediate_size": 1536, "tie_word_embeddings": True, "vocab_size": 49152},
}
"""Shapes of the models the shipped recipes name, from their published configs (used when no config.json of
the model is at hand); keyed by the hub id up to its size (``-Instruct``, ``-AWQ`` … share the shape)."""


def model_shape(name: str) -> Shape | None:
    """The model's shape: from its config.json when at hand, else :data:`KNOWN`, else the size in its name."""
    from llmrank import models

    cfg_path = None
    if name in models.REGISTRY and models.is_prepared(models.model_path(name)):
        cfg_path = models.model_path(name) / "config.json"
    elif Path(name).expanduser().is_dir():
        p = Path(name).expanduser()
        cfg_path = p / "config.json" if (p / "config.json").is_file() else None
        if cfg_path is None and (p / "merged" / "config.json").is_file():
            cfg_path = p / "merged" / "config.json"
    elif "/" in name:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            cfg_path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - an id the hub library rejects: no cached config
            cfg_path = None
    if cfg_path is not None and cfg_path.is_file():
        return _shape_from_config(json.loads(cfg_path.read_text()), f"config.json ({cfg_path})")
    key = name.lower()
    for known, cfg in KNOWN.items():
        if key == known or key.startswith(known + "-"):
            return _shape_from_config(cfg, f"the published config of {known} (not at hand here)")
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bm])\b", key.replace("_", "-").replace("-", " "))
    if m:
        n = float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6)
        return Shape(n, source=f"the name ('{m.group(0)}'); no config at hand, so no layer shapes")
    return None


def _gib(x: float | None) -> str:
    return "?" if x is None else f"{x / GIB:.1f}"


@dataclass
class Stage:
    name: str
    device: str
    parts: list[tuple[str, float | None, str]] = field(default_factory=list)  # (what, bytes, arithmetic)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, value: float | None, how: str) -> None:
        self.parts.append((what, value, how))

    @property
    def total(self) -> float | None:
        vals = [v for _, v, _ in self.parts]
        return None if any(v is None for v in vals) else sum(vals)


def _teacher_dtype(t) -> str:
    d = t.backend_options.get("dtype", "auto")
    return "bfloat16" if d == "auto" else d  # auto: bf16 on a GPU that computes it (backends/dtype.py)


def _default_option(method: str, key: str):
    """The default of a ranking method's keyword option (its reranker's signature)."""
    import importlib
    import inspect

    from llmrank.rerankers import RERANKERS

    module, cls = RERANKERS[method][0].split(":")
    param = inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _mean_doc_tokens(data, cap: int) -> float:
    docs = list(data.docs.values())[:5000] if getattr(data, "docs", None) else []
    if not docs:
        return float(cap)
    return sum(min(len((getattr(d, "title", "") + " " + d.text).strip()) / 4, cap) for d in docs) / len(docs)


def teacher_prompts(method: str, options: dict, k: int) -> tuple[float, int, int]:
    """``(prompts per query, documents per prompt, generated tokens per prompt)`` a teacher method sends for k
    candidates (pairwise and setwise: the comparisons their sort asks, counted by running it on a random order)."""
    import random

    if method in ("pointwise",):
        return k, 1, 0
    if method == "rationale":
        return k, 1, int(options.get("max_tokens", 192))
    if method in ("pairwise", "setwise"):
        from llmrank.rerankers.pairwise import heap_top_k

        strategy = options.get("strategy", "heapsort")
        if method == "pairwise" and strategy == "allpair":
            asked = k * (k - 1) // 2
            per = 2
            return asked * per, 2, (1 if options.get("use_logits", True) else int(options.get("max_tokens", 8)))
        arity = 2 if method == "pairwise" else int(options.get("num_child", 3)) + 1
        top = int(options.get("top_k", 10))
        counts = []
        for seed in range(5):
            rnd = random.Random(seed)
            value = [rnd.random() for _ in range(k)]
            asked: set = set()

            def best_of(group):
                asked.add(tuple(sorted(group)))
                return max(range(len(group)), key=lambda t: value[group[t]])

            heap_top_k(k, min(top, k), arity, best_of)
            counts.append(len(asked))
        per_query = sum(counts) / len(counts) * (2 if method == "pairwise" else 1)  # pairwise asks both orders
        gen = 1 if options.get("use_logits", True) else int(options.get("max_tokens", 8))
        return per_query, arity, gen
    if method == "listwise":
        window, step, passes = int(options.get("window", 20)), int(options.get("step", 10)), int(options.get("passes", 1))
        windows = 1 + max(0, math.ceil((k - window) / step))
        w = min(window, k)
        return windows * passes, w, int(options.get("max_tokens") or 4 * w)
    return 0, 0, 0


def build_plan(recipe: Recipe, where: str = "recipe", gpu_gib: float = 80.0, rate: float | None = None,
               gen_rate: float | None = None, tflops: float | None = None, gpu: bool | None = None) -> dict:
    """Everything ``llmrank plan`` prints, as data (the CLI formats it). ``gpu`` None: a recipe whose
    training asks for bf16 is taken to run on GPUs, any other on a CPU."""
    from llmrank.data import load_dataset

    from llmrank.models import check_model

    problems = []
    resolved = []
    for key, name, backend in recipe_models(recipe):
        try:
            status = check_model(name)  # alias, local, hub (cached, or answered for by the hub)
        except LlmrankError as e:
            status = f"{where}: key '{key}': {e}"
            problems.append(status)
        resolved.append({"key": key, "model": name, "backend": backend, "status": status, "shape": model_shape(name)})
    if gpu is None:
        gpu = bool(recipe.distill and recipe.distill.training.get("bf16"))
    dev = f"per GPU ({gpu_gib:g} GiB)" if gpu else "CPU RAM"
    if tflops is None:
        tflops = TFLOPS_GPU if gpu else TFLOPS_CPU
    runtime = 0.0 if gpu else RUNTIME_GIB * GIB

    d = recipe.data
    if recipe.generate is not None:  # at most one generated query per sampled document (the filters keep fewer)
        n_queries = min(recipe.generate.docs, d.queries or recipe.generate.docs)
    else:
        data = load_dataset(d.dataset, d.train_split)
        n_queries = min(len(data.queries), d.queries or len(data.queries))
    stages: list[Stage] = []
    tokens: dict = {}

    # -- teach ----------------------------------------------------------------------------------------
    t = recipe.teacher
    tshape = next((r["shape"] for r in resolved if r["key"] == "teacher.model"), None)
    st = Stage("teach", dev)
    if runtime:
        st.add("python runtime", runtime, f"measured peak RSS of the imports ({RUNTIME_GIB} GiB)")
    members = t.members if t.method == "fusion" else [t]
    for m in members:
        if m.method in ("dense", "oracle"):
            st.notes.append(f"{m.method} teacher: no LLM (the embedded bi-encoder / the judged labels)")
            if m.method == "dense":
                st.add("bi-encoder", 22.7e6 * 4, "all-MiniLM-L6-v2, 22.7M parameters × 4 bytes")
            continue
        doc_cap = int(m.options.get("max_doc_tokens") or _default_option(m.method, "max_doc_tokens") or 256)
        doc_tokens = _mean_doc_tokens(data, doc_cap)
        per_q, docs_per, gen = teacher_prompts(m.method, m.options, d.k)
        prompts = per_q * n_queries
        prompt_tokens = prompts * (PROMPT_OVERHEAD + docs_per * (doc_tokens + (5 if docs_per > 2 else 0)))
        tokens["teach"] = {"prompts": prompts, "prompt_tokens": prompt_tokens, "generated_tokens": prompts * gen,
                           "arithmetic": f"{n_queries} queries × {per_q:.1f} prompts ({m.method}, k={d.k}) × "
                                         f"({PROMPT_OVERHEAD} + {docs_per} × {doc_tokens:.0f} doc tokens); "
                                         f"{gen} generated tokens a prompt"}
        if m.backend not in ("hf", "vllm"):
            st.notes.append(f"teacher behind {m.backend}: its memory is the server's")
            continue
        shape = model_shape(m.model) if m is not t else tshape
        dtype = _teacher_dtype(m)
        b = BYTES.get(dtype, 2)
        tp = int(m.backend_options.get("tensor_parallel_size", 1))
        if shape is None:
            st.add("teacher weights", None, f"{m.model}: size unknown")
            continue
        w = shape.params * b / tp
        st.add("teacher weights", w, f"{shape.params / 1e9:.2f}B × {b} bytes ({dtype})" + (f" ÷ TP {tp}" if tp > 1 else ""))
        if m.backend == "vllm" and gpu:
            frac = float(m.backend_options.get("gpu_memory_utilization", 0.9))
            budget = frac * gpu_gib * GIB
            kv_tok = shape.kv_bytes_per_token(b)
            kv = budget - w - GIB
            st.add("vLLM KV cache + activations", max(kv, 0) + GIB,
                   f"{frac} × {gpu_gib:g} GiB − weights" + (f"; {kv / (kv_tok / tp):,.0f} tokens of KV at "
                                                            f"{kv_tok / tp / 1024:.0f} KiB each" if kv_tok and kv > 0 else ""))
            if kv <= 0:
                need = math.ceil(shape.params * b / (frac * gpu_gib * GIB - GIB)) if frac * gpu_gib > 1 else None
                st.notes.append(f"DOES NOT FIT: the weights alone exceed {frac} × {gpu_gib:g} GiB; use "
                                f"tensor_parallel_size >= {need} (backend_options) or a quantized checkpoint")
        else:
            kv_tok = shape.kv_bytes_per_token(b)
            batch = int(m.backend_options.get("batch_size", 16))
            seq = PROMPT_OVERHEAD + docs_per * doc_cap
            st.add("scoring batch", (kv_tok or 0) * batch * seq + batch * seq * (shape.hidden or 0) * 4 * b,
                   f"KV + activations of {batch} prompts × {seq} tokens")
    stages.append(st)

    # -- distill --------------------------------------------------------------------------------------
    if recipe.distill is not None:
        stages.append(_training_stage("distill", recipe, resolved, dev, runtime, gpu_gib))
    if recipe.refine is not None:
        stages.append(_training_stage("refine", recipe, resolved, dev, runtime, gpu_gib))
    # -- eval -----------------------------------------------------------------------------------------
    if recipe.eval is not None:
        entries = eval_entries(recipe.eval)
        ev = Stage("eval", dev)
        if runtime:
            ev.add("python runtime", runtime, "as above")
        teach_model = (stages[0].total or 0) - runtime
        student = 0.0
        sshape = next((r["shape"] for r in resolved if r["key"] == "distill.model"), None)
        if recipe.distill is not None and sshape is not None:
            eb = BYTES.get(recipe.eval.dtype or recipe.distill.dtype, 2)
            seq = PROMPT_OVERHEAD + int(getattr(recipe.distill, "max_doc_tokens", 256))
            student = sshape.params * eb + 16 * seq * (sshape.hidden or 0) * 4 * eb
        which = "teacher row, as in teach" if teach_model >= student else (
            f"a student row: weights in {recipe.eval.dtype or recipe.distill.dtype} + a scoring batch")
        ev.add("the largest row's model", max(teach_model, student), f"one row's model at a time ({which})")
        ev.notes.append(f"{len(entries)} datasets: " + ", ".join(f"{e.label()} ({e.queries or 'all'} queries)"
                                                                 for e in entries))
        stages.append(ev)
    if recipe.export is not None and recipe.export.enabled and recipe.distill is not None:
        sshape = next((r["shape"] for r in resolved if r["key"] == "distill.model"), None)
        ex = Stage("export", "CPU RAM")
        if sshape:
            ex.add("student in float32 (merge)", sshape.params * 4, f"{sshape.params / 1e9:.2f}B × 4 bytes")
            ex.add("exported copy", sshape.params * BYTES.get(recipe.export.dtype, 2),
                   f"× {BYTES.get(recipe.export.dtype, 2)} bytes ({recipe.export.dtype})")
        stages.append(ex)

    # -- time ---------------------------------------------------------------------------------------------
    times = {}
    if "teach" in tokens and tshape is not None and tokens["teach"]["prompts"]:
        tk = tokens["teach"]
        if rate:
            s = tk["prompt_tokens"] / rate + (tk["generated_tokens"] / gen_rate if gen_rate else 0)
            how = f"{tk['prompt_tokens']:.3g} prompt tokens ÷ {rate:g}/s" + (
                f" + {tk['generated_tokens']:.3g} generated ÷ {gen_rate:g}/s" if gen_rate else "")
        else:
            flops = 2 * tshape.params * (tk["prompt_tokens"] + tk["generated_tokens"])
            s = flops / (tflops * 1e12)
            how = f"2 × {tshape.params:.3g} params × {tk['prompt_tokens'] + tk['generated_tokens']:.3g} tokens ÷ {tflops:g} TFLOP/s"
        times["teach"] = (s, how)
    for stage in stages:
        if stage.name in ("distill", "refine") and getattr(stage, "flops", None):
            times[stage.name] = (stage.flops / (tflops * 1e12), stage.flops_how + f" ÷ {tflops:g} TFLOP/s")
    outputs = _outputs(recipe, resolved)
    return {"models": resolved, "problems": problems, "stages": stages, "tokens": tokens, "times": times,
            "outputs": outputs, "queries": n_queries, "device": dev, "gpu": gpu}


def _training_stage(name: str, recipe: Recipe, resolved, dev: str, runtime: float, gpu_gib: float) -> Stage:
    s = recipe.distill
    shape = next((r["shape"] for r in resolved if r["key"] == "distill.model"), None)
    st = Stage(name, dev)
    if runtime:
        st.add("python runtime", runtime, f"measured peak RSS of the imports ({RUNTIME_GIB} GiB)")
    if shape is None:
        st.add("student weights", None, "size unknown")
        return st
    dtype = s.dtype
    b = BYTES.get(dtype, 2)
    st.add("student weights", shape.params * b, f"{shape.params / 1e9:.3f}B × {b} bytes ({dtype})")
    tr = (recipe.refine.training if name == "refine" else s.training)
    full = name == "distill" and getattr(s, "finetune", "lora") == "full"
    if full:
        trainable = shape.params - shape.embedding  # embeddings frozen
        st.add("gradients + Adam moments", trainable * (b + 8),
               f"{trainable / 1e9:.3f}B trainable (embeddings frozen) × ({b} + 8) bytes")
        flops_per_token = 6 * shape.params
    else:
        r = int((recipe.refine.lora if name == "refine" else s.lora).get("r", 16))
        lp = shape.lora_params(r)
        st.add(f"LoRA r{r} (+ grads, Adam)", None if lp is None else lp * 16,
               "?" if lp is None else f"{lp / 1e6:.1f}M parameters × 16 bytes")
        flops_per_token = 4 * shape.params
        if name == "refine":
            st.notes.append("the reference model is the base without the adapter: no second copy")
    # tokens per micro-batch
    batch = int(tr.get("per_device_train_batch_size", 2 if name == "distill" else 8))
    doc = int(getattr(s, "max_doc_tokens", 256))
    if name == "refine" and recipe.refine.method == "grpo":
        seq = PROMPT_OVERHEAD + doc + int(tr.get("max_completion_length", 128))
        T, kept = batch * seq, batch * seq
    elif name == "refine":
        seq = int(tr.get("max_length", PROMPT_OVERHEAD + doc + 2))
        T, kept = 2 * batch * min(seq, PROMPT_OVERHEAD + doc + 2), 2 * batch * min(seq, PROMPT_OVERHEAD + doc + 2)
    elif s.kind == "reasoning":
        seq = PROMPT_OVERHEAD + doc + int(getattr(s, "max_new_tokens", 192))
        T, kept = batch * seq, batch * seq
    else:
        group = int(getattr(s, "group_size", 8))
        seq = PROMPT_OVERHEAD + doc
        T, kept = batch * group * seq, batch * group
    if shape.layers is not None:
        h, L = shape.hidden, shape.layers
        full_act = L * T * h * 17 * b
        ckpt_act = L * T * h * b + T * h * 17 * b
        logits = kept * shape.vocab * 4
        on = bool(tr.get("gradient_checkpointing") or tr.get("activation_checkpointing"))
        st.add("activations" + (" (checkpointed)" if on else ""), (ckpt_act if on else full_act) + logits,
               f"T={T} tokens a micro-batch; {_gib(full_act)} GiB without checkpointing, {_gib(ckpt_act)} GiB with; "
               f"+ logits {kept} × {shape.vocab} × 4")
    else:
        st.add("activations", None, "no layer shapes at hand")
    if name == "refine" and tr.get("use_vllm"):
        frac = float(tr.get("vllm_gpu_memory_utilization", 0.3))
        st.add("trl's colocated vLLM engine", frac * gpu_gib * GIB,
               f"{frac} × {gpu_gib:g} GiB (vllm_gpu_memory_utilization): its weights copy and KV cache")
    by_epochs = "num_train_epochs" in tr and tr.get("max_steps", -1) in (None, -1)
    steps = 0 if by_epochs else int(tr.get("max_steps", 50))
    accum = int(tr.get("gradient_accumulation_steps", 1))
    gbs = getattr(s, "global_batch_size", None) if name == "distill" else None
    if gbs:
        accum = max(1, gbs // batch)
    if steps <= 0 and tr.get("num_train_epochs"):
        queries = recipe.data.queries or 0
        examples = queries * (recipe.data.k if s.kind == "reasoning" else 1)  # a group per query, or a rationale per doc
        steps = math.ceil(examples / (batch * accum)) * float(tr["num_train_epochs"]) if examples else 0
        st.notes.append(f"steps: {steps:.0f} = {examples} examples ÷ ({batch} × {accum}) × {tr['num_train_epochs']} "
                        "epochs" if steps else "steps: set by num_train_epochs over the taught examples")
    if steps > 0:
        st.flops = steps * accum * T * flops_per_token  # type: ignore[attr-defined]
        st.flops_how = (f"{steps} steps × {accum} accumulation × {T} tokens × {'6' if full else '4'} × "  # type: ignore[attr-defined]
                        f"{shape.params:.3g} params")
    return st


def _outputs(recipe: Recipe, resolved) -> list[tuple[str, str]]:
    root = f"runs/{recipe.name}"
    out = [(f"{root}/teach/teacher.jsonl", "one record per query (ranking, scores, rationales, cost)")]
    if recipe.distill is not None:
        sshape = next((r["shape"] for r in resolved if r["key"] == "distill.model"), None)
        size = f"~{_gib(sshape.params * BYTES.get(recipe.distill.dtype, 2))} GiB" if sshape else "?"
        out += [(f"{root}/distill/adapter/", "the trained adapter (or weights) and training logs"),
                (f"{root}/distill/merged/", f"the merged student ({size})"),
                (f"{root}/distill/checkpoint-*/", "resumable checkpoints (weights + optimizer state)")]
    if recipe.refine is not None:
        out += [(f"{root}/refine/adapter/, merged/", "the refined student")]
    if recipe.eval is not None:
        out += [(f"{root}/eval/<dataset>/<row>.json, .trec", "per-row metrics, costs and runs"),
                (f"{root}/report.md", "the report table, plots beside it")]
    if recipe.export is not None and recipe.export.enabled and recipe.distill is not None:
        out += [(f"{root}/export/model/", f"the student for vLLM serving ({recipe.export.dtype})")]
    return out


def format_plan(plan: dict, recipe: Recipe) -> str:
    lines = [f"plan for '{recipe.name}' — estimates (arithmetic beside each figure; llmrank.plan explains it)", ""]
    lines.append("models:")
    for r in plan["models"]:
        sh = r["shape"]
        size = f"{sh.params / 1e9:.3g}B parameters from {sh.source}" if sh else "size unknown"
        lines.append(f"  {r['key']}: {r['model']} [{r['backend']}] — {size}")
        if r["status"] not in ("alias", "local", "hub"):
            lines.append(f"    UNRESOLVED: {r['status']}")
    lines.append("")
    lines.append(f"memory, {plan['device']}, GiB:")
    for st in plan["stages"]:
        lines.append(f"  {st.name}: {_gib(st.total)} GiB")
        for what, v, how in st.parts:
            lines.append(f"    {what}: {_gib(v)}  ({how})")
        for n in st.notes:
            lines.append(f"    note: {n}")
    if not plan["gpu"]:
        peak = max((st.total or 0) for st in plan["stages"])
        lines.append(f"  peak of the run: {_gib(peak)} GiB (one process runs every stage: the largest of them)")
    lines.append("")
    tk = plan["tokens"].get("teach")
    lines.append(f"teacher prompts ({plan['queries']} training queries):")
    if tk:
        lines.append(f"  {tk['prompts']:,.0f} prompts, {tk['prompt_tokens']:,.0f} prompt tokens, "
                     f"{tk['generated_tokens']:,.0f} generated tokens  ({tk['arithmetic']})")
    else:
        lines.append("  none through an LLM")
    lines.append("")
    lines.append("time:")
    for stage, (s, how) in plan["times"].items():
        lines.append(f"  {stage}: {_hms(s)}  ({how})")
    if not plan["times"]:
        lines.append("  (no model shapes at hand)")
    lines.append("")
    lines.append("outputs:")
    for path, what in plan["outputs"]:
        lines.append(f"  {path}  {what}")
    return "\n".join(lines)


def _hms(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


__all__ = ["KNOWN", "Shape", "build_plan", "format_plan", "model_shape", "teacher_prompts"]
