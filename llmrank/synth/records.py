"""An append-only JSONL file of keyed records, written as teacher runs are: each record is one line, flushed
and fsynced before the next piece of work starts; a torn last line (the process was killed mid-write) is
cut off when the file is opened again; a second writer is refused by an advisory lock. So a killed run
loses at most the records in flight, and a rerun skips every key already written."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)


def scan_records(path: Path, required: tuple[str, ...] = ("key",)) -> tuple[list[dict], int, int]:
    """``(records, bytes of whole valid lines, torn bytes)``; only the last line may be torn, a bad line
    elsewhere is an error naming it."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()
    records, good = [], 0
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1 and not tail
        if raw.strip():
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict) or any(k not in rec for k in required):
                    raise ValueError(f"a record is a JSON object with keys {', '.join(required)}")
            except (UnicodeDecodeError, ValueError) as e:
                if last:
                    return records, good, len(data) - good
                raise LlmrankError(f"{path}:{i + 1}: not a record ({e}); only the last line can be torn by an "
                                   "interrupted run — fix or remove this line") from None
            records.append(rec)
        good += len(raw) + 1
    return records, good, len(data) - good


def read_records(path: str | Path, required: tuple[str, ...] = ("key",)) -> list[dict]:
    """The records of a file without modifying it (a torn last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LlmrankError(f"{path}: file not found")
    return scan_records(path, required)[0]


class RecordLog:
    """An append-only record file opened for writing (repaired, locked, indexed by ``key``)."""

    def __init__(self, path: str | Path, required: tuple[str, ...] = ("key",)):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:
                pass
            except BlockingIOError:
                raise LlmrankError(f"{self.path}: another process is writing this file") from None
            records, good, torn = scan_records(self.path, required)
            if torn:
                os.ftruncate(self.fd, good)
                os.fsync(self.fd)
                log.warning("%s: dropped a torn last record (%d bytes) left by an interrupted run", self.path, torn)
        except BaseException:
            os.close(self.fd)
            raise
        self.repaired_bytes = torn
        self.records: dict[str, dict] = {}
        for r in records:
            self.records.setdefault(r["key"], r)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        n = os.write(self.fd, line)
        while n < len(line):  # a short write (disk full, signal): finish it, as the teacher file does
            n += os.write(self.fd, line[n:])
        os.fsync(self.fd)
        self.records.setdefault(record["key"], record)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
