"""Ranking rewards for GRPO, in trl's reward signature: ``f(prompts, completions, **columns) -> list[float]``.

trl's ``GRPOTrainer`` calls every reward function with ``prompts``, ``completions`` (strings for text
prompts, ``[{"role": "assistant", "content": ...}]`` lists for chat prompts), ``completion_ids`` and every
other column of the training dataset repeated per completion (plus ``trainer_state``, ``log_extra`` and
``log_metric``). The functions here read only the columns they name and ignore the rest, so they can be
mixed freely; the dataset columns they read are:

=================  ================================================================================
column             meaning
=================  ================================================================================
``label``          pointwise: the qrels grade of the (query, document), or None where not judged
``teacher_label``  pointwise: the teacher's verdict (1/0) or grade, or None (used when ``label`` is None)
``labels``         setwise / listwise: relevance grade of each passage in the order shown ([1] / A first)
``teacher_order``  listwise: the teacher's order of the shown passages (0-based), used when ``labels`` is None
=================  ================================================================================

Answers are read STRICTLY for rewards (a model must not be paid for ``Verdict: yes no``): the answer is the
last non-empty line of the completion (or, with ``tags=True``, the one ``<answer>…</answer>`` span, with
nothing after it), and it must be exactly the expected form. The lenient parsers the rerankers use at
inference (:func:`llmrank.rerankers.rationale.parse_rationale`,
:func:`llmrank.rerankers.permutation.parse_permutation`) read the value once the form is accepted, so
training and serving agree on what an answer means.

:data:`REWARDS` is the registry (``refine.rewards[].name`` in a recipe); :func:`build_reward` binds options
and :func:`build_rewards` turns a recipe's list into ``(functions, weights)`` for ``GRPOConfig.reward_weights``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import string
from collections.abc import Callable

from llmrank.errors import LlmrankError
from llmrank.rerankers.permutation import parse_permutation
from llmrank.rerankers.rationale import ANSWER_TAG as _ANSWER_TAG
from llmrank.rerankers.rationale import answer_span, strict_verdict  # noqa: F401 - the strict reading, shared with the students

OUTPUTS = ("verdict", "grade", "setwise", "permutation")
"""The answer forms :func:`format_reward` checks."""

_SETWISE_LINE = re.compile(r"\s*(?:passage\s+)?\[?([A-Z])\]?\s*\.?\s*", re.I)
_PERMUTATION_LINE = re.compile(r"\s*\[\s*[0-9]+\s*\](?:\s*>\s*\[\s*[0-9]+\s*\])*\s*")


# -- reading completions -------------------------------------------------------------------------------

def completion_text(completion) -> str:
    """The text of one completion as trl passes it: a string, or a list of chat messages (the assistant's
    contents joined)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, list):
        parts = [m.get("content") or "" for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n".join(p if isinstance(p, str) else "" for p in parts)
    return str(completion)


def strict_setwise(text: str, n: int, tags: bool = False) -> int | None:
    """The 0-based index of the passage a setwise answer picks (``C``, ``[C]``, ``Passage C``), or None when
    the answer is not exactly one label among the first ``n``."""
    span = answer_span(text, tags)
    if span is None:
        return None
    m = _SETWISE_LINE.fullmatch(span)
    if not m:
        return None
    idx = string.ascii_uppercase.index(m.group(1).upper())
    return idx if idx < n else None


def strict_permutation(text: str, n: int, tags: bool = False) -> tuple[list[int], bool]:
    """``(order, valid)``: the 0-based order :func:`parse_permutation` reads from the answer (the input order
    when there is no answer), and whether the answer is exactly ``[i] > [j] > …`` naming each of ``1..n`` once
    (no duplicate, missing, out-of-range or truncated identifier, nothing else on the line)."""
    span = answer_span(text, tags)
    if span is None:
        return list(range(n)), False
    order, repairs = parse_permutation(span, n)
    return order, bool(_PERMUTATION_LINE.fullmatch(span)) and not repairs


def _explanation(text: str, tags: bool = False) -> str:
    """The completion without its answer: what precedes the last non-empty line, or the ``<answer>`` tag."""
    text = (text or "").strip()
    if tags:
        m = list(_ANSWER_TAG.finditer(text))
        return text[: m[-1].start()].strip() if m else text
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines[:-1]).strip()


