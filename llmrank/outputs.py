"""Outputs that never destroy a user's files.

Every command that writes follows three rules:

1. **Check first.** :func:`check_output` runs before any scoring or training: the path must be writable
   (not a directory where a file is due, not under a file, not on a read-only place), must not be one of
   the command's inputs, and, when something is already there, must be one of llmrank's own outputs of
   the same kind. Anything else is refused with the path named; ``--overwrite`` is the explicit way out.
2. **Write beside, then rename.** Files go through :func:`llmrank.data.io.atomic_write_text`; folders are
   built in a temporary sibling (:func:`temp_dir`) and moved into place by :func:`publish_dir`, so a
   reader never sees half an output and a crash leaves the old one whole.
3. **Mark what is ours.** A folder llmrank writes carries :data:`MARKER` (``{"kind": …}``); files are
   recognised by their content (a TREC run tagged ``llmrank…``, a candidates JSON whose first item says
   ``"written_by": "llmrank"``, a teacher run's records).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from llmrank.errors import LlmrankError

MARKER = "llmrank_output.json"
"""Written into every output folder llmrank creates: ``{"kind": "export" | "distill" | …}``."""

WRITTEN_BY = "llmrank"
FILE_KINDS = ("run", "candidates", "teacher")
# older outputs recognised by the file they always carry
LEGACY_MARKERS = {"export": ("llmrank_serve.json",), "distill": ("started.json", "adapter/llmrank_student.json")}
KIND_NAMES = {"run": "a TREC run written by llmrank", "candidates": "a candidates JSON written by llmrank",
              "teacher": "a teacher run (llmrank teach)", "export": "an llmrank export folder",
              "distill": "an llmrank distill folder"}


def _head_line(path: Path, limit: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        head = f.read(limit)
    for raw in head.split(b"\n"):
        if raw.strip():
            return raw.decode("utf-8", errors="replace")
    return ""


def dir_kind(path: Path) -> str | None:
    """The kind recorded in an output folder's marker (or recognised from an older llmrank layout)."""
    marker = path / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8")).get("kind"))
        except (ValueError, OSError, AttributeError):
            return None
    for kind, files in LEGACY_MARKERS.items():
        if any((path / f).is_file() for f in files):
            return kind
    return None


def is_own_output(path: str | Path, kind: str) -> bool:
    """Whether ``path`` is an output llmrank wrote, of ``kind`` (an empty file or folder counts as nothing
    to lose)."""
    p = Path(path)
    if p.is_dir():
        return kind not in FILE_KINDS and (not any(p.iterdir()) or dir_kind(p) == kind)
    if not p.is_file() or kind not in FILE_KINDS:
        return False
    if p.stat().st_size == 0:
        return True
    line = _head_line(p)
    if kind == "run":
        parts = line.split()
        return len(parts) == 6 and parts[1] == "Q0" and parts[5].startswith(WRITTEN_BY)
    if kind == "candidates":
        with open(p, "rb") as f:
            return f'"written_by": "{WRITTEN_BY}"'.encode() in f.read(4096)
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("ranking"), list)


def _same_or_inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


def _probe_writable(path: Path) -> None:
    """Raise unless a file can be created in ``path``'s folder (the first existing one up the tree)."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise LlmrankError(f"{path}: cannot write here, {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".llmrank-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LlmrankError(f"{path}: cannot write in {parent} ({e.strerror or e})") from None


def check_output(path: str | Path, kind: str, overwrite: bool = False, inputs: Iterable[str | Path] = (),
                 resume: bool = False) -> Path:
    """Check an output path before any work; returns it as a :class:`Path`.

    ``kind`` is a file kind (:data:`FILE_KINDS`) or a folder kind (``export``, ``distill`` …). The path is
    refused when it is (or holds) one of ``inputs``, when it exists and is not llmrank's
    own output of this kind (unless ``overwrite``), or when it cannot be written. ``resume`` (teacher runs)
    means the existing file will be appended to, so it must be a teacher run even with ``overwrite``.
    """
    p = Path(path)
    if not str(path).strip():
        raise LlmrankError("the output path is empty")
    real = p.resolve()
    for inp in inputs:
        if str(inp).startswith("hf://"):
            continue
        if _same_or_inside(Path(inp).resolve(), real):
            raise LlmrankError(f"{p}: the output would replace the input {inp}; write it somewhere else")
    file_kind = kind in FILE_KINDS
    if p.exists():
        if file_kind and p.is_dir():
            raise LlmrankError(f"{p}: is a folder; give a file path for the output")
        if not file_kind and not p.is_dir():
            raise LlmrankError(f"{p}: is a file; give a folder path for the output")
        own = is_own_output(p, kind)
        if resume and not own:
            raise LlmrankError(f"{p}: exists and is not {KIND_NAMES[kind]}; llmrank appends to its own teacher runs "
                               "only — give another path")
        if not own and not overwrite:
            raise LlmrankError(f"{p}: exists and is not {KIND_NAMES.get(kind, kind)}; refusing to replace it "
                               "(give another path, or --overwrite to replace it)")
        if file_kind and not os.access(p, os.W_OK):
            raise LlmrankError(f"{p}: the file is not writable")
    _probe_writable(p if file_kind or not p.exists() else p / "x")
    return p


def temp_dir(target: str | Path) -> Path:
    """A fresh, empty folder beside ``target`` to build an output in (renamed into place by :func:`publish_dir`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def publish_dir(tmp: str | Path, target: str | Path, kind: str, info: dict | None = None) -> Path:
    """Mark ``tmp`` as an output of ``kind`` and move it to ``target`` with a rename. An existing ``target``
    (already checked by :func:`check_output`) is moved aside first and removed only once the new one is in
    place."""
    tmp, target = Path(tmp), Path(target)
    (tmp / MARKER).write_text(json.dumps({"kind": kind, **(info or {})}, indent=1), encoding="utf-8")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        if old is not None and not target.exists():
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def mark_dir(path: str | Path, kind: str) -> None:
    """Claim a folder that llmrank fills in place (a training output): write :data:`MARKER` into it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if dir_kind(path) != kind or not (path / MARKER).is_file():
        (path / MARKER).write_text(json.dumps({"kind": kind}, indent=1), encoding="utf-8")
