"""A served student as a :class:`~llmrank.rerankers.base.Reranker`: ``/rerank`` of a vLLM pooling server.

``llmrank serve EXPORT`` serves a pointwise student on ``/rerank`` (Jina/Cohere request shape
``{model, query, documents, top_n}``); :class:`RerankClient` sends each query's candidates there and reads
``relevance_score`` back, so a served model is evaluated like any other reranker::

    llmrank rerank DATASET --backend http://127.0.0.1:8000 --method served --model EXPORT_DIR -o run.trec

With the export folder known (``--model EXPORT_DIR`` or ``export_dir=``) documents are cut to the export's
``max_doc_tokens`` with the export's tokenizer before they are sent — by the very function the student was
trained and is scored with (:func:`llmrank.rerankers.pointwise.truncate_document`) — and the served name is
looked up in ``/v1/models``. Without it, ``max_tokens_per_doc`` (when given) asks vLLM to cut documents.
The score is the student's own: sigmoid(logit(yes) − logit(no)) at the last prompt token.

Server answers become one-line :class:`~llmrank.errors.LlmrankError` messages: no documents, a document
too long for the server's ``--max-model-len`` (400), a model name the server does not serve (404), a
server without ``/rerank`` (a generation server), and no server at all (connection refused).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from llmrank.data.types import Doc, Query
from llmrank.errors import LlmrankError
from llmrank.http import RetryPolicy, send
from llmrank.rerankers.base import Ranking, Reranker, ranking_from_scores
from llmrank.serve.export import SERVE_FILE

log = logging.getLogger(__name__)


def _root_url(url: str) -> str:
    url = url.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


class RerankClient(Reranker):
    """Scores documents with a served student's ``/rerank`` (or ``/score``).

    ``target`` is the server's URL (``http://127.0.0.1:8000``, a ``/v1`` suffix is fine), or a backend with a
    ``base_url`` (what ``llmrank rerank --backend http://… --method served`` builds), whose ``model`` is then
    the export folder or the served model name. ``prompt`` is only checked against the export's (the server's
    chat template holds the prompt). ``model`` is the served name (``None``: the server's only model).
    """

    method = "served"
    has_scores = True

    def __init__(self, target, prompt: str | None = None, *, model: str | None = None,
                 export_dir: str | os.PathLike | None = None, max_tokens_per_doc: int | None = None,
                 tokenizer=None, batch_size: int = 64, timeout: float = 600.0, max_retries: int = 2):
        import httpx

        backend = None if isinstance(target, str) else target
        url = target if isinstance(target, str) else getattr(target, "base_url", None)
        if not url or not str(url).startswith(("http://", "https://")):
            raise LlmrankError("method 'served' reads scores from a running server: give --backend http://HOST:PORT "
                               "(start one with `llmrank serve EXPORT_DIR`)")
        self.url = _root_url(str(url))
        if backend is not None and model is None and export_dir is None:
            name = str(getattr(backend, "model", "") or "")
            if name and Path(name).is_dir():
                export_dir = name
            elif name:
                model = name
            if tokenizer is None and export_dir is not None:
                tokenizer = getattr(backend, "tokenizer", None)
        self.export_dir = Path(export_dir).resolve() if export_dir is not None else None
        self.info: dict = {}
        if self.export_dir is not None:
            serve_file = self.export_dir / SERVE_FILE
            if not serve_file.is_file():
                raise LlmrankError(f"{self.export_dir}: not a served export (no {SERVE_FILE}); give the folder "
                                   "`llmrank export` wrote, or the served model name")
            self.info = json.loads(serve_file.read_text())
            if self.info.get("runner") != "pooling":
                raise LlmrankError(f"{self.export_dir}: a {self.info.get('kind', '?')} export is served for generation, "
                                   "not /rerank; use --backend http://… with its own method instead of 'served'")
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.export_dir)
        if prompt is not None and self.info:
            from llmrank.prompts import load_prompt

            key = load_prompt(prompt).key
            if key != self.info.get("prompt"):
                raise LlmrankError(f"{self.export_dir} is served with prompt {self.info.get('prompt')}, not {key}: "
                                   "the prompt is part of the export (drop --prompt)")
        self.tokenizer = tokenizer
        self.max_doc_tokens = self.info.get("max_doc_tokens") if tokenizer is not None else None
        self.max_tokens_per_doc = max_tokens_per_doc
        if self.max_tokens_per_doc is None and tokenizer is None:
            self.max_tokens_per_doc = self.info.get("max_doc_tokens")
        self._model = model
        self._model_resolved = model is not None or self.export_dir is None
        self.batch_size = batch_size
        self.max_retries = max_retries
        # nothing listening is not worth waiting for: `llmrank serve` prints its URL once ready
        self.retry = RetryPolicy(max_retries=max_retries, retry_refused=False)
        self.client = httpx.Client(timeout=timeout)
        self.stats: Counter = Counter()

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """The served model name sent with each request (looked up in ``/v1/models`` for an export folder)."""
        if not self._model_resolved:
            self._model = self._lookup_model()
            self._model_resolved = True
        return self._model

    @property
    def cache_key(self) -> dict:
        return {"method": self.method, "model": str(self.export_dir) if self.export_dir else self.model,
                "prompt": self.info.get("prompt"), "max_doc_tokens": self.max_doc_tokens or self.max_tokens_per_doc}

    def served_models(self) -> list[dict]:
        return self._request("GET", "/v1/models").get("data") or []

    def _lookup_model(self) -> str:
        models = self.served_models()
        roots = {m.get("id"): m.get("root") for m in models}
        for name, root in roots.items():
            try:
                if root and Path(root).resolve() == self.export_dir:
                    return name
            except OSError:
                pass
        if len(models) == 1:
            name = models[0]["id"]
            log.warning("%s serves %s from %s, not from %s; using it", self.url, name, roots[name], self.export_dir)
            return name
        raise LlmrankError(f"{self.url} serves {', '.join(map(str, roots)) or 'no model'}, none of them from "
                           f"{self.export_dir}; pass the served name as the model")

    # -- HTTP -----------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.url + path
        r = send(self.client, method, url, self.retry, json=body, stats=self.stats,
                 refused_hint="is it running? Start one with `llmrank serve EXPORT_DIR --port PORT`")
        if r.status_code == 200:
            try:
                return r.json()
            except ValueError:
                raise LlmrankError(f"{url}: the answer is not JSON: {r.text[:200]!r}") from None
        raise LlmrankError(self._explain(url, r, body))

    def _explain(self, url: str, r, body: dict | None) -> str:
        message, payload = _error_message(r)
        if r.status_code == 404 and isinstance(payload, dict) and payload.get("detail") == "Not Found":
            return (f"{url}: not found (HTTP 404): the server has no {url[len(self.url):]} endpoint; /rerank needs a "
                    "pooling server (`llmrank serve` of a pointwise export), not a generation server")
        if r.status_code == 404 and "does not exist" in message:
            name = (body or {}).get("model")
            try:
                served = ", ".join(m["id"] for m in self.served_models())
            except LlmrankError:
                served = "?"
            return (f"{self.url} does not serve a model named {name!r} (it serves: {served}); pass that name, or the "
                    "export folder, as the model")
        if r.status_code == 400 and "at least one" in message.lower():
            return f"{url}: no documents to score (HTTP 400: {message})"
        if r.status_code == 400 and "maximum context length" in message:
            hint = ("pass the export folder (--model EXPORT_DIR) so documents are cut to its max_doc_tokens, or set "
                    "max_tokens_per_doc") if self.tokenizer is None and not self.max_tokens_per_doc else \
                "lower max_doc_tokens / max_tokens_per_doc, or serve with a larger --max-model-len"
            return f"{url}: a document is too long for the served model (HTTP 400: {message}); {hint}"
        return f"{url}: HTTP {r.status_code}: {message}"

    # -- scoring ------------------------------------------------------------------------------------------
    def _prepare(self, documents: list[str]) -> tuple[list[str], int]:
        if self.tokenizer is None or not self.max_doc_tokens:
            return list(documents), 0
        from llmrank.rerankers.pointwise import truncate_documents

        cut = truncate_documents(self.tokenizer, documents, self.max_doc_tokens)
        return [d for d, _ in cut], sum(t for _, t in cut)

    def score(self, query: str, documents: list[str], endpoint: str = "rerank") -> np.ndarray:
        """One score per document, in the order given, from ``/rerank`` (default) or ``/score``."""
        if endpoint not in ("rerank", "score"):
            raise ValueError("endpoint is 'rerank' or 'score'")
        documents, truncated = self._prepare(documents)
        self.stats["truncated_docs"] += truncated
        chunks = [documents[i : i + self.batch_size] for i in range(0, len(documents), self.batch_size)] or [[]]
        out = np.empty(len(documents), dtype=np.float64)
        start = 0
        t0 = time.perf_counter()
        for chunk in chunks:
            body: dict = {"query": query, "documents": chunk} if endpoint == "rerank" else {"queries": query, "documents": chunk}
            if endpoint == "rerank":
                body["top_n"] = len(chunk)
            if self.model is not None:
                body["model"] = self.model
            if self.max_tokens_per_doc:
                body["max_tokens_per_doc"] = int(self.max_tokens_per_doc)
            ans = self._request("POST", f"/{endpoint}", body)
            rows = ans.get("results") if endpoint == "rerank" else ans.get("data")
            if rows is None or len(rows) != len(chunk):
                raise LlmrankError(f"{self.url}/{endpoint}: expected {len(chunk)} scores, got {len(rows or [])}")
            for row in rows:
                out[start + int(row["index"])] = float(row["relevance_score"] if endpoint == "rerank" else row["score"])
            usage = ans.get("usage") or {}
            self.stats["requests"] += 1
            self.stats["calls"] += len(chunk)
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            start += len(chunk)
        self.stats["seconds"] += time.perf_counter() - t0
        return out

    def rerank(self, query: Query, docs: list[Doc]) -> Ranking:
        if not docs:
            return Ranking([], [])
        before = Counter(self.stats)
        scores = self.score(query.text, [d.contents for d in docs])
        cost = Counter(self.stats)
        cost.subtract(before)
        return ranking_from_scores(docs, scores, cost=+cost)

    def close(self) -> None:
        self.client.close()


def _error_message(r) -> tuple[str, object]:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300], None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)[:600], body
    return str(err)[:600], body
