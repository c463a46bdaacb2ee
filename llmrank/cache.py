"""Where llmrank keeps what it builds once and reuses: BM25 indexes, prepared models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LLMRANK_CACHE`` if set, else ``~/.cache/llmrank``."""
    return Path(os.environ.get("LLMRANK_CACHE") or Path.home() / ".cache" / "llmrank")


def corpus_key(docs: dict, params: dict) -> str:
    """A cache key for something built from a corpus: hashes ``params`` and every document's id and text
    (``docs`` maps id → :class:`~llmrank.data.types.Doc`)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for docid, doc in docs.items():
        h.update(docid.encode())
        h.update(b"\0")
        h.update(doc.contents.encode())
        h.update(b"\1")
    return h.hexdigest()[:20]
