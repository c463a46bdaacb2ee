"""The backend protocol: how prompt strings go through a model.

Every backend answers two questions about fully rendered prompts (built by :mod:`llmrank.prompts`):

- :meth:`Backend.label_logprobs` — for each prompt, the log-probability mass that the next token puts on
  each of K labels (``["yes", "no"]``, ``["0", "1", "2", "3"]``, ``["A", "B"]``); ``score_yes_no`` is
  the two-label case normalised over the pair, P(yes) = p_yes / (p_yes + p_no);
- :meth:`Backend.generate` — generated texts (greedy by default), with token counts.

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

    def __init__(self, model: str):
        self.model = model
        self.tokenizer = None
        self.stats: Counter = Counter()

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

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, len(text) // 4)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        """Free what the backend holds (servers, engines)."""


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