def _column(columns: dict, name: str, n: int) -> list:
    values = columns.get(name)
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise LlmrankError(f"reward column '{name}' has {len(values)} values for {n} completions")
    return values


def _ndcg(order: list[int], gains: list[float], k: int = 10) -> float:
    """nDCG@k of ``order`` (indices into ``gains``, best first), as trec_eval computes it: gain = grade,
    discount log2(rank + 1), ideal = the grades sorted; 0 when no grade is positive."""
    dcg = sum(gains[i] / math.log2(r + 2) for r, i in enumerate(order[:k]) if gains[i] > 0)
    ideal = sorted((g for g in gains if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


# -- rewards -------------------------------------------------------------------------------------------

def format_reward(prompts, completions, output: str = "verdict", tags: bool = False, max_grade: int = 3,
                  **columns) -> list[float]:
    """Format reward (DeepSeek-R1's rule-based format reward, as used by InteRank, Rank-R1, REARANK and
    ReasonRank): 1.0 when the completion ends in an answer of the expected form, else 0.0.

    ``output``: ``verdict`` (last line exactly ``Verdict: yes|no``), ``grade`` (``Score: g`` with g in
    0..max_grade), ``setwise`` (one passage label among those shown; needs the ``labels`` column for their
    number), ``permutation`` (``[i] > [j] > …`` naming every shown passage once; needs ``labels`` or
    ``teacher_order``). ``tags=True`` reads the answer from a single trailing ``<answer>…</answer>``.
    """
    if output not in OUTPUTS:
        raise LlmrankError(f"format reward: unknown output '{output}' (one of {', '.join(OUTPUTS)})")
    n = len(completions)
    labels, torder = _column(columns, "labels", n), _column(columns, "teacher_order", n)
    out = []
    for i, c in enumerate(completions):
        text = completion_text(c)
        if output in ("verdict", "grade"):
            ok = strict_verdict(text, graded=output == "grade", max_grade=max_grade, tags=tags) is not None
        else:
            size = len(labels[i] if labels[i] is not None else (torder[i] or []))
            if output == "setwise":
                ok = strict_setwise(text, size, tags) is not None
            else:
                ok = size > 0 and strict_permutation(text, size, tags)[1]
        out.append(1.0 if ok else 0.0)
    return out


def relevance_reward(prompts, completions, graded: bool = False, min_grade: float = 1.0, max_grade: int = 3,
                     tags: bool = False, **columns) -> list[float]:
    """Relevance reward of a reasoning pointwise student (InteRank: Samarinas & Zamani 2025, "Distillation
    and Refinement of Reasoning in Small Language Models for Document Re-ranking").

    The target is the ``label`` column (qrels grade) where it is not None, else ``teacher_label``; a
    completion with neither gets None (trl ignores it). Binary (``graded=False``): the strict
    ``Verdict: yes|no`` scores 1.0 when it equals ``target >= min_grade``, else 0.0. Graded
    (``graded=True``): the strict ``Score: g`` scores ``1 - |g - target| / max_grade``. An answer that
    cannot be read strictly scores 0.0.
    """
    n = len(completions)
    label, teacher = _column(columns, "label", n), _column(columns, "teacher_label", n)
    out: list[float | None] = []
    for i, c in enumerate(completions):
        target = label[i] if label[i] is not None else teacher[i]
        if target is None or (isinstance(target, float) and math.isnan(target)):
            out.append(None)
            continue
        got = strict_verdict(completion_text(c), graded=graded, max_grade=max_grade, tags=tags)
        if got is None:
            out.append(0.0)
        elif graded:
            out.append(1.0 - abs(got - float(target)) / max_grade)
        else:
            out.append(1.0 if bool(got) == (float(target) >= min_grade) else 0.0)
    return out


def setwise_reward(prompts, completions, min_grade: float = 1.0, tags: bool = True, **columns) -> list[float]:
    """Setwise pick reward (Rank-R1: Zhuang et al. 2025, "Rank-R1: Enhancing Reasoning in LLM-based
    Document Rerankers via Reinforcement Learning"): 1.0 when the completion's answer is exactly one passage
    label and that passage's grade in ``labels`` is at least ``min_grade``, else 0.0."""
    n = len(completions)
    labels = _column(columns, "labels", n)
    out = []
    for i, c in enumerate(completions):
        grades = labels[i]
        if grades is None:
            raise LlmrankError("setwise reward needs the 'labels' column (relevance of each passage shown)")
        pick = strict_setwise(completion_text(c), len(grades), tags)
        out.append(1.0 if pick is not None and float(grades[pick]) >= min_grade else 0.0)
    return out


def listwise_ndcg_reward(prompts, completions, k: int = 10, penalty: float = 1.0, gain_over_input: bool = False,
                         tags: bool = False, **columns) -> list[float]:
    """Listwise nDCG@k reward (REARANK: Zhang et al. 2025, "REARANK: Reasoning Re-ranking Agent via
    Reinforcement Learning"; ReasonRank: Liu et al. 2025, "ReasonRank: Empowering Passage Ranking with Strong
    Reasoning Ability").

    The answer ``[i] > [j] > …`` (1-based ids of the passages in the order shown) is scored by nDCG@k against
    the grades in ``labels``, or, when ``labels`` is None, against the teacher's order in ``teacher_order``
    (gain ``n - rank`` for the teacher's rank, so the teacher's own order scores 1.0). An invalid permutation
    (see :func:`strict_permutation`) scores the nDCG@k of the order :func:`parse_permutation` repairs it to,
    minus ``penalty``. ``gain_over_input=True`` subtracts the nDCG@k of the input order (REARANK's relative
    reward: only improving on the order shown earns a positive reward).
    """
    n = len(completions)
    labels, torder = _column(columns, "labels", n), _column(columns, "teacher_order", n)
    out = []
    for i, c in enumerate(completions):
        if labels[i] is not None:
            gains = [float(g) for g in labels[i]]
        elif torder[i] is not None:
            m = len(torder[i])
            gains = [0.0] * m
            for rank, idx in enumerate(torder[i]):
                gains[int(idx)] = float(m - rank)
        else:
            raise LlmrankError("listwise reward needs the 'labels' or the 'teacher_order' column")
        order, valid = strict_permutation(completion_text(c), len(gains), tags)
        r = _ndcg(order, gains, k)
        if gain_over_input:
            r -= _ndcg(list(range(len(gains))), gains, k)
        out.append(r if valid else r - penalty)
    return out


def length_reward(prompts, completions, min_words: int = 10, max_words: int = 60, tags: bool = False,
                  **columns) -> list[float]:
    """Length control of explanations (the overlong-reasoning penalty of DAPO: Yu et al. 2025, "DAPO: An
    Open-Source LLM Reinforcement Learning System at Scale", applied to the explanation only): 1.0 when the
    explanation (the completion without its answer line or ``<answer>`` tag) has ``min_words`` to
    ``max_words`` words; below, ``words / min_words``; above, ``max(0, 1 - (words - max_words) / max_words)``
    (0 at twice the budget)."""
    if not 0 <= min_words <= max_words or max_words <= 0:
        raise LlmrankError(f"length reward: need 0 <= min_words <= max_words, max_words > 0 (got {min_words}, {max_words})")
    out = []
    for c in completions:
        words = len(_explanation(completion_text(c), tags).split())
        if words < min_words:
            out.append(words / min_words)
        elif words <= max_words:
            out.append(1.0)
        else:
            out.append(max(0.0, 1.0 - (words - max_words) / max_words))
    return out


REWARDS: dict[str, Callable] = {
    "format": format_reward,
    "relevance": relevance_reward,
    "setwise": setwise_reward,
    "listwise_ndcg": listwise_ndcg_reward,
    "length": length_reward,
}
"""Reward name (``refine.rewards[].name``) -> function; add one with :func:`register_reward`."""


def register_reward(name: str, fn: Callable) -> None:
    """Register a reward function (trl's signature, ``f(prompts, completions, **columns) -> list[float]``)
    under ``name``; its keyword parameters with defaults are its options (``refine.rewards[].options``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise LlmrankError(f"register_reward: a reward name is a name such as 'relevance' (got {name!r})")
    if not callable(fn):
        raise LlmrankError(f"register_reward({name!r}): {fn!r} is not a function")
    REWARDS[name] = fn

OUTPUT_OF = {"relevance": "verdict", "setwise": "setwise", "listwise_ndcg": "permutation"}
"""The answer form each task reward reads (what a ``format`` reward next to it should check)."""


def reward_options(name: str) -> set[str]:
    """The option names a reward takes (its keyword parameters)."""
    import inspect

    fn = get_reward(name)
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY or (p.default is not inspect.Parameter.empty)}


def get_reward(name: str, where: str = "reward") -> Callable:
    """The registered reward function ``name``; an unknown name is an error with "did you mean"."""
    if name not in REWARDS:
        close = difflib.get_close_matches(str(name), list(REWARDS), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LlmrankError(f"{where}: unknown reward '{name}'{hint} (rewards: {', '.join(REWARDS)})")
    return REWARDS[name]


def build_reward(name: str, where: str = "reward", **options) -> Callable:
    """``REWARDS[name]`` with ``options`` bound (an unknown option is an error naming the valid ones). The
    result keeps the reward's name, which trl logs as ``rewards/<name>/mean``."""
    fn = get_reward(name, where)
    allowed = reward_options(name)
    bad = sorted(set(options) - allowed)
    if bad:
        close = difflib.get_close_matches(bad[0], sorted(allowed), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LlmrankError(f"{where}: reward '{name}' has no option '{bad[0]}'{hint} (options: {', '.join(sorted(allowed))})")
    from llmrank.config.options import check_options, signature_options

    specs, _ = signature_options(fn)
    problems = check_options([sp for sp in specs if sp.name in allowed], options, f"reward '{name}'")
    if problems:
        raise LlmrankError(f"{where}: " + "; ".join(f"option '{k[0]}': {m}" if k else m for k, m in problems))

    @functools.wraps(fn)
    def bound(prompts, completions, **columns):
        return fn(prompts, completions, **{**columns, **options})

    bound.__name__ = name
    return bound


def build_rewards(specs: list, where: str = "refine.rewards") -> tuple[list[Callable], list[float]]:
    """``(functions, weights)`` from ``[{"name": ..., "weight": 1.0, "options": {...}}, ...]``; an item may also
    be a reward function itself (trl's signature; weight 1) or ``{"function": f, "weight": w}``."""
    if not specs:
        raise LlmrankError(f"{where}: no rewards given (rewards: {', '.join(REWARDS)})")
    funcs, weights = [], []
    for i, spec in enumerate(specs):
        if callable(spec):
            spec = {"function": spec}
        w = float(spec.get("weight", 1.0))
        if "function" in spec:
            funcs.append(spec["function"])
            weights.append(w)
            continue
        if not math.isfinite(w):
            raise LlmrankError(f"{where}[{i}].weight: must be a finite number, got {w}")
        funcs.append(build_reward(spec["name"], f"{where}[{i}]", **(spec.get("options") or {})))
        weights.append(w)
    return funcs, weights
