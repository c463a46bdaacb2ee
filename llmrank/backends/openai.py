"""Any OpenAI-compatible server over HTTP: a local ``vllm serve``, or a hosted API.

With a local tokenizer for the model (an alias, a local path, or ``tokenizer=``), prompts are rendered by
llmrank (:mod:`llmrank.prompts`) and sent to ``/v1/completions`` — the server sees the same string the
``hf`` backend scores. Without one (a hosted chat model), each prompt goes to ``/v1/chat/completions`` as
a user message.

Label log-probabilities: from a vLLM server, exactly, through its ``logprob_token_ids`` extension (the
full-vocabulary log-softmax at the label token ids); from any other server, from the top-``logprobs``
alternatives of the first generated token, where a label outside them is ``-inf`` and counted in
``stats['labels_missing']`` (never an error). Requests run with a
concurrency limit and are retried by llmrank's one policy (:mod:`llmrank.http`: backoff on 429, 5xx and timeouts). ``base_url`` may name
several servers of one model (a list, or comma-separated): requests are spread round-robin over them, a
retry goes to the next one, and ``concurrency`` bounds the requests open over the whole pool. The API key is read
from the environment only (``OPENAI_API_KEY``, or the variable named by ``api_key_env``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llmrank.backends.base import Backend, Generation, GenerationParams, Timer, label_variants
from llmrank.errors import LlmrankError
from llmrank.http import RetryPolicy, send

log = logging.getLogger(__name__)


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 served_model: str | None = None, tokenizer=None, logprobs: int = 20, concurrency: int = 8,
                 max_retries: int = 5, timeout: float = 120.0, backoff: float = 0.5, mode: str | None = None,
                 chunk: int = 16):
        super().__init__(model)
        import httpx

        urls = base_url or os.environ.get("OPENAI_BASE_URL") or ""
        urls = [u.strip().rstrip("/") for u in (urls.split(",") if isinstance(urls, str) else urls) if u and u.strip()]
        if not urls:
            raise LlmrankError("the openai backend needs --base-url (or OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        # several servers of one model (comma-separated): requests go round-robin, ``concurrency`` is the limit
        # over the whole pool, and a request that fails on one server is retried on the next
        self.base_urls = [u if u.endswith("/v1") else u + "/v1" for u in urls]
        self.base_url = self.base_urls[0]
        self._next_url = itertools.count()
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.served_model = served_model or model
        self.tokenizer = tokenizer if tokenizer is not None else _local_tokenizer(model)
        self.mode = mode or ("completions" if self.tokenizer is not None else "chat")
        self.logprobs, self.concurrency = logprobs, concurrency
        self.max_retries, self.backoff = max_retries, backoff
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.chunk = chunk
        # queries in flight: enough requests to keep every connection busy (the limit applies to the pool)
        self.default_in_flight = max(8, 4 * concurrency)
        self.token_ids_supported: bool | None = None  # vLLM's logprob_token_ids: unknown until tried

    # -- HTTP --------------------------------------------------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        start = next(self._next_url)  # round-robin over the pool; a retry goes to the next server

        def url_at(attempt: int) -> str:
            return f"{self.base_urls[(start + attempt) % len(self.base_urls)]}{path}"

        r = send(self.client, "POST", url_at, self.retry, json=body, stats=self.stats,
                 refused_hint="is the server running? (--base-url)")
        url = str(r.request.url)
        if r.status_code == 200:
            try:
                return r.json()
            except ValueError:
                raise LlmrankError(f"{url}: the answer is not JSON: {r.text[:200]!r}") from None
        raise LlmrankError(f"{url}: HTTP {r.status_code}: {_error_message(r)}")

    def _map(self, fn, items: list):
        if len(items) <= 1 or self.concurrency <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _complete(self, prompt: str, max_tokens: int, temperature: float, top_p: float = 1.0,
                  stop=None, logprobs: int | None = None, seed: int = 0) -> tuple[str, dict | None, dict]:
        """One request: (text, top alternatives of the first token as {token: logprob}, usage)."""
        if self.mode == "completions":
            body = {"model": self.served_model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                    "top_p": top_p, "seed": seed}
            if stop:
                body["stop"] = stop
            if logprobs:
                body["logprobs"] = logprobs
            out = self._post("/completions", body)
            choice = out["choices"][0]
            top = None
            if logprobs and choice.get("logprobs") and choice["logprobs"].get("top_logprobs"):
                top = choice["logprobs"]["top_logprobs"][0] or {}
            return choice.get("text") or "", top, out.get("usage") or {}
        body = {"model": self.served_model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        if stop:
            body["stop"] = stop
        if logprobs:
            body.update(logprobs=True, top_logprobs=logprobs)
        out = self._post("/chat/completions", body)
        choice = out["choices"][0]
        top = None
        content = (choice.get("logprobs") or {}).get("content") or []
        if logprobs and content:
            top = {alt["token"]: alt["logprob"] for alt in content[0].get("top_logprobs", [])}
        return choice["message"].get("content") or "", top, out.get("usage") or {}

    # -- protocol ----------------------------------------------------------------------------------------
    def label_logprobs(self, prompts: list[str], labels: list[str], variants: bool = True) -> np.ndarray:
        if self.mode == "completions" and self.token_ids_supported is not False:
            try:
                return self._label_logprobs_by_id(prompts, labels, variants)
            except LlmrankError as e:
                if "logprob_token_ids" not in str(e) and "extra" not in str(e).lower():
                    raise
                log.warning("server does not take logprob_token_ids; reading labels from the top-%d alternatives", self.logprobs)
                self.token_ids_supported = False
        return self._label_logprobs_top_k(prompts, labels, variants)

    def _label_logprobs_by_id(self, prompts: list[str], labels: list[str], variants: bool) -> np.ndarray:
        """vLLM's ``logprob_token_ids``: the full-vocabulary log-softmax at the label token ids, exactly."""
        from llmrank.backends.base import label_token_ids

        groups = [label_token_ids(self.tokenizer, lab, variants) for lab in labels]
        ids = [t for g in groups for t in g]
        chunks = [prompts[i : i + self.chunk] for i in range(0, len(prompts), self.chunk)]

        def one(chunk):
            body = {"model": self.served_model, "prompt": chunk, "max_tokens": 1, "temperature": 0.0, "logprobs": 1,
                    "logprob_token_ids": ids, "return_tokens_as_token_ids": True}
            return self._post("/completions", body)

        with Timer(self.stats):
            answers = self._map(one, chunks)
        out = np.full((len(prompts), len(labels)), -math.inf)
        row = 0
        for chunk, ans in zip(chunks, answers):
            self._count(ans.get("usage") or {}, calls=len(chunk))
            for choice in sorted(ans["choices"], key=lambda c: c["index"]):
                top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
                lp = {int(k.split(":", 1)[1]): v for k, v in (top[0] or {}).items() if k.startswith("token_id:")}
                for j, g in enumerate(groups):
                    vals = [lp[t] for t in g if t in lp]
                    if len(vals) < len(g):
                        self.stats["labels_missing"] += len(g) - len(vals)
                    if vals:
                        out[row + choice["index"], j] = float(np.logaddexp.reduce(vals))
            row += len(chunk)
        self.token_ids_supported = True
        return out

    def _label_logprobs_top_k(self, prompts: list[str], labels: list[str], variants: bool) -> np.ndarray:
        """Any server: labels read from the first token's top-``logprobs`` alternatives (missing = -inf, counted)."""
        forms = [set(label_variants(lab)) if variants else {lab} for lab in labels]

        def one(prompt):
            _, top, usage = self._complete(prompt, 1, 0.0, logprobs=self.logprobs)
            return top or {}, usage

        with Timer(self.stats):
            answers = self._map(one, prompts)
        out = np.full((len(prompts), len(labels)), -math.inf)
        for i, (top, usage) in enumerate(answers):
            self._count(usage)
            for j, fs in enumerate(forms):
                vals = [lp for tok, lp in top.items() if tok in fs]
                if vals:
                    out[i, j] = float(np.logaddexp.reduce(vals))
                else:
                    self.stats["labels_missing"] += 1
        return out

    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[Generation]:
        params = params or GenerationParams()

        def one(prompt):
            return self._complete(prompt, params.max_tokens, params.temperature, params.top_p, params.stop, seed=params.seed)

        with Timer(self.stats):
            answers = self._map(one, prompts)
        out = []
        for text, _, usage in answers:
            self._count(usage)
            out.append(Generation(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
        return out

    def _count(self, usage: dict, calls: int = 1) -> None:
        self.stats["calls"] += calls
        self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
        self.stats["completion_tokens"] += usage.get("completion_tokens", 0)

    def close(self) -> None:
        self.client.close()


def _error_message(r) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)[:500]
    return str(err)[:500]


def _local_tokenizer(model: str):
    """The model's tokenizer when it is an alias or a local folder (no hub lookups), else None."""
    from pathlib import Path

    try:
        from llmrank.models import REGISTRY, resolve_model

        if model in REGISTRY or Path(model).is_dir():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(resolve_model(model))
    except Exception as e:  # no tokenizer: fall back to the chat endpoint
        log.info("no local tokenizer for %s (%s); using /v1/chat/completions", model, e)
    return None
