"""Teacher runs: an expensive ranker's output, kept as one JSON record per query in an append-only file.

A record (one line of ``teacher.jsonl``)::

    {"qid": "q1", "key": "<sha256>", "method": "listwise", "model": "…", "prompt": "rank_gpt@1",
     "reranker": {…cache_key…}, "query": "…", "candidates": [first-stage ids, in the order given],
     "ranking": [the same ids in teacher order], "scores": [aligned, higher is better] | null,
     "rationales": {docid: explanation}   # only when the method writes them
     "rationalized": false,               # with rationales: whether the teacher was given the judged labels
                                          # and asked to explain them (rationale option rationalize)
     "cost": {"calls": 20, "prompt_tokens": …, "completion_tokens": …, "seconds": …, <method counts>},
     "extra": {…}}                        # only when the method reports more (first: "windows", each
                                          # window's docids and identifier logprobs, the ListNet/KL target;
                                          # the passages option: "passages", each document's window scores)

``key`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the query text, the candidate
ids in order and the reranker's ``cache_key`` (method, prompt, model, options): a record answers exactly
that question, so a changed prompt, model, method, option or candidate list is a new key.

Crash safety. Each record is written with ONE ``write()`` of the full line (newline included) on an
``O_APPEND`` descriptor, then ``fsync``: a record counts once its newline is on disk, so a SIGKILL or
power cut loses at most the record in flight. Opening the file again (:class:`TeacherRun`) truncates a
torn last line (no newline, or not JSON) away and logs it; a duplicate key keeps its first record.
:func:`run_teacher` skips queries whose key is already in the file, so rerunning the same command resumes.

Fusion (:func:`fuse_runs`): reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009) or a Borda
count over several teacher runs, written as a teacher run too (method ``fusion:rrf(k=60)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from llmrank.data.types import Candidates, RankingData
from llmrank.errors import LlmrankError

log = logging.getLogger(__name__)

COST_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "seconds")
FUSION_METHODS = ("rrf", "borda")


# -- keys and records ------------------------------------------------------------------------------------

def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def teacher_key(query: str, docids: Iterable[str], reranker_key: dict) -> str:
    """SHA-256 of the canonical JSON of (query text, candidate ids in order, reranker cache key)."""
    material = {"query": query, "candidates": [str(d) for d in docids], "reranker": reranker_key}
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


def _plain_cost(cost) -> dict:
    """A ranking's cost Counter as JSON numbers, with the four common fields always present."""
    out: dict = {k: 0 for k in COST_FIELDS}
    for k, v in dict(cost or {}).items():
        v = float(v)
        out[str(k)] = int(v) if v.is_integer() and k != "seconds" else v
    out["seconds"] = round(float(out["seconds"]), 6)
    return out


def _has_real_scores(reranker, ranking) -> bool:
    """Whether ``ranking.scores`` are the method's own scores rather than placeholders for an order.

    A reranker says so with a ``has_scores`` attribute; without one, scores that are exactly the
    ``ranking_from_order`` placeholders (n, n-1, …, 1) count as an order only.
    """
    declared = getattr(reranker, "has_scores", None)
    if declared is not None:
        return bool(declared)
    n = len(ranking.scores)
    return not (n > 1 and all(float(s) == float(n - i) for i, s in enumerate(ranking.scores)))


def make_record(qid: str, query: str, candidates: list[str], key: str, reranker_key: dict, ranking,
                with_scores: bool = True) -> dict:
    rec = {
        "qid": qid,
        "key": key,
        "method": reranker_key.get("method"),
        "model": reranker_key.get("model"),
        "prompt": reranker_key.get("prompt"),
        "reranker": reranker_key,
        "query": query,
        "candidates": list(candidates),
        "ranking": list(ranking.docids),
        "scores": [float(s) for s in ranking.scores] if with_scores else None,
        "cost": _plain_cost(ranking.cost),
    }
    if ranking.rationales is not None:
        rec["rationales"] = dict(ranking.rationales)
        rec["rationalized"] = bool(reranker_key.get("rationalize", False))
    if ranking.extra:
        rec["extra"] = ranking.extra
    return rec


