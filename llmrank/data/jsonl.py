"""Users' own data: one JSON object per line,

``{"qid": "q1", "query": "…", "docs": [{"docid": "d1", "text": "…", "title": "…", "label": 2}, …]}``

``qid``, ``docid``, ``title`` and ``label`` are optional (ids default to positions); a doc may also be a
plain string. The docs' order is the candidate order; labels, where present, become the qrels.
"""

from __future__ import annotations

import math
from pathlib import Path

from llmrank.data.io import read_jsonl, require, require_text, whole_grade
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError


def load_jsonl(path: str | Path) -> RankingData:
    path = Path(path)
    queries, docs, lists, qrels = {}, {}, {}, {}
    first_seen: dict[str, str] = {}  # docid -> where its text was first given
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        qid = str(rec.get("qid", lineno))
        if qid in queries:
            raise LlmrankError(f"{where}: duplicate qid '{qid}'")
        queries[qid] = Query(qid, require_text(rec, "query", where))
        items = []
        listed: dict[str, int] = {}
        raw_docs = require(rec, "docs", where, list)
        if not raw_docs:
            raise LlmrankError(f"{where}: key 'docs' is an empty list; query '{qid}' needs at least one candidate document")
        for j, d in enumerate(raw_docs):
            if isinstance(d, str):
                d = {"text": d}
            if not isinstance(d, dict):
                raise LlmrankError(f"{where}: docs[{j}] should be a string or an object with 'text'")
            docid = str(d.get("docid", f"{qid}-{j}"))
            if docid in listed:
                raise LlmrankError(f"{where}: docs[{j}]: docid '{docid}' is listed twice for query '{qid}' "
                                   f"(first as docs[{listed[docid]}])")
            listed[docid] = j
            doc = Doc(docid, require(d, "text", f"{where}: docs[{j}]"), d.get("title") or "")
            if docid in docs and (docs[docid].text, docs[docid].title) != (doc.text, doc.title):
                raise LlmrankError(f"{where}: docs[{j}]: docid '{docid}' has another text than at {first_seen[docid]}; "
                                   "one docid is one document (give the two texts different docids)")
            docs.setdefault(docid, doc)
            first_seen.setdefault(docid, f"line {lineno}")
            score = d.get("score", -j)
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise LlmrankError(f"{where}: docs[{j}].score should be a finite number, got {score!r}")
            items.append((docid, float(score)))
            if "label" in d:
                qrels.setdefault(qid, {})[docid] = whole_grade(d["label"], f"{where}: docs[{j}].label")
        lists[qid] = items
    if not queries:
        raise LlmrankError(f"{path}: no records")
    return RankingData(path.stem, queries, docs, qrels or None, Candidates(lists), source=str(path), kind="jsonl")


def is_llmrank_jsonl(path: Path) -> bool:
    if not path.is_file() or not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        return False
    for _, rec in read_jsonl(path):
        return "query" in rec and "docs" in rec
    return False
