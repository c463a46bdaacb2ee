"""Whole documents as passages: windowed scoring (MaxP / FirstP / SumP / mean of the top-k) and the IDCM
cascade, around any reranker that scores documents one by one (a pointwise teacher, a student, ``dense``).

Every ranking method cuts a document at ``max_doc_tokens`` from its head. :class:`PassageReranker` instead
cuts each document into windows of ``tokens`` tokens every ``stride`` tokens (the scorer's own tokenizer,
so a window is exactly what the scorer reads), has the scorer score the windows as if they were documents,
and gives each document the aggregate of its windows' scores:

- ``max``   MaxP, the best window (Dai & Callan 2019, "Deeper Text Understanding for IR with Contextual
            Neural Language Modeling");
- ``first`` FirstP, the first window only (only that window is scored: head truncation at ``tokens``);
- ``sum``   SumP, the sum over windows;
- ``mean_top_k`` the mean of the ``k`` best windows.

The IDCM cascade (Hofstätter et al. 2021, "Intra-Document Cascading: Learning to Select Passages for
Neural Document Ranking"): with ``select: k``, a cheap ``selector`` scores every window first and the
expensive scorer reads only the ``k`` best windows of each document (with ``keep_first: true``, the first
window and the selector's ``k - 1`` best of the others: the head holds the title, which later windows lack). Selectors: ``bm25`` (Okapi BM25 over
the query's windows, bm25s with the first stage's stemmer and stopwords), or ``dense`` with
``selector_model`` (the embedded ``minilm-l6``, or the folder of a sentence-transformers encoder, e.g. a
distilled encoder student). IDCM trains the selector on the expensive model's window scores:
:func:`selector_examples` reads them out of the rankings (``extra["passages"]``) and
:func:`distill_selector` fits a dense selector to them (KL between the softmaxes over a document's windows).

Costs are counted per window: ``passages_scored`` (windows the scorer read), ``selector_passages`` (windows
the selector read), ``passages_total`` (windows the documents have) and ``selector_seconds``, next to the
scorer's own calls, tokens and seconds.

A recipe names it as the ``passages`` option of a scoring teacher (validated at load by
:func:`check_passage_options`)::

    teacher: {method: pointwise, options: {passages: {tokens: 64, stride: 64, aggregate: max, select: 2,
                                                      selector: bm25}}}
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, fields

import numpy as np

from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores

AGGREGATES = ("max", "first", "sum", "mean_top_k")
SELECTORS = ("bm25", "dense")
SEP = "#p"  # window ids: <docid>#p<index>


@dataclass(frozen=True)
class PassageConfig:
    """How documents become windows and windows become one score (the ``passages`` option)."""

    tokens: int = 64  #: window length in the scorer's tokens
    stride: int | None = None  #: tokens between window starts (default: ``tokens``, no overlap)
    aggregate: str = "max"  #: max | first | sum | mean_top_k
    k: int = 2  #: windows averaged by ``mean_top_k``
    select: int | None = None  #: IDCM: windows per document the scorer reads (None: all)
    selector: str = "bm25"  #: bm25 | dense (IDCM only)
    selector_model: str = "minilm-l6"  #: the dense selector's encoder: an alias or a folder
    max_passages: int | None = None  #: windows per document at most (None: the whole document)
    keep_first: bool = False  #: IDCM: the first window (title and head) is always read, the selector picks the rest

    @property
    def step(self) -> int:
        return self.stride or self.tokens


_HELP = {"tokens": "an integer >= 8", "stride": "an integer >= 1 and <= tokens, or null",
         "aggregate": f"one of {', '.join(AGGREGATES)}", "k": "an integer >= 1", "select": "an integer >= 1, or null",
         "selector": f"one of {', '.join(SELECTORS)}", "selector_model": "an encoder alias or folder (a string)",
         "max_passages": "an integer >= 1, or null", "keep_first": "true or false"}


def check_passage_options(options) -> list[tuple[str, str]]:
    """``[(key, problem)]`` for a ``passages`` mapping (empty when it is valid): before anything loads."""
    if not isinstance(options, dict):
        return [("", f"expected a mapping of {', '.join(_HELP)} (got {type(options).__name__})")]
    problems = []
    known = {f.name for f in fields(PassageConfig)}

    def is_int(v, lo):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    for key, v in options.items():
        if key not in known:
            problems.append((key, f"unknown key (expected one of {', '.join(sorted(known))})"))
            continue
        ok = {"tokens": is_int(v, 8), "stride": v is None or is_int(v, 1), "aggregate": v in AGGREGATES,
              "k": is_int(v, 1), "select": v is None or is_int(v, 1), "selector": v in SELECTORS,
              "selector_model": isinstance(v, str) and bool(v), "max_passages": v is None or is_int(v, 1),
              "keep_first": isinstance(v, bool)}[key]
        if not ok:
            problems.append((key, f"expected {_HELP[key]} (got {v!r})"))
    if not problems:
        tokens, stride = options.get("tokens", 64), options.get("stride")
        if stride is not None and stride > tokens:
            problems.append(("stride", f"a stride of {stride} skips text between windows of {tokens} tokens"))
        if options.get("select") and options.get("aggregate") == "first":
            problems.append(("select", "aggregate 'first' reads one window already: a selector has nothing to select"))
        if options.get("keep_first") and not options.get("select"):
            problems.append(("keep_first", "keeps the first window among the selected ones: set select too"))
    return problems


def passage_config(options) -> PassageConfig:
    problems = check_passage_options(options)
    if problems:
        key, msg = problems[0]
        raise LlmrankError(f"option passages{'.' + key if key else ''}: {msg}")
    return PassageConfig(**options)


def split_windows(tokenizer, text: str, tokens: int, step: int, max_passages: int | None = None) -> list[str]:
    """``text`` as windows of ``tokens`` tokens starting every ``step`` tokens (the last one may be shorter;
    a window that only repeats the end of the one before it is not made). Never empty."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= tokens:
        return [text]
    out = []
    for start in range(0, len(ids), step):
        out.append(tokenizer.decode(ids[start:start + tokens], skip_special_tokens=True))
        if start + tokens >= len(ids) or (max_passages and len(out) >= max_passages):
            break
    return out