def _check_record(rec, where: str) -> dict:
    if not isinstance(rec, dict):
        raise LlmrankError(f"{where}: a teacher record is a JSON object, got {type(rec).__name__}")
    for k, typ in (("qid", str), ("key", str), ("ranking", list)):
        if not isinstance(rec.get(k), typ):
            raise LlmrankError(f"{where}: teacher record lacks '{k}' ({typ.__name__})")
    return rec


def _not_a_record(path: Path, lineno: int, raw: bytes, why: str) -> LlmrankError:
    """The error for a complete line that is not a teacher record (a TREC run or a note is named as such)."""
    text = raw.decode("utf-8", errors="replace").strip()
    parts = text.split()
    if len(parts) == 6 and parts[1] == "Q0":
        what = "a TREC run line (qid Q0 docid rank score tag), not a teacher record"
    else:
        what = f"not a teacher record ({why})"
    hint = ("a teacher run holds one JSON record per line, as `llmrank teach` writes them" if lineno == 1 else
            "only an unterminated last line is a torn record an interrupted run left; fix or remove this line")
    return LlmrankError(f"{path}:{lineno}: {what}; {hint}")


def _scan(path: Path) -> tuple[list[tuple[int, dict]], int, int]:
    """Parse a teacher file: ``(records with line numbers, bytes of whole valid lines, torn bytes)``.

    Only an unterminated last line (no newline) can be torn: an interrupted writer leaves the start of a
    record (``{"…``) there. Every complete line must be a record, and an unterminated one that is not the
    start of a JSON object is not something a writer leaves either: both are errors naming the line.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records: list[tuple[int, dict]] = []
    good = 0
    for i, raw in enumerate(lines):
        lineno = i + 1
        if raw.strip(b" \t\r\0"):
            try:
                rec = _check_record(json.loads(raw.decode("utf-8")), f"{path}:{lineno}")
            except (UnicodeDecodeError, json.JSONDecodeError, LlmrankError) as e:
                raise _not_a_record(path, lineno, raw, e.args[0] if isinstance(e, LlmrankError)
                                    else f"not JSON: {e}") from None
            records.append((lineno, rec))
        good += len(raw) + 1
    if tail.strip(b" \t\r\0"):
        lineno = len(lines) + 1
        try:
            rec = _check_record(json.loads(tail.decode("utf-8")), f"{path}:{lineno}")
        except (UnicodeDecodeError, json.JSONDecodeError, LlmrankError):
            if not tail.lstrip().startswith(b'{"'):
                raise _not_a_record(path, lineno, tail, "not the start of a JSON record") from None
            return records, good, len(data) - good  # the start of a record: torn
        records.append((lineno, rec))  # whole but unterminated (a file made by hand): kept
        return records, len(data), 0
    return records, good, len(data) - good


def _first_by_key(records: list[tuple[int, dict]], path) -> tuple[dict[str, dict], int]:
    by_key: dict[str, dict] = {}
    dups = 0
    for _, rec in records:
        if rec["key"] in by_key:
            dups += 1
            continue
        by_key[rec["key"]] = rec
    if dups:
        log.info("%s: %d duplicate records ignored (the first of each key is kept)", path, dups)
    return by_key, dups


class TeacherRun:
    """An append-only teacher file opened for writing: repaired, indexed by key, locked against a second
    writer. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._lock()
            if created:
                _fsync_dir(self.path.parent)
            records, good, torn = _scan(self.path)
            if torn:
                os.ftruncate(self.fd, good)
                os.fsync(self.fd)
                log.warning("%s: dropped a torn last record (%d bytes) left by an interrupted run; "
                            "its query will be run again", self.path, torn)
            self.repaired_bytes = torn
            if not torn and os.fstat(self.fd).st_size and os.pread(self.fd, 1, os.fstat(self.fd).st_size - 1) != b"\n":
                os.write(self.fd, b"\n")  # a whole last record without its newline: end it before appending
            self.records, self.duplicates = _first_by_key(records, self.path)
        except BaseException:
            os.close(self.fd)
            raise
        self.by_qid: dict[str, dict] = {}
        for rec in self.records.values():
            self.by_qid.setdefault(rec["qid"], rec)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LlmrankError(f"{self.path}: another process is writing this teacher run") from None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> bool:
        """Write ``record`` as one line (one ``write()``, then ``fsync``); False if its key is already here."""
        _check_record(record, str(self.path))
        if record["key"] in self.records:
            return False
        line = (json.dumps(record, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
        n = os.write(self.fd, line)
        while n < len(line):  # a short write (disk full, signal): finish it; a crash here leaves a torn line
            n += os.write(self.fd, line[n:])
        os.fsync(self.fd)
        self.records[record["key"]] = record
        self.by_qid.setdefault(record["qid"], record)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_teacher_run(path: str | Path) -> dict[str, dict]:
    """``{qid: record}`` of a teacher file, without modifying it: a torn last line is skipped (logged),
    a duplicate key keeps its first record; two configurations for one query are an error."""
    path = Path(path)
    if not path.is_file():
        raise LlmrankError(f"{path}: teacher run not found")
    records, _, torn = _scan(path)
    if torn:
        log.warning("%s: ignoring a torn last record (%d bytes); `llmrank teach` on this file repairs it", path, torn)
    by_key, _ = _first_by_key(records, path)
    out: dict[str, dict] = {}
    for rec in by_key.values():
        if rec["qid"] in out:
            raise LlmrankError(f"{path}: query '{rec['qid']}' has records of two different teacher configurations "
                               f"({_describe(out[rec['qid']])} and {_describe(rec)}); keep one run per file")
        out[rec["qid"]] = rec
    return out


def write_teacher_run(records: dict[str, dict] | Iterable[dict], path: str | Path) -> None:
    """Write records as a fresh teacher file (atomically: a temporary file, then a rename)."""
    from llmrank.data.io import atomic_write_text

    recs = list(records.values()) if isinstance(records, dict) else list(records)
    for r in recs:
        _check_record(r, str(path))
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in recs))


