"""vLLM's offline engine (``vllm.LLM``) in this process: the fast path for scoring and generation.

Label log-probabilities are exact: ``SamplingParams(max_tokens=1, logprob_token_ids=[…])`` returns the
full-vocabulary log-softmax of the next token at the label ids (raw logprobs, before any sampling
transform), so P(yes) matches the ``hf`` backend to float precision. Prompts go in as token ids encoded by
the model's own tokenizer exactly as the ``hf`` backend encodes them (``add_special_tokens=False``).

vLLM is an optional dependency that usually lives in its own virtualenv (``make vllm`` creates
``.venv-vllm`` with llmrank and its dependencies; run llmrank from there: ``.venv-vllm/bin/python -m llmrank
run …`` or ``.venv-vllm/bin/llmrank run …``); on a GPU machine ``pip install 'llmrank[vllm]'`` puts vLLM in the
same environment. The vLLM versions llmrank was tested with are :data:`SUPPORTED_VLLM`; another version is
named at import (set ``LLMRANK_ANY_VLLM=1`` to try it anyway). A script that builds
this backend should have an ``if __name__ == "__main__":`` guard (vLLM may start worker processes). On a
CPU host ``VLLM_CPU_KVCACHE_SPACE`` (GiB) defaults to 1 — without it vLLM sizes its cache from the NUMA
node's memory and can refuse to start — the engine runs eagerly (no graph capture), and it runs in this
process with OMP threads on every core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` while the engine is built, unless set): on a 2-core box that starts in
~18 s instead of ~50 s and scores ~20% faster than the default engine-core process.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import time

import numpy as np

from collections import Counter

from llmrank.backends.base import Backend, Generation, GenerationParams, ScoreRequest, Timer, label_token_ids, split_cost
from llmrank.backends.dtype import canonical
from llmrank.errors import LlmrankError

MAX_LOGPROB_TOKEN_IDS = 128


def no_gpu() -> bool:
    """No NVIDIA device on this machine: vLLM runs its CPU build."""
    return not glob.glob("/dev/nvidia[0-9]*")


def _import_vllm():
    cpu = no_gpu()
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        import vllm
    except ImportError as e:
        raise LlmrankError(
            f"vLLM is not installed for this python ({e}); on a GPU machine `pip install 'llmrank[vllm]'`; on a CPU "
            "`make vllm` creates .venv-vllm with the CPU build — run llmrank from it (.venv-vllm/bin/python -m "
            "llmrank run …), or use --backend hf, or serve the model (`llmrank serve`) and use --backend http://…") from None
    check_vllm_version(getattr(vllm, "__version__", "unknown"))
    guard_llvmlite()
    return vllm, cpu


def guard_llvmlite() -> None:
    """Let vLLM's CPU engine start in a process that has imported numba (bm25s imports it for BM25).

    At start the CPU platform swaps Triton kernels for C++ ones (``vllm/triton_utils/dispatcher.py``,
    ``_rebind_kernels``) and scans every loaded module's globals with ``vars(value).get("kernel")``.
    llvmlite's ``llvmlite.binding.ffi.lib`` is a ``__slots__`` object whose ``__getattr__`` wraps *any* missing
    name as a C function, so its ``__dict__`` is a ``_lib_fn_wrapper`` and the scan stops with
    ``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'`` (measured, vllm-cpu 0.32.0 with
    llvmlite 0.47). The wrapper looks names up in its function table first: an empty ``__dict__`` entry there
    gives the scan an empty mapping and changes nothing else. A separate ``vllm serve`` process never imports
    numba and needs none of this."""
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    table = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})


SUPPORTED_VLLM = ("0.32", "0.33")
"""``[lowest, above highest)`` release of vLLM llmrank's vLLM backend is tested with (the ``vllm`` extra pins the same
range): 0.32.0, the CPU build ``make vllm`` installs, runs every vllm-marked test."""


def check_vllm_version(version: str) -> None:
    """A vLLM outside :data:`SUPPORTED_VLLM` is an error naming both versions (``LLMRANK_ANY_VLLM=1`` lets it run):
    the backend reads the engine's label log-probabilities through ``SamplingParams(logprob_token_ids=…)`` and
    its internals (engine shutdown), which move between vLLM releases."""
    from packaging.version import InvalidVersion, Version

    lo, hi = SUPPORTED_VLLM
    try:
        ok = Version(lo) <= Version(Version(version).base_version) < Version(hi)
    except InvalidVersion:
        ok = False
    if not ok and os.environ.get("LLMRANK_ANY_VLLM", "") not in ("1", "true", "yes"):
        raise LlmrankError(f"vLLM {version} is installed; llmrank supports vLLM >={lo},<{hi} (pip install "
                           f"'llmrank[vllm]' installs one; set LLMRANK_ANY_VLLM=1 to try {version} anyway)")


CPU_IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


@contextlib.contextmanager
def _env_defaults(values: dict):
    """Set environment variables that are not set, for the ``with`` block only (vLLM reads them while the
    engine is built; leaving them would leak into servers this process starts later)."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class VLLMBackend(Backend):
    name = "vllm"
    dtype_reason: str | None = None
    # the engine batches continuously: the more prompts a wave holds, the fuller its batches
    default_in_flight = 256

    def __init__(self, model: str, dtype: str = "float32", max_model_len: int | None = None,
                 enforce_eager: bool | None = None, tokenizer=None, seed: int = 0, **llm_options):
        super().__init__(model)
        vllm, cpu = _import_vllm()
        from transformers import AutoTokenizer

        from llmrank.models import resolve_model

        self.path = resolve_model(model)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.path)
        if dtype == "auto":  # bf16 where the hardware computes it natively (vLLM's own "auto" follows the checkpoint)
            from llmrank.backends.dtype import auto_dtype

            dtype, self.dtype_reason = auto_dtype("cpu" if cpu else "cuda")
        dtype = canonical(dtype)
        self.dtype = dtype
        kwargs = dict(model=self.path, tokenizer=self.path, dtype=dtype, seed=seed,
                      enforce_eager=cpu if enforce_eager is None else enforce_eager)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_options)
        t0 = time.perf_counter()
        # On CPU the engine runs in this process with OMP on every core: nothing else competes for the cores
        # while it computes (the multiprocess default keeps one core for the engine-core process), it starts
        # in about a third of the time, and no worker processes are spawned. Set either variable to override.
        with _env_defaults(CPU_IN_PROCESS if cpu else {}):
            self.llm = vllm.LLM(**kwargs)
        self.startup_seconds = time.perf_counter() - t0
        self._vllm = vllm
        self.max_model_len = self.llm.model_config.max_model_len

    def _prompts(self, prompts: list[str]):
        from vllm.inputs import TokensPrompt

        ids = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        too_long = [i for i, s in enumerate(ids) if len(s) >= self.max_model_len]
        if too_long:
            i = too_long[0]
            raise LlmrankError(f"prompt {i} has {len(ids[i])} tokens, more than the engine's max_model_len "
                               f"{self.max_model_len} allows; shorten the documents (max_doc_tokens)")
        return [TokensPrompt(prompt_token_ids=s) for s in ids], ids

    def _score_params(self, labels: list[str], variants: bool):
        groups = [label_token_ids(self.tokenizer, lab, variants) for lab in labels]
        flat = list(dict.fromkeys(t for g in groups for t in g))
        if len(flat) > MAX_LOGPROB_TOKEN_IDS:
            raise LlmrankError(f"{len(flat)} label token ids; vLLM returns at most {MAX_LOGPROB_TOKEN_IDS}")
        return groups, self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=flat)

    def _read_labels(self, res, groups) -> np.ndarray:
        row = np.full(len(groups), -math.inf)
        lp = res.outputs[0].logprobs[0]
        for j, g in enumerate(groups):
            vals = [lp[t].logprob for t in g if t in lp]
            if len(vals) < len(g):
                self.stats["labels_missing"] += len(g) - len(vals)
            if vals:
                row[j] = float(np.logaddexp.reduce(vals))
        return row

    def _gen_params(self, params: GenerationParams):
        return self._vllm.SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature,
                                         top_p=params.top_p if params.temperature > 0 else 1.0,
                                         stop=params.stop or None, seed=params.seed)

    def label_logprobs(self, prompts: list[str], labels: list[str], variants: bool = True) -> np.ndarray:
        groups, params = self._score_params(labels, variants)
        out = np.full((len(prompts), len(labels)), -math.inf)
        if not prompts:
            return out
        inputs, ids = self._prompts(prompts)
        with Timer(self.stats):
            results = self.llm.generate(inputs, params, use_tqdm=False)
        for i, res in enumerate(results):
            out[i] = self._read_labels(res, groups)
        self.stats["calls"] += len(prompts)
        self.stats["prompt_tokens"] += sum(len(s) for s in ids)
        self.last_prompt_tokens = [len(s) for s in ids]
        return out

    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[Generation]:
        params = params or GenerationParams()
        if not prompts:
            return []
        inputs, ids = self._prompts(prompts)
        with Timer(self.stats):
            results = self.llm.generate(inputs, self._gen_params(params), use_tqdm=False)
        return [self._generation(res, prompt_ids) for res, prompt_ids in zip(results, ids)]

    def _generation(self, res, prompt_ids) -> Generation:
        c = res.outputs[0]
        self.stats["calls"] += 1
        self.stats["prompt_tokens"] += len(prompt_ids)
        self.stats["completion_tokens"] += len(c.token_ids)
        return Generation(c.text, len(prompt_ids), len(c.token_ids), {"finish_reason": c.finish_reason})

    def run_requests(self, requests: list) -> list[tuple[object, Counter]]:
        """The whole wave (scoring and generation requests of every query) in ONE engine call, each prompt
        with its own sampling parameters, so continuous batching sees every prompt at once."""
        prompts, params, owner, readers = [], [], [], []
        for i, r in enumerate(requests):
            if isinstance(r, ScoreRequest):
                groups, sp = self._score_params(r.labels, r.variants)
                readers.append(groups)
            else:
                sp = self._gen_params(r.params)
                readers.append(None)
            prompts += r.prompts
            params += [sp] * len(r.prompts)
            owner += [i] * len(r.prompts)
        if not prompts:
            return [([] if readers[i] is None else np.zeros((0, 0)), Counter()) for i in range(len(requests))]
        inputs, ids = self._prompts(prompts)
        before = Counter(self.stats)
        with Timer(self.stats):
            results = self.llm.generate(inputs, params, use_tqdm=False)
        answers: list[list] = [[] for _ in requests]
        tokens = [len(s) for s in ids]
        completion = []
        for res, prompt_ids, i in zip(results, ids, owner):
            if readers[i] is None:
                g = self._generation(res, prompt_ids)
                completion.append(g.completion_tokens)
                answers[i].append(g)
            else:
                answers[i].append(self._read_labels(res, readers[i]))
                self.stats["calls"] += 1
                self.stats["prompt_tokens"] += len(prompt_ids)
                completion.append(0)
        delta = Counter({k: v - before.get(k, 0) for k, v in self.stats.items() if v != before.get(k, 0)})
        sizes = [len(r.prompts) for r in requests]
        costs = split_cost(delta, sizes, {"prompt_tokens": tokens, "completion_tokens": completion}, tokens)
        return [(a if readers[i] is None else np.array(a).reshape(len(a), -1), c)
                for i, (a, c) in enumerate(zip(answers, costs))]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # older/newer vLLM: dropping the engine is enough
            pass
        del llm
