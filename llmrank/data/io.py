"""Small readers and writers that report the file and line of any malformed record."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from llmrank.errors import LlmrankError


class TextFile:
    """A text file read line by line as UTF-8, where a byte that is not UTF-8, a damaged gzip stream or a
    read error becomes an :class:`LlmrankError` naming the file and the line."""

    def __init__(self, path: Path):
        self.path = path
        self._raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        self.lineno = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._raw.close()

    def _fail(self, e: BaseException, lineno: int):
        if isinstance(e, UnicodeDecodeError):
            raise LlmrankError(f"{self.path}:{lineno}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at column "
                               f"{e.start + 1}); save the file as UTF-8") from None
        if isinstance(e, IsADirectoryError):
            raise LlmrankError(f"{self.path}: is a folder, expected a file") from None
        raise LlmrankError(f"{self.path}: cannot read it ({type(e).__name__}: {e})") from None

    def _next_raw(self) -> bytes:
        try:
            return self._raw.readline()
        except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz, an I/O error
            self._fail(e, self.lineno + 1)
            raise

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self._next_raw()
            if not raw:
                return
            self.lineno += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self._fail(e, self.lineno)

    def read(self, n: int = -1) -> str:
        """The rest of the file (or about ``n`` characters of it, whole lines)."""
        out: list[str] = []
        size = 0
        for line in self:
            out.append(line)
            size += len(line)
            if 0 <= n <= size:
                break
        text = "".join(out)
        return text if n < 0 else text[:n]


def open_text(path: str | Path) -> TextFile:
    """Open a text file for reading, transparently gunzipping ``*.gz``; a missing file, a folder, bytes
    that are not UTF-8 and a damaged gzip stream are user errors naming the file (and line)."""
    path = Path(path)
    if path.is_dir():
        raise LlmrankError(f"{path}: is a folder, expected a file")
    if not path.is_file():
        raise LlmrankError(f"{path}: file not found")
    try:
        return TextFile(path)
    except OSError as e:
        raise LlmrankError(f"{path}: cannot open it ({e.strerror or e})") from None


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
