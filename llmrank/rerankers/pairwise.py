"""Pairwise Ranking Prompting (PRP; Qin et al. 2023, "Large Language Models are Effective Text Rankers with
Pairwise Ranking Prompting").

The model is asked which of two passages is more relevant. Every comparison is asked in BOTH orders and
averaged, which cancels the model's preference for a position::

    pref(i > j) = (P_A(i, j) + P_B(j, i)) / 2

where ``P_A(x, y)`` is the probability of answering "A" when ``x`` is shown as passage A and ``y`` as B,
normalised over the two answers (``P_B = 1 - P_A``). It is read from the next-token probabilities of the
two answer labels (``use_logits=True``), or from the first A/B letter of a greedy generation (``P_A`` is
1 or 0; an answer with no letter counts 0.5 and is counted in ``cost["unparseable"]``). By construction
``pref(i > j) + pref(j > i) == 1`` exactly (only ``pref`` of ``i < j`` is stored).

Strategies (``strategy=``):

- ``allpair``: all n(n-1)/2 comparisons in one batched backend call; score = expected wins
  ``sum_j pref(i > j)``;
- ``heapsort``: top-``top_k`` by heapsort with the comparator ``pref(i > j) > 0.5`` (ties keep the input
  order), O(n log n) comparisons;
- ``bubble``: ``top_k`` bubble passes sliding from the bottom of the list up, O(k n) comparisons.

Comparison counts of ``heapsort`` (top 10 of 20; measured by simulation, ``tests/test_heap_counts.py``): with
a consistent judge it asks ~73 distinct pairs, fewer than the ~84 comparisons of a textbook heapsort that asks
again what it already knows. With a judge whose two orders always disagree (a model that always answers "A")
every comparison is a tie, which goes to the earlier first-stage position: the element moved to the root
after each extraction then sinks to the bottom, ~68 pairs, and the result is the first-stage order. An
implementation that reads a tie as "not better" never moves anything and stops after 37 comparisons, but
then ranks the first-stage LAST document second; the 37 reported for such implementations on a small model
measure its position bias, not a better heap.

A pair is never asked twice within a query (``cost["comparisons"]`` counts distinct pairs, each 2 prompts;
``cost["cache_hits"]`` the comparisons answered from the cache). ``ranking.extra`` reports position bias:
``a_rate`` (the fraction of prompts where "A" won, 0.5 for an unbiased model) and ``inconsistent`` (the
fraction of pairs whose two orders pick different winners).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from llmrank.backends.base import Backend, GenerateRequest, GenerationParams, ScoreRequest, two_way
from llmrank.data.types import Doc, Query
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.rerankers.base import Ranking, ranking_from_order, ranking_from_scores
from llmrank.rerankers.scheduler import StepReranker, run_steps
from llmrank.rerankers.pointwise import document_texts

DEFAULT_MAX_DOC_TOKENS = 256
STRATEGIES = ("allpair", "heapsort", "bubble")


def build_pairwise_prompt(prompt: PromptTemplate, tokenizer, query: str, doc_a: str, doc_b: str) -> str:
    """The model input asking whether ``doc_a`` (shown as A) or ``doc_b`` (B) is more relevant."""
    return render_chat(tokenizer, prompt.messages(query=query, doc_a=doc_a, doc_b=doc_b))


def parse_choice(text: str, labels: list[str]) -> int | None:
    """Index in ``labels`` of the first label that stands as a word of its own in ``text`` (``"Passage B"``
    -> B), or None. Labels are matched case-sensitively (a lowercase "a" is an article, not an answer)."""
    if not text:
        return None
    alts = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    m = re.search(rf"(?<![A-Za-z0-9])({alts})(?![A-Za-z0-9])", text)
    return labels.index(m.group(1)) if m else None


def sorted_order_ranking(docs: list[Doc], top: list[int], **kw) -> Ranking:
    """``top`` (indices, best first) then every other doc in input order, with scores n, n-1, …, 1."""
    chosen = set(top)
    order = list(top) + [i for i in range(len(docs)) if i not in chosen]
    ranking = ranking_from_order([docs[i].docid for i in order])
    for key, value in kw.items():
        setattr(ranking, key, value)
    return ranking


def heap_top_k(n: int, k: int, arity: int, best_of) -> list[int]:
    """The first ``k`` of ``range(n)`` (best first) by heapsort on an ``arity``-ary max-heap.

    ``best_of(group)`` gets ``[parent, child, child, …]`` (item indices) and returns the position in
    ``group`` of the best one; the parent comes first so that a tie-breaking ``best_of`` keeps it.
    """
    def steps(group):
        return best_of(group)
        yield  # a generator that asks nothing

    return run_steps(heap_top_k_steps(n, k, arity, steps), None)


def heap_top_k_steps(n: int, k: int, arity: int, best_of):
    """:func:`heap_top_k` as steps: ``best_of(group)`` is a step generator returning the winner's position."""
    arr = list(range(n))
    k = min(k, n)

    def sift_down(i: int, size: int):
        while True:
            kids = list(range(arity * i + 1, min(arity * i + 1 + arity, size)))
            if not kids:
                return
            w = yield from best_of([arr[i]] + [arr[c] for c in kids])
            if w == 0:
                return
            c = kids[w - 1]
            arr[i], arr[c] = arr[c], arr[i]
            i = c

    if n > 1:
        for i in range((n - 2) // arity, -1, -1):
            yield from sift_down(i, n)
    top: list[int] = []
    size = n
    while len(top) < k:
        top.append(arr[0])
        size -= 1
        if len(top) == k or size == 0:
            break
        arr[0] = arr[size]
        yield from sift_down(0, size)
    return top


class _PairJudge:
    """One query's comparisons: batched prompts, the pair cache and the position-bias tallies."""

    def __init__(self, reranker: PairwiseReranker, query: str, texts: list[str]):
        self.r = reranker
        self.query = query
        self.texts = texts
        self.pref: dict[tuple[int, int], float] = {}  # (i, j), i < j -> pref(i > j)
        self.p_a: dict[tuple[int, int], float] = {}  # ordered (x, y) -> P_A with x shown as A
        self.counts: Counter = Counter()

    def ensure(self, pairs):
        """Steps: ask every pair of ``pairs`` not yet known, both orders, in one request."""
        todo = []
        for i, j in pairs:
            key = (min(i, j), max(i, j))
            if i == j:
                continue
            if key in self.pref or key in todo:
                self.counts["cache_hits"] += 1
                continue
            todo.append(key)
        if not todo:
            return
        ordered = [(i, j) for i, j in todo] + [(j, i) for i, j in todo]
        p_a = yield from self.r._p_a(self.query, [(self.texts[x], self.texts[y]) for x, y in ordered], self.counts)
        m = len(todo)
        for t, (i, j) in enumerate(todo):
            self.p_a[(i, j)] = float(p_a[t])
            self.p_a[(j, i)] = float(p_a[m + t])
            self.pref[(i, j)] = (float(p_a[t]) + (1.0 - float(p_a[m + t]))) / 2.0
        self.counts["comparisons"] += m

    def __call__(self, i: int, j: int):
        """Steps returning pref(i > j); asks the model if the pair is new."""
        if i == j:
            return 0.5
        key = (min(i, j), max(i, j))
        if key not in self.pref:
            yield from self.ensure([key])
        else:
            self.counts["cache_hits"] += 1
        p = self.pref[key]
        return p if i < j else 1.0 - p

    def better(self, i: int, j: int):
        """Steps returning whether i ranks above j: pref > 0.5, ties to the earlier input position."""
        p = yield from self(i, j)
        return p > 0.5 or (p == 0.5 and i < j)

    def bias(self) -> dict:
        if not self.p_a:
            return {"a_rate": None, "inconsistent": None}
        a_rate = sum(p > 0.5 for p in self.p_a.values()) / len(self.p_a)
        bad = 0
        for i, j in self.pref:
            s1 = np.sign(self.p_a[(i, j)] - 0.5)  # + : i won when shown as A
            s2 = np.sign(0.5 - self.p_a[(j, i)])  # + : i won when shown as B
            bad += s1 != s2
        return {"a_rate": a_rate, "inconsistent": bad / len(self.pref)}


class PairwiseReranker(StepReranker):
    """PRP with both orders per comparison; see the module docstring for the strategies."""

    method = "pairwise"

    option_bounds = {"top_k": {"ge": 1}, "max_doc_tokens": {"ge": 1}, "max_tokens": {"ge": 1}}

    def __init__(self, backend: Backend, prompt: str | PromptTemplate = "prp", strategy: str = "allpair",
                 top_k: int = 10, use_logits: bool = True, max_doc_tokens: int | None = DEFAULT_MAX_DOC_TOKENS,
                 variants: bool = True, max_tokens: int = 8):
        self.backend = backend
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        if self.prompt.method != "pairwise":
            raise ValueError(f"prompt '{self.prompt.name}' is for {self.prompt.method}, not pairwise")
        if set(self.prompt.answers) != {"a", "b"}:
            raise ValueError(f"prompt '{self.prompt.name}': a pairwise prompt's answers are {{a: ..., b: ...}}, "
                             f"got {sorted(self.prompt.answers)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown pairwise strategy '{strategy}' (one of {', '.join(STRATEGIES)})")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.strategy = strategy
        self.top_k = int(top_k)
        self.use_logits = use_logits
        self.max_doc_tokens = max_doc_tokens
        self.variants = variants
        self.max_tokens = max_tokens
        self.labels = [self.prompt.answers["a"], self.prompt.answers["b"]]

    @property
    def cache_key(self) -> dict:
        key = {"method": self.method, "model": self.backend.model, "prompt": self.prompt.key,
               "strategy": self.strategy, "use_logits": self.use_logits, "max_doc_tokens": self.max_doc_tokens,
               "variants": self.variants}
        if self.strategy != "allpair":
            key["top_k"] = self.top_k
        if not self.use_logits:
            key["max_tokens"] = self.max_tokens
        return key

    # -- reading P_A -----------------------------------------------------------------------------------
    def _p_a(self, query: str, pairs: list[tuple[str, str]], counts: Counter):
        """Steps returning P("A") normalised over the two answers, for each (doc shown as A, doc shown as B)."""
        tok = self.backend.tokenizer
        prompts = [build_pairwise_prompt(self.prompt, tok, query, a, b) for a, b in pairs]
        if self.use_logits:
            try:
                lp = yield ScoreRequest(prompts, self.labels, self.variants)
                return two_way(lp[:, 0], lp[:, 1])
            except NotImplementedError:  # a backend that only generates
                self.use_logits = False
        gens = yield GenerateRequest(prompts, GenerationParams(max_tokens=self.max_tokens))
        out = np.empty(len(prompts))
        for t, g in enumerate(gens):
            choice = parse_choice(g.text, self.labels)
            if choice is None:
                counts["unparseable"] += 1
                out[t] = 0.5
            else:
                out[t] = 1.0 if choice == 0 else 0.0
        return out

    # -- public API ------------------------------------------------------------------------------------
    def _texts(self, docs: list[Doc], counts: Counter) -> list[str]:
        return document_texts(self.backend.tokenizer, docs, self.max_doc_tokens, counts)

    def preference_matrix(self, query: Query | str, docs: list[Doc]) -> np.ndarray:
        """``P[i, j] = pref(i > j)`` for every pair (diagonal 0.5); ``P + P.T == 1`` exactly."""
        counts: Counter = Counter()
        judge = _PairJudge(self, query.text if isinstance(query, Query) else query, self._texts(docs, counts))
        n = len(docs)
        run_steps(judge.ensure([(i, j) for i in range(n) for j in range(i + 1, n)]), self.backend)
        P = np.full((n, n), 0.5)
        for (i, j), p in judge.pref.items():
            P[i, j], P[j, i] = p, 1.0 - p
        return P

    def steps(self, query: Query, docs: list[Doc], cost: Counter):
        """allpair: one request; heapsort and bubble: one comparison (two prompts) per request."""
        counts: Counter = Counter()
        judge = _PairJudge(self, query.text, self._texts(docs, counts))
        n = len(docs)
        k = min(self.top_k, n)
        if self.strategy == "allpair":
            yield from judge.ensure([(i, j) for i in range(n) for j in range(i + 1, n)])
            scores = [0.0] * n
            for (i, j), p in judge.pref.items():
                scores[i] += p
                scores[j] += 1.0 - p
            ranking = ranking_from_scores(docs, scores)
        elif self.strategy == "heapsort":
            def best_of(group: list[int]):
                best = 0
                for t in range(1, len(group)):
                    if (yield from judge.better(group[t], group[best])):
                        best = t
                return best

            ranking = sorted_order_ranking(docs, (yield from heap_top_k_steps(n, k, 2, best_of)))
        else:  # bubble: each pass carries the best remaining document up from the bottom
            order = list(range(n))
            for p in range(k):
                for pos in range(n - 1, p, -1):
                    if (yield from judge.better(order[pos], order[pos - 1])):
                        order[pos], order[pos - 1] = order[pos - 1], order[pos]
            ranking = sorted_order_ranking(docs, order[:k])
        cost = Counter({key: v for key, v in cost.items() if v})
        cost.update(judge.counts)
        cost.update(counts)
        ranking.cost = +cost
        ranking.extra = {"strategy": self.strategy, **judge.bias()}
        return ranking
