"""Queries written by an LLM for documents of a corpus, and the two published filters for them.

- **Generation** (InPars, Bonifacio et al. 2022; Promptagator, Dai et al. 2022): documents are sampled from
  the corpus with a seed, and the model writes one query per document with a prompt file
  (``prompts/query_gen.yaml``). Records go to an append-only JSONL file, one per document, each fsynced
  before the next batch starts: a rerun skips the documents already done, and a killed run loses at most
  the batch in flight (a torn last line is cut off when the file is opened again).
- **Likelihood filter** (InPars): each query's score is the generator's mean log-probability of the query's
  tokens given the prompt (teacher forcing, the same prompt that wrote it); the top ``keep_likelihood``
  share of the queries is kept.
- **Round-trip filter** (Promptagator's consistency check): the first stage (BM25 over the whole corpus)
  retrieves for the query, and the query is kept only when its source document comes back in the top
  ``round_trip_k``. The source document's rank is recorded for every query (its distribution is a report).

What survives both filters becomes training data: the query, and its source document as a judged positive
(the only label a corpus gives). See :func:`generated_data`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llmrank.backends.base import Backend, GenerationParams, Timer
from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.prompts import PromptTemplate, load_prompt, render_chat
from llmrank.synth.records import RecordLog

RANK_BUCKETS = ((1, 1), (2, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 100))
"""Source-document rank buckets of the round-trip report (1-based, inclusive); beyond: ``>100``."""


@dataclass
class QueryGenSettings:
    """How queries are generated and filtered (the recipe's ``generate`` section and the CLI options)."""

    model: str = "smollm2-135m"
    backend: str = "hf"
    backend_options: dict = field(default_factory=dict)
    prompt: str = "query_gen"
    docs: int = 200
    seed: int = 0
    max_new_tokens: int = 32
    temperature: float = 0.0
    max_doc_tokens: int = 160
    keep_likelihood: float = 1.0
    round_trip_k: int = 0
    rank_depth: int = 100
    min_doc_chars: int = 1

    def generation_key(self) -> dict:
        """What a generated record depends on (besides the document's text)."""
        return {"model": self.model, "prompt": self.prompt, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "max_doc_tokens": self.max_doc_tokens, "seed": self.seed}


def sample_docs(docs: dict[str, Doc], n: int, seed: int, min_chars: int = 1) -> list[str]:
    """``n`` document ids drawn without replacement with ``seed`` (corpus order, then shuffled): the same
    corpus, ``n`` and seed give the same documents, and a larger ``n`` keeps the smaller draw as its head."""
    if n < 1:
        raise LlmrankError(f"documents to sample must be at least 1, got {n}")
    pool = [d for d, doc in docs.items() if len(doc.contents.strip()) >= min_chars]
    if not pool:
        raise LlmrankError(f"no document has at least {min_chars} characters to write a query for")
    order = list(pool)
    random.Random(seed).shuffle(order)
    return order[: min(n, len(order))]


_PREFIX = re.compile(r"^(?:search\s+)?(?:query|question|q)\s*[:\-]\s*", re.IGNORECASE)


def clean_query(text: str) -> str:
    """The query in a generation: its first non-empty line, without a ``Query:`` label or wrapping quotes."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    return line


def continuation_logprobs(backend: Backend, prompts: list[str], continuations: list[str]) -> list[float]:
    """Mean log-probability of each continuation's tokens after its prompt (teacher forcing; one forward
    pass per batch). Needs a backend that exposes its causal LM (``hf``)."""
    import torch

    lm, tok = getattr(backend, "lm", None), backend.tokenizer
    if lm is None or tok is None:
        raise LlmrankError(f"the likelihood filter scores queries with the generator's own model; backend "
                           f"'{backend.name}' does not expose it (use backend hf, or keep_likelihood 1.0)")
    conts = [tok.encode(c, add_special_tokens=False) for c in continuations]
    seqs = [tok.encode(p, add_special_tokens=False) + c for p, c in zip(prompts, conts)]
    out = [math.nan] * len(seqs)
    with Timer(backend.stats), torch.inference_mode():
        for batch in backend._batches([len(s) for s in seqs]):
            ids, mask = backend._pad([seqs[i] for i in batch])
            logits = lm(input_ids=ids, attention_mask=mask).logits.float()
            for r, i in enumerate(batch):
                n, end = len(conts[i]), len(seqs[i])
                if n == 0:
                    continue
                lp = torch.log_softmax(logits[r, end - n - 1 : end - 1], dim=-1)
                target = torch.tensor(conts[i], device=lp.device)
                out[i] = float(lp.gather(1, target[:, None]).mean())
    return out


def _key(doc: Doc, settings: QueryGenSettings, prompt: PromptTemplate) -> str:
    payload = {"doc": doc.docid, "text": doc.contents, **settings.generation_key(), "prompt": prompt.key}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def generate_queries(backend: Backend, docs: dict[str, Doc], docids: list[str], path: str | Path,
                     settings: QueryGenSettings, progress: bool = False, batch_size: int = 8) -> dict:
    """Write one query record per document of ``docids`` into ``path`` (append-only, resumable).

    A record: ``{"key", "qid": "gen-<docid>", "doc_id", "query", "raw", "logprob", "query_tokens"}``.
    ``logprob`` (mean over the query's tokens) is null when the likelihood is not computed (a backend
    without its LM and ``keep_likelihood`` 1.0) or the query came out empty. Returns counts."""
    from llmrank.rerankers.pointwise import truncate_document

    prompt = load_prompt(settings.prompt, method="qlm")
    if "document" not in prompt.fields:
        raise LlmrankError(f"{prompt.path}: a query-generation prompt renders {{{{ document }}}} (its template does not)")
    need_lp = settings.keep_likelihood < 1.0 or getattr(backend, "lm", None) is not None
    params = GenerationParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=settings.seed)
    t0, written = time.perf_counter(), 0
    with RecordLog(path, required=("key", "doc_id", "query")) as out:
        keys = {d: _key(docs[d], settings, prompt) for d in docids}
        todo = [d for d in docids if keys[d] not in out]
        skipped = len(docids) - len(todo)
        if skipped:
            print(f"[generate] {skipped} of {len(docids)} documents already have a query in {path}", file=sys.stderr)
        step = max(1, len(todo) // 10)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = []
            for d in batch:
                text, _ = truncate_document(backend.tokenizer, docs[d].contents, settings.max_doc_tokens)
                prompts.append(render_chat(backend.tokenizer, prompt.messages(document=text)))
            gens = backend.generate(prompts, params)
            queries = [clean_query(g.text) for g in gens]
            lps = [math.nan] * len(batch)
            if need_lp:
                have = [i for i, q in enumerate(queries) if q]
                if have:
                    got = continuation_logprobs(backend, [prompts[i] for i in have], [queries[i] for i in have])
                    for i, v in zip(have, got):
                        lps[i] = v
            for d, g, q, lp in zip(batch, gens, queries, lps):
                out.append({"key": keys[d], "qid": f"gen-{d}", "doc_id": d, "query": q, "raw": g.text,
                            "logprob": None if math.isnan(lp) else round(lp, 6),
                            "query_tokens": g.completion_tokens})
                written += 1
            if progress or (written // step != (written - len(batch)) // step) or written == len(todo):
                rate = written / max(1e-9, time.perf_counter() - t0)
                print(f"[generate] {written}/{len(todo)} documents, {rate:.2f}/s", file=sys.stderr)
        records = [out.records[keys[d]] for d in docids]
    return {"documents": len(docids), "written": written, "skipped": skipped, "records": records,
            "seconds": round(time.perf_counter() - t0, 2)}


def source_ranks(docs: dict[str, Doc], records: list[dict], depth: int = 100) -> list[int | None]:
    """The 1-based BM25 rank of each record's source document for its own query over the whole corpus
    (None: not in the top ``depth``)."""
    from llmrank.data.bm25 import BM25Index

    index = BM25Index(docs)
    queries = [Query(f"r{i}", r["query"]) for i, r in enumerate(records)]
    if not queries:
        return []
    run = index.search(queries, depth)
    ranks: list[int | None] = []
    for i, r in enumerate(records):
        ids = run.docids(f"r{i}")
        ranks.append(ids.index(r["doc_id"]) + 1 if r["doc_id"] in ids else None)
    return ranks


def rank_histogram(ranks: list[int | None], depth: int = 100) -> dict[str, int]:
    """Counts per rank bucket (``1``, ``2-3``, …, ``51-100``, ``>100``)."""
    out: dict[str, int] = {}
    for lo, hi in RANK_BUCKETS:
        if lo > depth:
            break
        hi = min(hi, depth)
        out[str(lo) if lo == hi else f"{lo}-{hi}"] = sum(1 for r in ranks if r is not None and lo <= r <= hi)
    out[f">{depth}"] = sum(1 for r in ranks if r is None)
    return out


def filter_queries(records: list[dict], docs: dict[str, Doc], settings: QueryGenSettings) -> tuple[list[dict], dict]:
    """Apply the filters: ``(kept records, statistics)``. Empty and duplicate queries are dropped first;
    then the likelihood filter (top ``keep_likelihood`` share by ``logprob``) and the round-trip filter
    (source document in the BM25 top ``round_trip_k``) are each applied to all of the remaining queries,
    and a query is kept when it passes both. Every kept record gains ``source_rank``."""
    if not 0 < settings.keep_likelihood <= 1:
        raise LlmrankError(f"keep_likelihood is a share in (0, 1], got {settings.keep_likelihood}")
    seen: set[str] = set()
    valid, empty, dups = [], 0, 0
    for r in records:
        q = r["query"].strip()
        if not q:
            empty += 1
        elif q.lower() in seen:
            dups += 1
        else:
            seen.add(q.lower())
            valid.append(r)
    n = len(valid)
    stats: dict = {"documents_sampled": len(records), "queries_written": len(records) - empty,
                   "empty": empty, "duplicates": dups, "valid": n}
    # likelihood: the top share by mean log-probability
    if settings.keep_likelihood < 1:
        missing = [r["doc_id"] for r in valid if r.get("logprob") is None]
        if missing:
            raise LlmrankError(f"likelihood filter: {len(missing)} records carry no logprob (first: document "
                               f"{missing[0]}); generate with a backend that exposes its LM (hf)")
        order = sorted(range(n), key=lambda i: (-valid[i]["logprob"], i))
        n_keep = math.ceil(settings.keep_likelihood * n)
        like_ok = set(order[:n_keep])
        threshold = valid[order[n_keep - 1]]["logprob"] if n_keep else None
    else:
        like_ok, threshold = set(range(n)), None
    lps = [r["logprob"] for r in valid if r.get("logprob") is not None]
    stats["likelihood"] = {"keep_share": settings.keep_likelihood, "kept": len(like_ok), "dropped": n - len(like_ok),
                           "threshold_logprob": threshold,
                           "mean_logprob": float(np.mean(lps)) if lps else None}
    # round trip: the source document's first-stage rank
    depth = max(settings.rank_depth, settings.round_trip_k)
    ranks = source_ranks(docs, valid, depth) if n else []
    if settings.round_trip_k:
        rt_ok = {i for i, r in enumerate(ranks) if r is not None and r <= settings.round_trip_k}
    else:
        rt_ok = set(range(n))
    stats["round_trip"] = {"k": settings.round_trip_k, "kept": len(rt_ok), "dropped": n - len(rt_ok)}
    found = [r for r in ranks if r is not None]
    stats["source_rank"] = {"first_stage": "bm25", "depth": depth, "histogram": rank_histogram(ranks, depth),
                            "mean_found": float(np.mean(found)) if found else None,
                            "median_found": float(np.median(found)) if found else None,
                            "share_at_1": (sum(1 for r in ranks if r == 1) / n) if n else None}
    kept = []
    for i in sorted(like_ok & rt_ok):
        kept.append({**valid[i], "source_rank": ranks[i]})
    stats["kept"] = len(kept)
    stats["kept_share"] = len(kept) / len(records) if records else 0.0
    kept_ranks = [r["source_rank"] for r in kept]
    stats["source_rank"]["histogram_kept"] = rank_histogram(kept_ranks, depth)
    return kept, stats


def generated_data(docs: dict[str, Doc], kept: list[dict], name: str = "generated", source: str = "") -> RankingData:
    """Kept queries as training data: each query's source document is its one judged positive."""
    queries = {r["qid"]: Query(r["qid"], r["query"], {"source_doc": r["doc_id"]}) for r in kept}
    qrels = {r["qid"]: {r["doc_id"]: 1} for r in kept}
    return RankingData(name, queries, docs, qrels, None, source=source, kind="generated")