def aggregate(scores: list[float], how: str, k: int = 2) -> float:
    """One document score from its windows' scores (in document order)."""
    if not scores:
        raise LlmrankError("a document with no scored window")
    if how == "max":
        return max(scores)
    if how == "first":
        return scores[0]
    if how == "sum":
        return float(sum(scores))
    if how == "mean_top_k":
        top = sorted(scores, reverse=True)[:k]
        return float(sum(top) / len(top))
    raise LlmrankError(f"unknown aggregation '{how}' (one of {', '.join(AGGREGATES)})")


def _tokenizer_of(scorer):
    tok = getattr(getattr(scorer, "backend", None), "tokenizer", None)
    if tok is None:
        tok = getattr(getattr(getattr(scorer, "encoder", None), "st", None), "tokenizer", None)
    if tok is None:
        raise LlmrankError(f"passage scoring needs the scorer's tokenizer; {type(scorer).__name__} has none")
    return tok


class BM25Selector:
    """Okapi BM25 over one query's windows (the index is the windows themselves)."""

    name = "bm25"

    def __init__(self):
        import Stemmer

        from llmrank.data.bm25 import BM25Config

        self.cfg = BM25Config()
        self.stemmer = Stemmer.Stemmer(self.cfg.stemmer)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        import bm25s

        tokens = bm25s.tokenize(passages, stopwords=self.cfg.stopwords, stemmer=self.stemmer, show_progress=False)
        index = bm25s.BM25(k1=self.cfg.k1, b=self.cfg.b, method=self.cfg.method)
        index.index(tokens, show_progress=False)
        q = bm25s.tokenize([query], stopwords=self.cfg.stopwords, stemmer=self.stemmer, show_progress=False,
                           return_ids=False)[0]
        return np.asarray(index.get_scores(q), dtype=np.float64)


