"""Where llmrank keeps what it builds once and reuses: BM25 indexes, prepared models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LLMRANK_CACHE`` if set, else ``~/.cache/llmrank``."""
    return Path(os.environ.get("LLMRANK_CACHE") or Path.home() / ".cache" / "llmrank")
