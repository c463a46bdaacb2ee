"""Datasets in one shape (:class:`RankingData`) whatever their layout; see :func:`load_dataset`."""

from __future__ import annotations

import json
from pathlib import Path

from llmrank.data.beir import is_beir_dir, load_beir
from llmrank.data.bright import BRIGHT_TASKS, is_bright_dir, load_bright
from llmrank.data.jsonl import is_llmrank_jsonl, load_jsonl
from llmrank.data.io import open_text
from llmrank.data.trec import load_candidates_json, read_qrels, read_run, read_topics, write_run
from llmrank.data.types import Candidates, Doc, Qrels, Query, RankingData
from llmrank.errors import LlmrankError

__all__ = [
    "BRIGHT_TASKS", "Candidates", "Doc", "Qrels", "Query", "RankingData", "load_dataset", "load_run",
    "read_qrels", "read_run", "read_topics", "write_run", "detect_layout",
]

# One line: the CLI prints a user error as a single line.
LAYOUTS = (
    "accepted layouts: "
    "(1) a BEIR directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv; "
    '(2) a candidates JSON (RankGPT / rank_llm shape): [{"query": ..., "hits": [{"content", "qid", "docid", "rank", "score"}]}]; '
    "(3) a BRIGHT directory: examples.jsonl[.gz] | examples.parquet | examples/*.parquet (+ documents likewise), "
    "or hf://xlangai/BRIGHT; "
    '(4) a jsonl of your own: one {"qid", "query", "docs": [{"docid", "text", "label"}]} per line'
)


def _is_candidates_json(path: Path) -> bool:
    if not path.is_file() or path.suffix != ".json":
        return False
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip()
    if not head.startswith("["):
        return False
    if '"hits"' in head or head[1:].lstrip().startswith("]"):
        return True
    # A first query longer than the head (BRIGHT queries reach 20k characters) hides "hits": parse it all.
    try:
        with open_text(path) as f:
            items = json.loads(f.read())
    except (json.JSONDecodeError, LlmrankError):
        return False
    return isinstance(items, list) and (not items or isinstance(items[0], dict) and "hits" in items[0])


def detect_layout(path: str | Path) -> str:
    """One of ``beir``, ``candidates-json``, ``bright``, ``jsonl``; a clear error listing the layouts otherwise."""
    if str(path).startswith("hf://"):
        return "bright"
    p = Path(path)
    if not p.exists():
        raise LlmrankError(f"{p}: no such file or directory")
    if is_beir_dir(p):
        return "beir"
    if is_bright_dir(p):
        return "bright"
    if _is_candidates_json(p):
        return "candidates-json"
    if is_llmrank_jsonl(p):
        return "jsonl"
    if p.is_dir():
        jsons = sorted(f for f in p.glob("*.json") if _is_candidates_json(f))
        if len(jsons) == 1:
            return "candidates-json"
    raise LlmrankError(f"{p}: not a dataset llmrank recognises; {LAYOUTS}")


def _sibling_qrels(path: Path) -> Qrels | None:
    for name in ("qrels.txt", "qrels.tsv", "qrels.trec"):
        if (path.parent / name).is_file():
            return read_qrels(path.parent / name)
    return None


def load_dataset(path: str | Path, split: str = "test", query_field: str = "query", documents: str = "short") -> RankingData:
    """Load any accepted layout. ``split`` picks BEIR qrels or the BRIGHT task.

    A candidates JSON (or a directory holding exactly one) picks up a ``qrels.txt`` lying beside it.
    """
    kind = detect_layout(path)
    if kind != "bright" and (query_field != "query" or documents != "short"):
        raise LlmrankError(f"{path}: query_field and documents choose BRIGHT's query texts and documents; this is "
                           f"a {kind} dataset")
    if kind == "beir":
        return load_beir(path, split)
    if kind == "bright":
        return load_bright(path, split, query_field=query_field, documents=documents)
    if kind == "jsonl":
        return load_jsonl(path)
    p = Path(path)
    if p.is_dir():
        p = next(f for f in sorted(p.glob("*.json")) if _is_candidates_json(f))
    qrels = _sibling_qrels(p)
    data = load_candidates_json(p, need_qids=qrels is not None)
    data.qrels = qrels
    return data


def load_run(path: str | Path, lenient: bool = False, issues=None) -> Candidates:
    """A run to evaluate: a TREC run file or a candidates JSON (teacher runs: see :mod:`llmrank.teacher`).

    ``lenient`` and ``issues``: see :func:`llmrank.data.trec.read_run`."""
    p = Path(path)
    if p.is_dir():
        raise LlmrankError(f"{p}: is a folder, expected a run file")
    if not p.is_file():
        raise LlmrankError(f"{p}: file not found")
    if _is_candidates_json(p):
        run = load_candidates_json(p, need_qids=True).candidates
        if not len(run):
            raise LlmrankError(f"{p}: the run is empty (a candidates JSON with no queries)")
        return run
    with open(p, "rb") as f:
        head = f.read(1).strip()
    if head in (b"[", b"{"):
        with open_text(p) as f:
            text = f.read()
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":
                raise LlmrankError(f"{p}: one JSON object per line, but not a teacher run (records with 'qid', 'key' "
                                   "and 'ranking') or any run llmrank evaluates: give a TREC run, a candidates JSON "
                                   "or a teacher run") from None
            raise LlmrankError(f"{p}: malformed JSON at line {e.lineno} ({e.msg})") from None
        raise LlmrankError(f"{p}: a JSON run must be a candidates list [{{query, hits}}]")
    return read_run(p, lenient=lenient, issues=issues)
