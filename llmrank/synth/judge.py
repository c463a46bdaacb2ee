"""Relevance labels from an LLM judge (UMBRELA, Upadhyay et al. 2024): each (query, document) pair gets a
grade on TREC's 0–3 scale, written as TREC qrels.

The judge reads its grade from the next-token distribution over the four answer tokens of a pointwise
prompt (``prompts/umbrela.yaml``, answers ``0``–``3``), renormalised over those four. It takes ``samples``
grades per pair and aggregates them:

- ``samples: 1, temperature: 0`` — the most likely grade (greedy decoding of a one-token answer);
- ``samples: n, temperature: t > 0`` — n grades drawn from that distribution sharpened or flattened by t
  (exactly what n sampled one-token answers at temperature t would give, from one forward pass), seeded per
  pair; ``aggregate: majority`` takes the most frequent grade (a tie goes to the lower grade), ``mean`` the
  rounded mean (half up).

Records go to an append-only JSONL file, one per query, fsynced: a rerun skips the queries done, and a
killed run loses at most the queries in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from llmrank.backends.base import Backend
from llmrank.data.types import Candidates, Qrels, RankingData
from llmrank.errors import LlmrankError
from llmrank.prompts import load_prompt
from llmrank.synth.records import RecordLog, read_records

AGGREGATES = ("majority", "mean")
GRADES = (0, 1, 2, 3)


def aggregate_grades(samples: list[int], how: str) -> int:
    """One grade from several: ``majority`` (most frequent, ties to the lower grade) or ``mean`` (rounded,
    half up)."""
    if not samples:
        raise LlmrankError("no grades to aggregate")
    if how == "majority":
        counts = Counter(samples)
        top = max(counts.values())
        return min(g for g, c in counts.items() if c == top)
    if how == "mean":
        return int(math.floor(sum(samples) / len(samples) + 0.5))
    raise LlmrankError(f"unknown aggregate '{how}' (one of {', '.join(AGGREGATES)})")


def grade_distribution(label_logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Rows of ``[n, 4]`` label log-probabilities -> probabilities over the four grades at ``temperature``
    (renormalised over the grades; a row with no finite entry is uniform)."""
    lp = np.where(np.isfinite(label_logprobs), label_logprobs, -1e9).astype(np.float64)
    t = max(temperature, 1e-6)
    z = lp / t
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def sample_grades(probs: np.ndarray, n: int, temperature: float, seed_text: str) -> list[int]:
    """``n`` grades for one pair: the argmax when ``temperature`` is 0, else draws from ``probs`` with a seed
    derived from ``seed_text`` (the same pair gives the same draws)."""
    if temperature == 0:
        return [int(np.argmax(probs))] * n
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.choice(len(probs), size=n, p=probs)]


class Judge:
    """An LLM judge: a backend, a graded pointwise prompt, and the sampling settings."""

    def __init__(self, backend: Backend, prompt: str = "umbrela", samples: int = 1, temperature: float = 0.0,
                 aggregate: str = "majority", max_doc_tokens: int = 256, seed: int = 0):
        from llmrank.rerankers.pointwise import PointwiseReranker

        if samples < 1:
            raise LlmrankError(f"samples per pair must be at least 1, got {samples}")
        if temperature < 0:
            raise LlmrankError(f"temperature must be >= 0, got {temperature}")
        if aggregate not in AGGREGATES:
            raise LlmrankError(f"unknown aggregate '{aggregate}' (one of {', '.join(AGGREGATES)})")
        self.prompt = load_prompt(prompt, method="pointwise")
        if sorted(self.prompt.answers) != [str(g) for g in GRADES]:
            raise LlmrankError(f"{self.prompt.path}: a judge prompt answers with the grades 0, 1, 2, 3 (key 'answers'), "
                               f"got {sorted(self.prompt.answers)}")
        self.backend = backend
        self.samples, self.temperature, self.aggregate, self.seed = samples, temperature, aggregate, seed
        self.max_doc_tokens = max_doc_tokens
        self._pointwise = PointwiseReranker(backend, self.prompt, max_doc_tokens=max_doc_tokens)
        self.labels = [self.prompt.answers[str(g)] for g in GRADES]

    @property
    def key(self) -> dict:
        return {"model": self.backend.model, "prompt": self.prompt.key, "samples": self.samples,
                "temperature": self.temperature, "aggregate": self.aggregate, "max_doc_tokens": self.max_doc_tokens,
                "seed": self.seed}

    def judge_query(self, qid: str, query: str, docids: list[str], texts: list[str]) -> dict:
        prompts, _ = self._pointwise.prompts_for(query, texts)
        lp = self.backend.label_logprobs(prompts, self.labels, variants=True)
        probs = grade_distribution(lp, self.temperature if self.temperature > 0 else 1.0)
        grades, samples = [], []
        for d, p in zip(docids, probs):
            s = sample_grades(p, self.samples, self.temperature, f"{self.seed}|{qid}|{d}")
            samples.append(s)
            grades.append(aggregate_grades(s, self.aggregate))
        return {"qid": qid, "docids": docids, "grades": grades, "samples": samples,
                "probs": [[round(float(x), 5) for x in p] for p in probs],
                "expected": [round(float(p @ np.array(GRADES)), 5) for p in probs]}


def record_key(judge: Judge, query: str, docids: list[str]) -> str:
    payload = {"query": query, "docids": docids, **judge.key}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def run_judge(judge: Judge, data: RankingData, candidates: Candidates, k: int, path: str | Path,
              progress: bool = False) -> dict:
    """Judge each query's top ``k`` candidates into ``path`` (append-only, resumable): ``{"queries",
    "judged", "skipped", "pairs", "seconds"}``."""
    t0 = time.perf_counter()
    qids = [q for q in candidates.qids() if q in data.queries]
    judged = skipped = pairs = 0
    step = max(1, len(qids) // 10)
    with RecordLog(path, required=("key", "qid", "docids", "grades")) as out:
        for i, q in enumerate(qids, 1):
            docids = candidates.docids(q)[:k]
            missing = [d for d in docids if d not in data.docs]
            if missing:
                raise LlmrankError(f"query {q}: candidate document '{missing[0]}' is not in {data.source}")
            key = record_key(judge, data.queries[q].text, docids)
            if key in out:
                skipped += 1
                continue
            rec = judge.judge_query(q, data.queries[q].text, docids, [data.docs[d].contents for d in docids])
            out.append({"key": key, **rec})
            judged += 1
            pairs += len(docids)
            if progress or i % step == 0 or i == len(qids):
                print(f"[judge] {i}/{len(qids)} queries, {pairs} pairs judged, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
    return {"queries": len(qids), "judged": judged, "skipped": skipped, "pairs": pairs,
            "seconds": round(time.perf_counter() - t0, 2)}


def judged_qrels(path: str | Path, keys: set[str] | None = None) -> Qrels:
    """``{qid: {docid: grade}}`` from a judge record file (only the records of ``keys`` when given)."""
    out: Qrels = {}
    for rec in read_records(path, ("key", "qid", "docids", "grades")):
        if keys is not None and rec["key"] not in keys:
            continue
        if rec["qid"] in out:
            raise LlmrankError(f"{path}: query '{rec['qid']}' has records of two judge configurations; keep one "
                               "configuration per file")
        out[rec["qid"]] = {d: int(g) for d, g in zip(rec["docids"], rec["grades"])}
    return out


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    """TREC qrels lines ``qid 0 docid grade``."""
    from llmrank.data.io import atomic_write_text

    atomic_write_text(path, "".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
