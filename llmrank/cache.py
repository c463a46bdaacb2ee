"""Where llmrank keeps what it builds once and reuses (BM25 indexes, dense embeddings, prepared models), and
how an entry is built safely: each builder writes its own scratch folder, seals it with the size and
checksum of every file, and renames it into place (:func:`llmrank.outputs.temp_dir`,
:func:`llmrank.outputs.publish_dir`); a damaged or incomplete entry is named and rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from llmrank.outputs import file_sha256, publish_dir

CACHE_MANIFEST = "llmrank_cache.json"
"""Written last into a cache folder: the size and SHA-256 of every file in it. A folder without it, or whose
files differ from it, is incomplete or damaged, and is rebuilt (:func:`verify`)."""


def cache_root() -> Path:
    """``$LLMRANK_CACHE`` if set, else ``~/.cache/llmrank``."""
    return Path(os.environ.get("LLMRANK_CACHE") or Path.home() / ".cache" / "llmrank")


def corpus_key(docs: dict, params: dict) -> str:
    """A cache key for something built from a corpus: hashes ``params`` and every document's id and text
    (``docs`` maps id → :class:`~llmrank.data.types.Doc`)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for docid, doc in docs.items():
        h.update(docid.encode())
        h.update(b"\0")
        h.update(doc.contents.encode())
        h.update(b"\1")
    return h.hexdigest()[:20]


def seal(folder: Path) -> None:
    """Record every file's size and checksum in :data:`CACHE_MANIFEST` (call it last, when the folder is complete)."""
    files = {f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(folder.iterdir()) if f.is_file()}
    (folder / CACHE_MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def verify(folder: Path) -> str | None:
    """None when ``folder`` is a complete, unchanged cache entry; else what is wrong with it."""
    try:
        files = json.loads((folder / CACHE_MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {CACHE_MANIFEST}"
    for name, want in files.items():
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want.get("size"):
            return f"{name} has {f.stat().st_size} bytes, expected {want.get('size')}"
        if file_sha256(f) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def discard(folder: Path) -> None:
    """Move a damaged entry aside with one rename (no reader sees it half deleted), then delete it."""
    aside = folder.with_name(f"{folder.name}.bad-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except OSError:
        return  # another process moved it already
    shutil.rmtree(aside, ignore_errors=True)


def publish(tmp: Path, target: Path) -> None:
    """Rename a sealed ``tmp`` to ``target`` (:func:`llmrank.outputs.publish_dir`); when another builder got
    there first with a sound entry, keep theirs."""
    publish_dir(tmp, target, keep=lambda t: verify(t) is None)
