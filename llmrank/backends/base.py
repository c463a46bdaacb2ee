"""The backend protocol: how prompt strings go through a model.

Every backend answers two questions about fully rendered prompts (built by :mod:`llmrank.prompts`):

- :meth:`Backend.label_logprobs` — for each prompt, the log-probability mass that the next token puts on
  each of K labels (``["yes", "no"]``, ``["0", "1", "2", "3"]``, ``["A", "B"]``); ``score_yes_no`` is
  the two-label case normalised over the pair, P(yes) = p_yes / (p_yes + p_no);
- :meth:`Backend.generate` — generated texts (greedy by default), with token counts.

Many queries at once: rerankers express their work as :class:`ScoreRequest` / :class:`GenerateRequest`
objects (one query's prompts that are needed next), and :meth:`Backend.run_requests` answers a whole wave of
them from many queries together, returning each request's result and its own cost (calls, prompt and
completion tokens exactly, per request; seconds and other counters shared out by prompt tokens). The default
merges requests of the same kind into one :meth:`label_logprobs` / :meth:`generate` call, so a backend that
parallelises a call (vLLM's continuous batching, the OpenAI backend's concurrent requests) sees every query's
prompts at once; the ``hf`` backend overrides it to keep prefix KV reuse per request while its batches mix
requests. ``default_in_flight`` is how many queries the scheduler keeps going for this backend.

A label is read either as every casing / leading-space variant that the tokenizer has as a single token
(``variants=True``, the zero-shot default) or as exactly one token (``variants=False``: what vLLM's
``from_2_way_softmax`` serving reads, so students are trained and scored that way).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int = 0


@dataclass
class ScoreRequest:
    """Label log-probabilities wanted for ``prompts`` (one query's next step); answered with the
    ``[len(prompts), len(labels)]`` array :meth:`Backend.label_logprobs` returns."""

    prompts: list[str]
    labels: list[str]
    variants: bool = True

    def bucket(self) -> tuple:
        return ("score", tuple(self.labels), self.variants)


@dataclass
class GenerateRequest:
    """Generations wanted for ``prompts``; answered with the list :meth:`Backend.generate` returns."""

    prompts: list[str]
    params: GenerationParams = field(default_factory=GenerationParams)

    def bucket(self) -> tuple:
        p = self.params
        return ("generate", p.max_tokens, p.temperature, p.top_p, tuple(p.stop or ()), p.seed)


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict = field(default_factory=dict)


def label_variants(label: str) -> list[str]:
    """Surface forms of a label that a model may put first: casing and a leading space."""
    forms = [label, label.lower(), label.capitalize(), label.upper()]
    forms += [" " + f for f in forms]
    return list(dict.fromkeys(forms))


def label_token_ids(tokenizer, label: str, variants: bool = True) -> list[int]:
    """Token ids standing for ``label``: each variant that encodes to ONE token (``variants=True``), or the
    single token of ``label`` itself (``variants=False``). A label with no single token is an error."""
    ids: list[int] = []
    for form in label_variants(label) if variants else [label]:
        enc = tokenizer.encode(form, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
    if not ids:
        raise ValueError(f"label {label!r} is not a single token for this tokenizer; choose another answer word")
    return ids


class Backend(ABC):
    """A model behind one small protocol. ``stats`` counts calls and tokens for cost reports."""

    name = "base"
    #: queries the scheduler keeps in flight by default (1: one query at a time, as a plain backend expects)
    default_in_flight = 1

    def __init__(self, model: str):
        self.model = model
        self.tokenizer = None
        self.stats: Counter = Counter()
        #: prompt tokens of each prompt of the last ``label_logprobs`` call, when the backend knows them
        self.last_prompt_tokens: list[int] | None = None

    @abstractmethod
    def label_logprobs(self, prompts: list[str], labels: list[str], variants: bool = True) -> np.ndarray:
        """``[len(prompts), len(labels)]``: log of the next-token probability mass of each label (over the
        whole vocabulary). Entries a backend cannot see (a label outside a server's top-k) are ``-inf``."""

    @abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[Generation]:
        """Generated continuations of each prompt."""

    def score_yes_no(self, prompts: list[str], yes: str = "yes", no: str = "no", variants: bool = True) -> np.ndarray:
        """P(yes) / (P(yes) + P(no)) per prompt: ``sigmoid(log p_yes - log p_no)``."""
        lp = self.label_logprobs(prompts, [yes, no], variants=variants)
        return two_way(lp[:, 0], lp[:, 1])

    def run_requests(self, requests: list) -> list[tuple[object, Counter]]:
        """Answer a wave of requests (from many queries): ``[(result, cost)]`` aligned with ``requests``.

        Requests of one kind and settings go through ONE :meth:`label_logprobs` / :meth:`generate` call.
        A ``NotImplementedError`` of a call (a backend that only generates) is returned as the result of
        each of its requests, for the reranker to fall back on. ``cost`` holds the backend counters that the
        request caused (see :func:`split_cost`).
        """
        out: list = [None] * len(requests)
        buckets: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            buckets.setdefault(r.bucket(), []).append(i)
        for key, idx in buckets.items():
            reqs = [requests[i] for i in idx]
            prompts = [p for r in reqs for p in r.prompts]
            before = Counter(self.stats)
            self.last_prompt_tokens = None
            try:
                if key[0] == "score":
                    res = self.label_logprobs(prompts, reqs[0].labels, variants=reqs[0].variants)
                else:
                    res = self.generate(prompts, reqs[0].params)
            except NotImplementedError as e:
                for i in idx:
                    out[i] = (e, Counter())
                continue
            delta = Counter({k: v - before.get(k, 0) for k, v in self.stats.items() if v != before.get(k, 0)})
            sizes = [len(r.prompts) for r in reqs]
            if key[0] == "score":
                tokens = self.last_prompt_tokens if self.last_prompt_tokens and len(self.last_prompt_tokens) == len(prompts) else None
                per_prompt = {"prompt_tokens": tokens} if tokens else {}
            else:
                per_prompt = {"prompt_tokens": [g.prompt_tokens for g in res],
                              "completion_tokens": [g.completion_tokens for g in res]}
            costs = split_cost(delta, sizes, per_prompt, [len(p) for p in prompts])
            start = 0
            for i, n, c in zip(idx, sizes, costs):
                out[i] = (res[start : start + n], c)
                start += n
        return out

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, len(text) // 4)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        """Free what the backend holds (servers, engines)."""


def split_cost(delta: Counter, sizes: list[int], per_prompt: dict[str, list[int]], weights: list[float]) -> list[Counter]:
    """Share one backend call's counters (``delta``) among requests of ``sizes`` prompts each (in order).

    One request gets all of it. Otherwise ``calls`` is each request's prompt count; a counter given per prompt
    (``per_prompt``: prompt/completion tokens) is summed per request when it adds up to the call's total; every
    other counter (seconds, prefix tokens saved, retries, …) is shared in proportion to the prompt tokens (or
    ``weights``, e.g. characters, when tokens are not known per prompt), integers by largest remainder so
    that the shares add up to the total.
    """
    if len(sizes) == 1:
        return [Counter({k: v for k, v in delta.items() if v})]
    bounds = np.cumsum([0] + sizes)
    tokens = per_prompt.get("prompt_tokens")
    w = np.asarray(tokens if tokens is not None and len(tokens) == bounds[-1] else weights, dtype=float)
    share = np.array([w[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    share = share / share.sum() if share.sum() > 0 else np.asarray(sizes, dtype=float) / max(1, sum(sizes))
    out = [Counter() for _ in sizes]
    for key, total in delta.items():
        if not total:
            continue
        vals = per_prompt.get(key)
        if key == "calls" and total == bounds[-1]:
            parts = list(sizes)
        elif vals is not None and len(vals) == bounds[-1] and sum(vals) == total:
            parts = [sum(vals[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        elif isinstance(total, int):
            raw = share * total
            parts = np.floor(raw).astype(int)
            for r in np.argsort(-(raw - parts), kind="stable")[: int(total - parts.sum())]:
                parts[r] += 1
            parts = [int(p) for p in parts]
        else:
            parts = [float(total * s) for s in share]
        for c, v in zip(out, parts):
            if v:
                c[key] += v
    return out


def two_way(lp_a: np.ndarray, lp_b: np.ndarray) -> np.ndarray:
    """p_a / (p_a + p_b) from log-probabilities, 0.5 where neither label was seen."""
    out = np.empty(len(lp_a), dtype=np.float64)
    for i, (a, b) in enumerate(zip(lp_a, lp_b)):
        if a == -math.inf and b == -math.inf:
            out[i] = 0.5
        else:
            out[i] = 1.0 / (1.0 + math.exp(min(700.0, b - a))) if a != -math.inf else 0.0
    return out


class Timer:
    """Adds the seconds of a ``with`` block to ``stats['seconds']``."""

    def __init__(self, stats: Counter):
        self.stats = stats

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.stats["seconds"] += time.perf_counter() - self.t0