def teacher_candidates(run: dict[str, dict]) -> Candidates:
    """A teacher run as a reranked run: each query's ranking with its scores (or n, n-1, … when the
    method gives an order only)."""
    out = {}
    for qid, rec in run.items():
        ranking = rec["ranking"]
        scores = rec.get("scores")
        if not scores or len(scores) != len(ranking):
            scores = [float(len(ranking) - i) for i in range(len(ranking))]
        try:
            bad = next((s for s in scores if not math.isfinite(float(s))), None)
        except (TypeError, ValueError):
            raise LlmrankError(f"teacher record of query {qid}: 'scores' must be numbers") from None
        if bad is not None:
            raise LlmrankError(f"teacher record of query {qid}: score {bad} is not a finite number")
        if len(set(ranking)) != len(ranking):
            dup = next(d for d in ranking if ranking.count(d) > 1)
            raise LlmrankError(f"teacher record of query {qid}: doc {dup} is ranked twice")
        out[qid] = list(zip(ranking, scores))
    return Candidates(out)


def _describe(rec: dict) -> str:
    return f"method={rec.get('method')}, model={rec.get('model')}, prompt={rec.get('prompt')}"


# -- running a teacher ------------------------------------------------------------------------------------

def run_teacher(reranker, data: RankingData, candidates: Candidates, top_k: int, path: str | Path,
                progress: bool | None = None, require_rationales: bool = False) -> dict:
    """Rank the top-``top_k`` candidates of every query with ``reranker`` into the teacher file ``path``.

    Queries whose key is already in the file are skipped; each new record is on disk (fsynced) before the
    next query starts. Returns ``{"queries", "done", "skipped", "repaired_bytes", "cost", "cost_per_query",
    "path"}`` where the costs cover the queries run now. A query already in the file under another key
    (other prompt, model, method or candidates) is an error: one file holds one teacher configuration.
    """
    rkey = reranker.cache_key
    rkey = json.loads(canonical_json(rkey))  # what the file will hold (tuples -> lists …)
    qids = [q for q in candidates.qids() if q in data.queries]
    missing = [q for q in candidates.qids() if q not in data.queries]
    if missing:
        log.warning("%d candidate queries have no query text and are skipped (first: %s)", len(missing), missing[0])
    with TeacherRun(path) as run:
        keys, todo = {}, {}
        skipped = 0
        for qid in qids:
            head = candidates.docids(qid)[:top_k]
            key = teacher_key(data.queries[qid].text, head, rkey)
            keys[qid] = (key, head)
            if key in run:
                skipped += 1
                continue
            if qid in run.by_qid:
                raise LlmrankError(_conflict(run.path, qid, run.by_qid[qid], rkey, data.queries[qid].text, head))
            todo[qid] = candidates[qid][:top_k]
        stats = {"path": str(run.path), "queries": len(qids), "done": 0, "skipped": skipped,
                 "repaired_bytes": run.repaired_bytes}
        cost: Counter = Counter()

        def write(qid, ranking):
            if require_rationales and ranking.docids and not ranking.rationales:
                raise LlmrankError(f"method '{rkey.get('method')}' gave no rationales for query {qid}; "
                                   "use a method that writes them (--method rationale)")
            key, head = keys[qid]
            rec = make_record(qid, data.queries[qid].text, head, key, rkey, ranking,
                              with_scores=_has_real_scores(reranker, ranking))
            run.append(rec)
            stats["done"] += 1
            cost.update(rec["cost"])

        if todo:
            reranker.rerank_all(data, Candidates(todo), top_k, progress=progress, on_ranking=write)
    n = max(stats["done"], 1)
    stats["cost"] = {k: float(v) for k, v in cost.items()}
    stats["cost_per_query"] = {k: float(v) / n for k, v in cost.items()}
    return stats


