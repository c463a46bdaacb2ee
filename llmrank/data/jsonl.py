"""Users' own data: one JSON object per line,

``{"qid": "q1", "query": "…", "docs": [{"docid": "d1", "text": "…", "title": "…", "label": 2}, …]}``

``qid``, ``docid``, ``title`` and ``label`` are optional (ids default to positions); a doc may also be a
plain string. The docs' order is the candidate order; labels, where present, become the qrels.
"""

from __future__ import annotations

from pathlib import Path

from llmrank.data.io import read_jsonl, require
from llmrank.data.types import Candidates, Doc, Query, RankingData
from llmrank.errors import LlmrankError


def load_jsonl(path: str | Path) -> RankingData:
    path = Path(path)
    queries, docs, lists, qrels = {}, {}, {}, {}
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        qid = str(rec.get("qid", lineno))
        if qid in queries:
            raise LlmrankError(f"{where}: duplicate qid '{qid}'")
        queries[qid] = Query(qid, require(rec, "query", where))
        items = []
        for j, d in enumerate(require(rec, "docs", where, list)):
            if isinstance(d, str):
                d = {"text": d}
            if not isinstance(d, dict):
                raise LlmrankError(f"{where}: docs[{j}] should be a string or an object with 'text'")
            docid = str(d.get("docid", f"{qid}-{j}"))
            docs[docid] = Doc(docid, require(d, "text", f"{where}: docs[{j}]"), d.get("title") or "")
            score = d.get("score", -j)
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise LlmrankError(f"{where}: docs[{j}].score should be a number")
            items.append((docid, float(score)))
            if "label" in d:
                if not isinstance(d["label"], (int, float)):
                    raise LlmrankError(f"{where}: docs[{j}].label should be a number")
                qrels.setdefault(qid, {})[docid] = int(d["label"])
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
