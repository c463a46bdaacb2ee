"""Outputs that never destroy a user's files.

Every command that writes follows three rules:

1. **Check first.** :func:`check_output` runs before any scoring or training: the path must be writable
   (not a directory where a file is due, not under a file, not on a read-only place), must not be one of
   the command's inputs, and, when something is already there, must be one of llmrank's own outputs of
   the same kind. Anything else is refused with the path named; ``--overwrite`` is the explicit way out.
2. **Write beside, then rename.** Files go through :func:`llmrank.data.io.atomic_write_text`; folders are
   built in a temporary sibling (:func:`temp_dir`) and moved into place by :func:`publish_dir`, so a
   reader never sees half an output and a crash leaves the old one whole.
3. **Record what is ours.** A folder llmrank writes carries :data:`MARKER`: its kind and every file
   llmrank wrote there (size, mtime, sha256); a later command replaces only those and refuses, naming them,
   the files it did not write (see :func:`foreign_files`). A replaced file keeps its mode. Single files are
   recognised by their content (a TREC run tagged ``llmrank…``, a candidates JSON whose first item says
   ``"written_by": "llmrank"``, a teacher run's records). Nothing is ever written over a device node.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from llmrank.errors import LlmrankError

MARKER = "llmrank_output.json"
"""Written into every output folder llmrank creates: ``{"kind": "export" | "distill" | …}``."""

WRITTEN_BY = "llmrank"
FILE_KINDS = ("run", "candidates", "teacher")
# older outputs recognised by the file they always carry
LEGACY_MARKERS = {"export": ("llmrank_serve.json",), "distill": ("started.json", "adapter/llmrank_student.json")}
KIND_NAMES = {"recipe-run": "an llmrank run folder", "compare": "an llmrank compare folder", "run": "a TREC run written by llmrank", "candidates": "a candidates JSON written by llmrank",
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
        return kind not in FILE_KINDS and not foreign_files(p, kind)
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
                 resume: bool = False, can_overwrite: bool = True) -> Path:
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
    if os.path.lexists(p) and _special(os.stat(p) if p.exists() else p.lstat()):
        raise LlmrankError(f"{p}: is a device node, FIFO or socket, not a regular file; llmrank never writes over "
                           "one (not even with --overwrite) — give another path")
    if p.exists() and not file_kind and p.is_dir():
        check_dir(p, kind, overwrite, can_overwrite)
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
        if not file_kind and overwrite:
            check_dir(p, kind, overwrite=True)  # even so, never a device node inside
        if file_kind and not os.access(p, os.W_OK):
            raise LlmrankError(f"{p}: the file is not writable")
    _probe_writable(p if file_kind or not p.exists() else p / "x")
    return p


# -- ownership records ----------------------------------------------------------------------------------
# A folder llmrank writes in place (a training output, a compare folder, a run root) holds MARKER with
# ``{"kind", "complete", "files": {relative path: {"size", "mtime_ns", "sha256"?}}}``: what llmrank wrote
# there. A later command replaces only those files; any other file (or one changed since) is the user's,
# and the command is refused naming it. ``complete`` is false while a command is writing: the files an
# interrupted command left under the kind's own top-level names (OWN_NAMES) are then llmrank's too.

OWN_NAMES = {
    "distill": ("adapter", "merged", "checkpoint-*", "started.json", "pairs.json", "runs"),
    "refine": ("adapter", "merged", "checkpoint-*", "started.json", "pairs.json", "runs"),
    "compare": ("cells", "compare.md", "compare.json", "*.png"),
    "recipe-run": ("generate", "teach", "distill", "refine", "eval", "export", "report.md", "report.json", "*.png"),
}
LOCK = ".llmrank-lock"
"""The lock file of a folder llmrank is writing in place (see :class:`FolderLock`)."""
HASH_LIMIT = 64 << 20
"""Files up to this size also record a sha256 (a touched but unchanged file is still llmrank's); larger ones
(model weights) are recognised by size and mtime alone, which costs nothing."""


def _special(st: os.stat_result) -> bool:
    import stat

    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (the one file checksum of outputs, caches and models)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entries(folder: Path) -> dict[str, os.stat_result]:
    """``{relative path: lstat}`` of every file, link and special file under ``folder`` (folders themselves,
    the marker and llmrank's hidden scratch files aside)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in files + [d for d in dirs if os.path.islink(base / d)]:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            if rel == MARKER or name == LOCK or name.startswith((".llmrank-probe-", f".{MARKER}")):
                continue
            out[rel] = p.lstat()
    return out


def _file_record(path: Path, st: os.stat_result) -> dict:
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if st.st_size <= HASH_LIMIT:
        rec["sha256"] = file_sha256(path)
    return rec


def read_record(folder: Path) -> dict | None:
    try:
        rec = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _own_name(rel: str, kind: str) -> bool:
    import fnmatch

    top = rel.split("/", 1)[0]
    return any(fnmatch.fnmatchcase(top, pat) for pat in OWN_NAMES.get(kind, ()))


def foreign_files(folder: str | Path, kind: str) -> list[str]:
    """The files under ``folder`` that llmrank did not record writing there as ``kind`` (or that changed
    since), sorted; device nodes, FIFOs and sockets always count."""
    import stat

    folder = Path(folder)
    entries = _entries(folder)
    rec = read_record(folder)
    if rec is None or rec.get("kind") != kind:
        files, complete = {}, True
        if rec is None and kind == "recipe-run" and any((folder / s / "manifest.json").is_file() for s in OWN_NAMES["recipe-run"][:6]):
            complete = False  # a run folder from before ownership records: its stage folders are llmrank's
    else:
        files, complete = rec.get("files") or {}, bool(rec.get("complete", True))
    out = []
    for rel, st in entries.items():
        if _special(st):
            out.append(rel)
            continue
        if kind == "recipe-run" and rec is not None and rec.get("kind") == kind and _own_name(rel, kind):
            continue  # a run folder's stages are the runner's (their manifests say what to run again)
        if kind == "compare" and rec is not None and rec.get("kind") == kind and rel.split("/", 1)[0] == "cells":
            continue  # a compare folder's cells are its resumable rankings (a killed cell is completed, not refused)
        known = files.get(rel)
        if isinstance(known, dict) and stat.S_ISREG(st.st_mode):
            if known.get("size") == st.st_size and (known.get("mtime_ns") == st.st_mtime_ns or (
                    "sha256" in known and known["sha256"] == file_sha256(folder / rel))):
                continue
            out.append(rel)  # changed since llmrank wrote it
            continue
        if not complete and _own_name(rel, kind):
            continue
        out.append(rel)
    return sorted(out)


def _name_files(folder: Path, files: list[str], limit: int = 4) -> str:
    shown = ", ".join(str(folder / f) for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def check_dir(path: str | Path, kind: str, overwrite: bool = False, can_overwrite: bool = True) -> set[str]:
    """Check an output folder llmrank fills in place: refuse (naming them) the files in it that llmrank did not
    record writing, unless ``overwrite``; never a device node. Returns those files (kept, and never recorded
    as llmrank's)."""
    p = Path(path)
    if not p.is_dir():
        return set()
    foreign = foreign_files(p, kind)
    special = [f for f in foreign if _special((p / f).lstat())]
    if special:
        raise LlmrankError(f"{p}: holds {_name_files(p, special)}, not a regular file; llmrank never writes over a "
                           "device node, FIFO or socket (not even with --overwrite) — give another folder")
    if foreign and not overwrite:
        raise LlmrankError(f"{p}: holds files llmrank did not write: {_name_files(p, foreign)}; refusing to write "
                           "into it (move them, or give another folder" + (", or --overwrite to write beside them"
                                                                          if can_overwrite else "") + ")")
    return set(foreign)


def begin_dir(path: str | Path, kind: str) -> None:
    """Mark ``path`` as being written by llmrank (the record kept, ``complete`` false) before a command fills it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    rec = read_record(p)
    files = (rec.get("files") or {}) if rec and rec.get("kind") == kind else {}
    _write_marker(p, {"kind": kind, "complete": False, "files": files})


def record_dir(path: str | Path, kind: str, keep: set[str] = frozenset(), info: dict | None = None) -> None:
    """Record every file now under ``path`` (but ``keep``, the user's) as written by llmrank. The record is
    rewritten only when it changes (a run that found everything done leaves the folder as it was)."""
    p = Path(path)
    old = read_record(p) or {}
    known = old.get("files") if old.get("kind") == kind and isinstance(old.get("files"), dict) else {}
    files = {}
    for rel, st in sorted(_entries(p).items()):
        if rel in keep or _special(st) or os.path.islink(p / rel):
            continue
        prev = known.get(rel)
        same = isinstance(prev, dict) and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns
        files[rel] = prev if same else _file_record(p / rel, st)
    rec = {"kind": kind, **(info or {}), "complete": True, "files": files}
    if rec != old:
        _write_marker(p, rec)


def _write_marker(folder: Path, rec: dict) -> None:
    """Write the record beside itself and rename it into place (a crash leaves the old one whole)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MARKER}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(rec, indent=1, sort_keys=True))
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / MARKER)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_dir(target: str | Path, sweep: bool = False) -> Path:
    """A fresh, empty folder ``.<name>.tmp-<pid>-<hex>`` beside ``target`` to build it in (moved into place
    by :func:`publish_dir`); one per builder, never shared. With ``sweep``, such folders left by processes
    that no longer run are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if sweep:
        for old in target.parent.glob(prefix + "*"):
            try:
                pid = int(old.name[len(prefix):].split("-")[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                shutil.rmtree(old, ignore_errors=True)
    tmp = target.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def publish_dir(tmp: str | Path, target: str | Path, kind: str | None = None, info: dict | None = None,
                keep: Callable[[Path], bool] | None = None) -> Path:
    """Move the finished folder ``tmp`` to ``target`` with one rename, so ``target`` is never half-written:
    the one way llmrank puts a folder in place (outputs, exports, cache entries, prepared models).

    With ``kind``, ``tmp`` is first marked as an llmrank output of that kind (:data:`MARKER`). An existing
    ``target`` (already checked by :func:`check_output`) is moved aside and removed only once the new one is
    in place; when ``keep(target)`` says it is a sound copy finished by another process (a shared cache), it
    stays and ``tmp`` is removed instead."""
    tmp, target = Path(tmp), Path(target)
    if keep is not None and target.exists() and keep(target):
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    if kind is not None:
        users: set[str] = set()
        if target.is_dir():
            for rel in _entries(tmp):  # a file llmrank replaces keeps the mode its owner gave it
                try:
                    os.chmod(tmp / rel, os.stat(target / rel).st_mode & 0o7777)
                except OSError:
                    pass
            # the user's files (there only with --overwrite) move into the new folder: replaced only where
            # llmrank writes a file of the same name
            for rel in foreign_files(target, kind):
                if not os.path.lexists(tmp / rel):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(target / rel, tmp / rel)
                    users.add(rel)
        record_dir(tmp, kind, keep=users, info=info)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    try:
        tmp.rename(target)
    except BaseException as e:
        if old is not None and not target.exists():
            old.rename(target)
        if isinstance(e, OSError) and keep is not None and target.exists() and keep(target):
            shutil.rmtree(tmp, ignore_errors=True)  # another process got there first with a sound copy
            return target
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def mark_dir(path: str | Path, kind: str) -> None:
    """Claim a folder that llmrank fills in place (a training output): :func:`begin_dir`."""
    begin_dir(path, kind)


def _launch_rank() -> int:
    """This process's rank in a distributed launch (torchrun / accelerate set RANK), 0 outside one."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``<folder>/.llmrank-lock`` that holds the writer's pid.

    A second llmrank process that would write the same folder (two ``llmrank run`` into one ``--out``, two
    ``distill -o`` into one folder) is refused at once with a line naming the folder and the pid holding it.
    The kernel drops the lock when its process exits, however it exits (even ``kill -9``), so a lock file a
    dead process left behind never blocks: it is stale by construction, and the pid in it is reported as
    gone. Use as a context manager."""

    def __init__(self, folder: str | Path, what: str, lock_file: str | Path | None = None):
        self.folder, self.what, self.fd = Path(folder), what, -1
        self.path = Path(lock_file) if lock_file is not None else self.folder / LOCK

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks
            return self
        if _launch_rank() > 0:  # the other processes of one `accelerate launch`: its rank 0 holds the lock for them
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise LlmrankError(f"{self.folder}: another llmrank process (pid {holder}) is writing here ({self.what}); "
                               "wait for it to finish, or give another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a waiting writer)
            self.fd = -1