class DenseSelector:
    """Cosine of query and window embeddings from a sentence-transformers encoder."""

    name = "dense"

    def __init__(self, model: str = "minilm-l6"):
        from llmrank.rerankers.dense import DenseEncoder

        self.model = model
        self.encoder = DenseEncoder(model)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        q = self.encoder.encode([query], self.encoder.query_prefix)
        return (self.encoder.encode(passages, self.encoder.doc_prefix) @ q[0]).astype(np.float64)


def make_selector(cfg: PassageConfig):
    return BM25Selector() if cfg.selector == "bm25" else DenseSelector(cfg.selector_model)


class PassageReranker(Reranker):
    """``scorer`` applied to windows of each document, aggregated per document; with ``select`` the IDCM
    cascade (see the module docstring)."""

    has_scores = True

    def __init__(self, scorer: Reranker, cfg: PassageConfig | dict | None = None, selector=None):
        self.scorer = scorer
        self.cfg = cfg if isinstance(cfg, PassageConfig) else passage_config(dict(cfg or {}))
        self.tokenizer = _tokenizer_of(scorer)
        limit = getattr(scorer, "max_doc_tokens", None)
        if limit and limit < self.cfg.tokens:
            raise LlmrankError(f"option passages.tokens: windows of {self.cfg.tokens} tokens would be cut again at the "
                               f"scorer's max_doc_tokens ({limit}); use windows of at most {limit} tokens")
        self.selector = selector if selector is not None or not self.cfg.select else make_selector(self.cfg)
        self.method = f"{scorer.method}+passages"
        self.backend = getattr(scorer, "backend", None)

    @property
    def cache_key(self) -> dict:
        cfg = {f.name: getattr(self.cfg, f.name) for f in fields(PassageConfig)}
        if not self.cfg.select:
            cfg.pop("selector"), cfg.pop("selector_model")
        if not self.cfg.keep_first:  # the keys of runs made before the option existed stay valid
            cfg.pop("keep_first")
        return {**self.scorer.cache_key, "passages": cfg}

    def windows(self, doc: Doc) -> list[str]:
        c = self.cfg
        out = split_windows(self.tokenizer, doc.contents, c.tokens, c.step, c.max_passages)
        return out[:1] if c.aggregate == "first" else out

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        t0 = time.perf_counter()
        c = self.cfg
        per_doc = [self.windows(d) for d in docs]
        cost: Counter = Counter(passages_total=sum(len(w) for w in per_doc))
        chosen = [list(range(len(w))) for w in per_doc]
        selector_scores = None
        if c.select and any(len(w) > c.select for w in per_doc):
            t1 = time.perf_counter()
            flat = [p for w in per_doc for p in w]
            s = self.selector.score(query.text, flat)
            cost["selector_passages"] += len(flat)
            cost["selector_seconds"] += time.perf_counter() - t1
            selector_scores, start = [], 0
            for i, w in enumerate(per_doc):
                part = [float(x) for x in s[start:start + len(w)]]
                start += len(w)
                selector_scores.append(part)
                ranked = sorted(range(len(w)), key=lambda j: -part[j])
                if c.keep_first:  # the head (with the title) always, the selector's best of the rest
                    ranked = [0] + [j for j in ranked if j != 0]
                best = ranked[: c.select]
                chosen[i] = sorted(best)  # document order: FirstP-like tie-breaking stays meaningful
        pdocs = [Doc(f"{d.docid}{SEP}{j}", per_doc[i][j]) for i, d in enumerate(docs) for j in chosen[i]]
        inner = self.scorer.rerank(query, pdocs)
        got = dict(zip(inner.docids, inner.scores))
        if len(got) != len(pdocs):
            raise LlmrankError(f"query {query.qid}: the scorer returned {len(got)} window scores for {len(pdocs)} windows")
        scores, passages = [], {}
        for i, d in enumerate(docs):
            vals = [got[f"{d.docid}{SEP}{j}"] for j in chosen[i]]
            scores.append(aggregate(vals, c.aggregate, c.k))
            passages[d.docid] = {"index": chosen[i], "scores": [round(float(v), 6) for v in vals],
                                 "windows": len(per_doc[i])}
            if selector_scores is not None:
                passages[d.docid]["selector"] = [round(v, 6) for v in selector_scores[i]]
        cost.update({k: v for k, v in inner.cost.items() if k != "seconds"})
        cost["passages_scored"] += len(pdocs)
        cost["seconds"] = time.perf_counter() - t0
        return ranking_from_scores(docs, scores, cost=cost, extra={"passages": passages})