def _conflict(path, qid, old: dict, rkey: dict, query: str, head: list[str]) -> str:
    what = []
    if old.get("reranker") != rkey:
        a, b = old.get("reranker") or {}, rkey
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        what.append("reranker " + ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff))
    if old.get("query") != query:
        what.append("query text")
    if old.get("candidates") != head:
        what.append("candidate list")
    return (f"{path}: query '{qid}' is already there for another configuration ({'; '.join(what) or 'other key'}); "
            "one file holds one teacher configuration — write to a new file (-o)")


# -- fusion -----------------------------------------------------------------------------------------------

def fuse_lists(lists: list[list[str]], method: str = "rrf", k: float = 60, weights: list[float] | None = None
               ) -> list[tuple[str, float]]:
    """Fuse ranked lists of ids into one ``[(docid, score)]``, best first, duplicates merged.

    - ``rrf``: score(d) = Σ_i w_i / (k + rank_i(d)), ranks from 1 (Cormack et al., 2009); a list that
      lacks d adds nothing.
    - ``borda``: with m distinct ids over all lists, the id at rank r of a list gets w_i · (m − r + 1)
      points (the top one m, …); a list that lacks d gives it 0.

    Ties keep first-appearance order (the first list's order, then ids new in later lists).
    """
    _check_fusion(method, k, weights, len(lists))
    if weights is None:
        weights = [1.0] * len(lists)
    order: dict[str, int] = {}
    for lst in lists:
        for d in lst:
            order.setdefault(d, len(order))
    m = len(order)
    score = dict.fromkeys(order, 0.0)
    for lst, w in zip(lists, weights):
        seen = set()
        for r, d in enumerate(lst, 1):
            if d in seen:  # a list naming an id twice counts its first rank
                continue
            seen.add(d)
            score[d] += w / (k + r) if method == "rrf" else w * (m - r + 1)
    ranked = sorted(order, key=lambda d: (-score[d], order[d]))
    return [(d, score[d]) for d in ranked]


def _check_fusion(method: str, k: float, weights: list[float] | None, n: int) -> None:
    if method not in FUSION_METHODS:
        raise LlmrankError(f"unknown fusion method '{method}' (one of {', '.join(FUSION_METHODS)})")
    if weights is not None:
        if len(weights) != n:
            raise LlmrankError(f"{len(weights)} weights for {n} runs; give one weight per run")
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise LlmrankError("fusion weights must be finite and non-negative")
        if not any(w > 0 for w in weights):
            raise LlmrankError("fusion weights are all 0: every document would score 0; give at least one run a "
                               "weight > 0")
    if method == "rrf" and not (math.isfinite(k) and k >= 0):
        raise LlmrankError("the RRF constant k must be a number ≥ 0")


def fusion_name(method: str, k: float = 60, weights: list[float] | None = None) -> str:
    args = [f"k={k:g}"] if method == "rrf" else []
    if weights is not None:
        args.append("weights=" + "/".join(f"{w:g}" for w in weights))
    return f"fusion:{method}({','.join(args)})"


