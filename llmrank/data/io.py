"""Small readers and writers that report the file and line of any malformed record."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from llmrank.errors import LlmrankError


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``*.gz``; a missing file is a user error."""
    path = Path(path)
    if not path.is_file():
        raise LlmrankError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-empty line; a bad line names file and line."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LlmrankError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
            if not isinstance(record, dict):
                raise LlmrankError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def require(record: dict, key: str, where: str, kind: type | tuple[type, ...] = str):
    """``record[key]``, checked for presence and type; the error names ``where`` (file:line) and the key."""
    if key not in record:
        raise LlmrankError(f"{where}: missing key '{key}'")
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise LlmrankError(f"{where}: key '{key}' should be {names}, got {type(value).__name__}")
    return value


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