def with_passages(scorer: Reranker, options: dict | None) -> Reranker:
    """``scorer`` itself without options, else wrapped in a :class:`PassageReranker`."""
    return scorer if not options else PassageReranker(scorer, options)


# -- training the selector from the scorer's window scores (IDCM) ----------------------------------------

def selector_examples(rankings: dict, queries: dict, docs: dict, tokenizer, cfg: PassageConfig) -> list[dict]:
    """``[{query, passages, scores}]``: for every document whose windows the scorer all read (run without
    ``select`` to train a selector), its windows' texts and the scorer's scores for them. ``rankings``:
    ``{qid: Ranking}`` (or teacher records: ``{qid: {"extra": {"passages": …}}}``) of a PassageReranker."""
    out = []
    for qid, r in rankings.items():
        extra = r.extra if isinstance(r, Ranking) else (r.get("extra") or {})
        for docid, p in (extra.get("passages") or {}).items():
            if p["windows"] < 2 or len(p["index"]) != p["windows"]:
                continue
            texts = split_windows(tokenizer, docs[docid].contents, cfg.tokens, cfg.step, cfg.max_passages)
            if len(texts) != p["windows"]:
                raise LlmrankError(f"query {qid}, document {docid}: {len(texts)} windows now, {p['windows']} when scored "
                                   "(another tokenizer or window setting?)")
            out.append({"query": queries[qid].text, "passages": texts, "scores": list(p["scores"])})
    return out


def distill_selector(selector: DenseSelector, examples: list[dict], epochs: int = 1, lr: float = 2e-5,
                     temperature: float = 1.0, scale: float = 20.0, batch_size: int = 8, seed: int = 0) -> list[float]:
    """Fit the dense selector's encoder to the scorer: per document, KL(softmax(scorer / temperature) ||
    softmax(scale * cosine)) over its windows, as IDCM trains its selection module. Returns the mean loss
    of each epoch. The selector gets its own trained copy of the encoder (loaded encoders are shared within a
    process); save it with ``selector.encoder.st.save(folder)`` and name that folder as ``selector_model``."""
    import copy
    import random

    import torch

    if not examples:
        raise LlmrankError("no selector training examples: score documents with two or more windows, without select")
    st = selector.encoder.st = copy.deepcopy(selector.encoder.st)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(st.parameters(), lr=lr)
    st.train()
    losses = []

    def embed(texts):
        feats = (st.preprocess if hasattr(st, "preprocess") else st.tokenize)(texts)
        feats = {k: v.to(st.device) if hasattr(v, "to") else v for k, v in feats.items()}
        return torch.nn.functional.normalize(st(feats)["sentence_embedding"], dim=-1)

    for _ in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        total, n = 0.0, 0
        for b in range(0, len(order), batch_size):
            opt.zero_grad()
            loss = 0.0
            batch = [examples[i] for i in order[b:b + batch_size]]
            for ex in batch:
                q = embed([ex["query"]])
                p = embed(ex["passages"])
                student = torch.log_softmax(scale * (p @ q[0]), dim=-1)
                target = torch.softmax(torch.tensor(ex["scores"], dtype=torch.float32) / temperature, dim=-1)
                loss = loss + torch.sum(target * (torch.log(target.clamp_min(1e-12)) - student))
            loss = loss / len(batch)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
            n += len(batch)
        losses.append(total / max(1, n))
    st.eval()
    if not all(math.isfinite(v) for v in losses):
        raise LlmrankError(f"selector training diverged (losses {losses})")
    return losses
