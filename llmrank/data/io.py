"""Small readers and writers that report the file and line of any malformed record."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from llmrank.errors import LlmrankError


class TextFile:
    """A text file read as UTF-8 (universal newlines, like ``open``), where a byte that is not UTF-8, a damaged
    gzip stream or a read error becomes an :class:`LlmrankError` naming the file and the line."""

    def __init__(self, path: Path):
        self.path = path
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        self._f = io.TextIOWrapper(raw, encoding="utf-8", newline=None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._f.close()

    def _bad_byte(self) -> tuple[int, int, int]:
        """``(line, column, byte)`` of the first byte that is not UTF-8 (the decoder reads ahead in blocks,
        so the error it raises does not say which line)."""
        raw = gzip.open(self.path, "rb") if self.path.suffix == ".gz" else open(self.path, "rb")
        with raw:
            for lineno, line in enumerate(raw, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    return lineno, e.start + 1, line[e.start]
        return 0, 0, 0

    def _fail(self, e: BaseException):
        if isinstance(e, UnicodeDecodeError):
            try:
                lineno, col, byte = self._bad_byte()
            except (OSError, EOFError, zlib.error):
                lineno, col, byte = 0, 0, e.object[e.start]
            where = f"{self.path}:{lineno}" if lineno else str(self.path)
            raise LlmrankError(f"{where}: not UTF-8 text (byte 0x{byte:02x} at column {col}); save the file as "
                               "UTF-8") from None
        if isinstance(e, IsADirectoryError):
            raise LlmrankError(f"{self.path}: is a folder, expected a file") from None
        raise LlmrankError(f"{self.path}: cannot read it ({type(e).__name__}: {e})") from None

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                line = self._f.readline()
            except (UnicodeDecodeError, OSError, EOFError, zlib.error) as e:  # not UTF-8; a damaged .gz
                self._fail(e)
                raise
            if not line:
                return
            yield line

    def read(self, n: int = -1) -> str:
        try:
            return self._f.read(n)
        except (UnicodeDecodeError, OSError, EOFError, zlib.error) as e:
            self._fail(e)
            raise


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


def require_text(record: dict, key: str, where: str) -> str:
    """``record[key]`` as a string with some text in it: an empty or whitespace-only query means nothing."""
    value = require(record, key, where, str)
    if not value.strip():
        raise LlmrankError(f"{where}: key '{key}' is {'empty' if not value else 'only whitespace'}; "
                           "a query needs text to rank documents against")
    return value


def whole_grade(value, where: str) -> int:
    """A relevance grade: a whole, finite number (``2`` or ``2.0``); a fraction, NaN or a bool is refused,
    never truncated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LlmrankError(f"{where}: a relevance grade is a whole number, got {value!r}")
    if not math.isfinite(value) or value != int(value):
        raise LlmrankError(f"{where}: a relevance grade is a whole number, got {value!r}")
    return int(value)


def output_mode(path: str | Path) -> int:
    """The mode a file written to ``path`` gets: the replaced file's own, else what ``open()`` would give
    (0666 less the umask) — not the 0600 of a temporary file."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (the mode of the file it replaces kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, output_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def same_paths(value):
    """``value`` with every string that names an existing local path (it holds a ``/``) replaced by its
    resolved absolute path, so that ``../shared/data/scifact`` and ``/work/shared/data/scifact`` (one folder
    spelled from two places) give one stage hash and a run is not redone for the spelling of its data."""
    if isinstance(value, dict):
        return {k: same_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [same_paths(v) for v in value]
    if isinstance(value, str) and "/" in value and "://" not in value and "\n" not in value:
        try:  # prose with a slash (an eval note) is no path: too long a name is an OSError
            p = Path(value).expanduser()
            if p.exists():
                return str(p.resolve())
        except (OSError, ValueError):
            pass
    return value
