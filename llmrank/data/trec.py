"""TREC files (runs, qrels, topics) and candidate lists in the RankGPT / rank_llm JSON shape."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from llmrank.data.io import atomic_write_text, open_text, require, require_text
from llmrank.data.types import Candidates, Doc, Qrels, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.outputs import WRITTEN_BY


def read_run(path: str | Path, lenient: bool = False, issues: Counter | None = None) -> Candidates:
    """A TREC run (``qid Q0 docid rank score tag``), each query's list sorted by score, best first.

    Strict, as trec_eval is: a NaN or infinite score, a docid listed twice for one query and an empty run
    are errors naming the file and line. ``lenient=True`` counts them in ``issues`` instead (``nan_scores``,
    ``duplicate_docids``): a NaN or infinite score ranks last, and the first line of a duplicate docid wins.
    """
    lists: dict[str, list[tuple[str, float, int]]] = {}
    seen: dict[tuple[str, str], int] = {}
    issues = issues if issues is not None else Counter()
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise LlmrankError(f"{path}:{lineno}: a TREC run line has 6 fields (qid Q0 docid rank score tag), got {len(parts)}")
            qid, _, docid, rank, score, _ = parts
            try:
                value, rank_ = float(score), int(rank)
            except ValueError:
                raise LlmrankError(f"{path}:{lineno}: rank must be an integer and score a number") from None
            if not math.isfinite(value):
                if not lenient:
                    raise LlmrankError(f"{path}:{lineno}: score {score} is not a finite number (query {qid}, doc "
                                       f"{docid}); fix the run, or pass --lenient to rank such documents last")
                issues["nan_scores"] += 1
                value = -math.inf
            if (qid, docid) in seen:
                if not lenient:
                    raise LlmrankError(f"{path}:{lineno}: doc {docid} is listed twice for query {qid} (first at line "
                                       f"{seen[qid, docid]}); fix the run, or pass --lenient to keep the first")
                issues["duplicate_docids"] += 1
                continue
            seen[qid, docid] = lineno
            lists.setdefault(qid, []).append((docid, value, rank_))
    if not lists:
        raise LlmrankError(f"{path}: the run is empty (no 'qid Q0 docid rank score tag' lines)")
    # trec_eval's order: score descending, ties by docid descending (two stable sorts).
    out = {}
    for q, items in lists.items():
        items = sorted(items, key=lambda x: x[0], reverse=True)
        out[q] = [(d, s) for d, s, _ in sorted(items, key=lambda x: -x[1])]
    return Candidates(out)


def write_run(candidates: Candidates, path: str | Path, tag: str = "llmrank") -> None:
    """Write a TREC run whose scores sort in each list's order (see :meth:`Candidates.run_scores`).

    Scores are written with ``repr`` (shortest exact form): rounding to a fixed number of decimals would
    turn scores that differ past the last decimal (close probabilities) into ties that trec_eval reorders.
    """
    lines = []
    for qid, scores in candidates.run_scores().items():
        for rank, (docid, score) in enumerate(scores.items(), 1):
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    atomic_write_text(path, "".join(lines))


def read_qrels(path: str | Path) -> Qrels:
    """TREC qrels (``qid iter docid grade``) or BEIR ``qrels/*.tsv`` (header ``query-id corpus-id score``)."""
    qrels: Qrels = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue  # BEIR header
            if len(parts) == 4:
                qid, _, docid, grade = parts
            elif len(parts) == 3:
                qid, docid, grade = parts
            else:
                raise LlmrankError(
                    f"{path}:{lineno}: a qrels line has 4 fields (qid iter docid grade) or 3 (query-id corpus-id score), got {len(parts)}"
                )
            try:
                value = float(grade)
            except ValueError:
                raise LlmrankError(f"{path}:{lineno}: relevance grade '{grade}' is not a number") from None
            if not math.isfinite(value):
                raise LlmrankError(f"{path}:{lineno}: relevance grade '{grade}' is not a finite number")
            judged = qrels.setdefault(qid, {})
            if docid in judged:
                raise LlmrankError(f"{path}:{lineno}: query {qid} judges doc {docid} twice")
            if value != int(value):
                raise LlmrankError(f"{path}:{lineno}: relevance grade '{grade}' is not a whole number "
                                   "(graded qrels use 0, 1, 2, …; a fraction would be truncated)")
            judged[docid] = int(value)
    if not qrels:
        raise LlmrankError(f"{path}: no judgements found")
    return qrels


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    atomic_write_text(path, "".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))


def read_topics(path: str | Path) -> dict[str, Query]:
    """A topics TSV: ``qid<TAB>query`` per line."""
    queries: dict[str, Query] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) != 2:
                raise LlmrankError(f"{path}:{lineno}: a topics line is 'qid<TAB>query'")
            if not parts[1].strip():
                raise LlmrankError(f"{path}:{lineno}: query '{parts[0]}' has no text")
            queries[parts[0]] = Query(parts[0], parts[1])
    return queries


def load_candidates_json(path: str | Path, need_qids: bool = False) -> RankingData:
    """Candidate lists in the RankGPT / rank_llm shape: ``[{query, hits: [{content, qid, docid, rank, score}]}]``.

    Items without a ``qid`` (on the item or its hits) get their position as id, unless ``need_qids`` (a run
    to evaluate, or a dataset with qrels beside it: an invented id would match no judgement)."""
    path = Path(path)
    with open_text(path) as f:
        try:
            items = json.loads(f.read())
        except json.JSONDecodeError as e:
            raise LlmrankError(f"{path}: malformed JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(items, list):
        raise LlmrankError(f"{path}: expected a JSON list of {{query, hits}} objects")
    queries: dict[str, Query] = {}
    docs: dict[str, Doc] = {}
    lists: dict[str, list[tuple[str, float]]] = {}
    first_at: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise LlmrankError(f"{where}: expected an object with 'query' and 'hits'")
        text = require_text(item, "query", where)
        hits = require(item, "hits", where, list)
        if not hits:
            raise LlmrankError(f"{where}: key 'hits' is an empty list; a query needs at least one candidate document")
        qid = item.get("qid")
        if qid is None and isinstance(hits[0], dict):
            qid = hits[0].get("qid")
        if qid is None and need_qids:
            raise LlmrankError(f"{where}: no query id: give 'qid' on the item or on its hits (key 'qid'), so the "
                               "run can be matched with the judgements")
        qid = str(i if qid is None else qid)  # reranking alone: positions as ids
        if qid in queries:
            raise LlmrankError(f"{where}: duplicate qid '{qid}'")
        entries = []
        seen: dict[str, int] = {}
        for j, hit in enumerate(hits):
            hw = f"{where}, hit {j}"
            if not isinstance(hit, dict):
                raise LlmrankError(f"{hw}: expected an object with 'docid' and 'content'")
            docid = str(require(hit, "docid", hw, (str, int)))
            if "qid" in hit and str(hit["qid"]) != qid:
                raise LlmrankError(f"{hw}: key 'qid' is '{hit['qid']}', but the item's query is '{qid}'")
            if docid in seen:
                raise LlmrankError(f"{hw}: doc {docid} is listed twice for query {qid} (first as hit {seen[docid]})")
            seen[docid] = j
            content = require(hit, "content", hw)
            if docid in docs and docs[docid].text != content:
                raise LlmrankError(f"{hw}: doc {docid} has another 'content' than in {first_at[docid]}; one docid "
                                   "is one document")
            first_at.setdefault(docid, f"item {i}")
            docs[docid] = Doc(docid, content)
            score, rank = hit.get("score"), hit.get("rank", j + 1)
            try:
                entries.append((docid, float(score) if score is not None else float(len(hits) - j), int(rank)))
            except (TypeError, ValueError, OverflowError):
                raise LlmrankError(f"{hw}: 'score' must be a number and 'rank' an integer") from None
            if not math.isfinite(entries[-1][1]):
                raise LlmrankError(f"{hw}: score {score} is not a finite number")
        entries.sort(key=lambda e: e[2])
        queries[qid] = Query(qid, text)
        lists[qid] = [(d, s) for d, s, _ in entries]
    return RankingData(path.stem, queries, docs, None, Candidates(lists), source=str(path), kind="candidates-json")


def write_candidates_json(data: RankingData, candidates: Candidates, path: str | Path) -> None:
    """Write candidate lists (e.g. a reranked run) in the RankGPT / rank_llm JSON shape."""
    out = []
    for qid, items in candidates.items():
        out.append(
            {
                **({"written_by": WRITTEN_BY} if not out else {}),  # how llmrank recognises its own output
                "query": data.queries[qid].text,
                "hits": [
                    {"content": data.docs[d].contents, "qid": qid, "docid": d, "rank": r, "score": s}
                    for r, (d, s) in enumerate(items, 1)
                ],
            }
        )
    atomic_write_text(path, json.dumps(out, ensure_ascii=False, indent=1))