def fuse_runs(runs: list[dict[str, dict]], method: str = "rrf", k: float = 60,
              weights: list[float] | None = None) -> dict[str, dict]:
    """Fuse several teacher runs (``{qid: record}``) query by query into one teacher run.

    Every query of any run is fused from the runs that have it (a warning counts the queries some runs
    lack). The fused record's key hashes the input keys and the fusion settings; its cost is the sum of
    its inputs' costs; ``inputs`` lists each input's method, model and key.
    """
    if not runs:
        raise LlmrankError("nothing to fuse: give at least one teacher run")
    _check_fusion(method, k, weights, len(runs))
    name = fusion_name(method, k, weights)
    qids: dict[str, None] = {}
    for run in runs:
        qids.update(dict.fromkeys(run))
    partial = 0
    out: dict[str, dict] = {}
    for qid in qids:
        present = [(i, run[qid]) for i, run in enumerate(runs) if qid in run]
        if len(present) < len(runs):
            partial += 1
        w = [weights[i] for i, _ in present] if weights is not None else None
        fused = fuse_lists([rec["ranking"] for _, rec in present], method, k, w)
        cost: Counter = Counter()
        for _, rec in present:
            cost.update({c: v for c, v in (rec.get("cost") or {}).items() if isinstance(v, (int, float))})
        inputs = [{"run": i, "method": rec.get("method"), "model": rec.get("model"), "key": rec["key"]}
                  for i, rec in present]
        settings = {"fusion": method, "k": k if method == "rrf" else None, "weights": w}
        key = hashlib.sha256(canonical_json({"inputs": [x["key"] for x in inputs], **settings}).encode()).hexdigest()
        first = present[0][1]
        cands: dict[str, None] = {}
        for _, rec in present:
            cands.update(dict.fromkeys(rec.get("candidates") or rec["ranking"]))
        models = sorted({str(x["model"]) for x in inputs if x["model"]})
        out[qid] = {
            "qid": qid, "key": key, "method": name, "model": "+".join(models) or None, "prompt": None,
            "reranker": {"method": name, **settings}, "query": first.get("query"), "candidates": list(cands),
            "ranking": [d for d, _ in fused], "scores": [s for _, s in fused],
            "cost": _plain_cost(cost), "inputs": inputs,
        }
    if partial:
        log.warning("%d of %d queries are missing from some of the fused runs; they are fused from the runs "
                    "that have them", partial, len(qids))
    return out


# -- what a teacher record says of each document ----------------------------------------------------------

def prompt_is_graded(prompt) -> bool:
    """Whether a prompt's answers are grades (0..3) rather than the two words yes/no."""
    keys = list(prompt.answers) or ["yes", "no"]
    return sorted(keys) != ["no", "yes"]


def _teacher_graded(rec: dict, verdicts: dict) -> bool:
    """Whether a teacher record's verdicts are grades (0..3) rather than yes = 1 / no = 0."""
    from llmrank.prompts import load_prompt

    name = str(rec.get("prompt") or (rec.get("reranker") or {}).get("prompt") or "").split("@")[0]
    if name:
        try:
            return prompt_is_graded(load_prompt(name))
        except LlmrankError:
            pass
    return any(v is not None and float(v) > 1 for v in verdicts.values())


def teacher_verdicts(rec: dict, top_m: int = 5, min_grade: float = 2.0) -> dict[str, bool | None]:
    """``{docid: True (yes) | False (no) | None (unknown)}`` for the documents of a teacher record: when the
    teacher recorded a verdict per document (``extra.verdicts``, what the rationale method writes), yes iff it
    is yes (1.0) — or, for a graded teacher prompt (answers 0–3), iff the grade is ``>= min_grade`` — and None
    where the teacher's output held none; otherwise (an order only) its ``top_m`` best documents are yes."""
    verdicts = (rec.get("extra") or {}).get("verdicts")
    if isinstance(verdicts, dict) and verdicts:
        graded = _teacher_graded(rec, verdicts)
        threshold = min_grade if graded else 0.5
        return {str(d): (None if v is None else float(v) >= threshold) for d, v in verdicts.items()}
    return {str(d): i < top_m for i, d in enumerate(rec["ranking"])}
