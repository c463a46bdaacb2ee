"""BEIR directories: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

from pathlib import Path

from llmrank.data.io import read_jsonl, require, require_text
from llmrank.data.trec import read_qrels
from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and _find(path, "corpus") is not None and _find(path, "queries") is not None


def _find(path: Path, stem: str) -> Path | None:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    return None


def load_corpus(path: Path) -> dict[str, Doc]:
    docs = {}
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        docid = str(require(rec, "_id", where, (str, int)))
        if docid in docs:
            raise LlmrankError(f"{where}: duplicate document _id '{docid}'")
        title = rec.get("title") or ""
        if not isinstance(title, str):
            raise LlmrankError(f"{where}: key 'title' should be str, got {type(title).__name__}")
        docs[docid] = Doc(docid, require(rec, "text", where), title)
    if not docs:
        raise LlmrankError(f"{path}: no documents (the corpus file is empty)")
    return docs


def load_beir(path: str | Path, split: str = "test") -> RankingData:
    """Load a BEIR dataset; only the queries judged in ``qrels/<split>.tsv`` are kept."""
    path = Path(path)
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (path / "qrels").glob("*.tsv")) if (path / "qrels").is_dir() else []
        raise LlmrankError(f"{path}: no qrels for split '{split}' (expected {qrels_path}; splits found: {have or 'none'})")
    qrels = read_qrels(qrels_path)
    queries = {}
    seen: dict[str, int] = {}
    qfile = _find(path, "queries")
    for lineno, rec in read_jsonl(qfile):
        where = f"{qfile}:{lineno}"
        qid = str(require(rec, "_id", where, (str, int)))
        if qid in seen:
            raise LlmrankError(f"{where}: duplicate query _id '{qid}' (first at line {seen[qid]})")
        seen[qid] = lineno
        if qid in qrels:
            queries[qid] = Query(qid, require_text(rec, "text", where), rec.get("metadata") or {})
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise LlmrankError(f"{qrels_path}: {len(missing)} judged queries are not in {qfile} (first: {missing[0]})")
    return RankingData(path.name, queries, load_corpus(_find(path, "corpus")), qrels, None, source=str(path), kind="beir")