def stats_table(stats: dict) -> str:
    """The generation statistics as a short markdown block (for the terminal and the run report)."""
    like, rt, sr = stats["likelihood"], stats["round_trip"], stats["source_rank"]
    v = max(1, stats["valid"])
    lines = [
        f"documents sampled: {stats['documents_sampled']}; queries written: {stats['queries_written']} "
        f"(empty {stats['empty']}, duplicates {stats['duplicates']}, valid {stats['valid']})",
        f"likelihood filter (keep top {like['keep_share']:.0%}): kept {like['kept']} ({like['kept'] / v:.0%}), "
        f"dropped {like['dropped']}" + (f", threshold mean log-prob {like['threshold_logprob']:.3f}"
                                        if like["threshold_logprob"] is not None else ""),
        f"round-trip filter (source in BM25 top {rt['k'] or 'any: off'}): kept {rt['kept']} ({rt['kept'] / v:.0%}), "
        f"dropped {rt['dropped']}",
        f"kept by both: {stats['kept']} of {stats['documents_sampled']} sampled ({stats['kept_share']:.0%})",
        "",
        "| source doc's BM25 rank | " + " | ".join(sr["histogram"]) + " |",
        "|---|" + "---:|" * len(sr["histogram"]),
        "| all valid queries | " + " | ".join(str(c) for c in sr["histogram"].values()) + " |",
        "| kept | " + " | ".join(str(c) for c in sr["histogram_kept"].values()) + " |",
    ]
    if sr["median_found"] is not None:
        lines.append(f"\nsource at rank 1: {sr['share_at_1']:.0%} of valid queries; median rank where found "
                     f"{sr['median_found']:.0f}")
    return "\n".join(lines)


def settings_dict(settings: QueryGenSettings) -> dict:
    return asdict(settings)


def run_generation(docs: dict[str, Doc], path: str | Path, settings: QueryGenSettings, progress: bool = False,
                   batch_size: int | None = None, backend: Backend | None = None) -> tuple[list[dict], dict]:
    """Sample, generate (resuming ``path``), filter: ``(kept records, statistics)``."""
    from llmrank.backends import make_backend

    docids = sample_docs(docs, settings.docs, settings.seed, settings.min_doc_chars)
    if backend is None:
        backend = make_backend(settings.backend, settings.model, **settings.backend_options)
    bs = batch_size or getattr(backend, "generate_batch_size", 8)
    gen = generate_queries(backend, docs, docids, path, settings, progress=progress, batch_size=bs)
    kept, stats = filter_queries(gen["records"], docs, settings)
    stats["generation"] = {k: gen[k] for k in ("written", "skipped", "seconds")}
    stats["generation"]["cost"] = {k: v for k, v in Counter(backend.stats).items()}
    stats["settings"] = settings_dict(settings)
    return kept, stats
