"""BRIGHT (Su et al., 2024) in its public schema.

``examples`` records carry ``id, query, reasoning, gold_ids, gold_ids_long, excluded_ids, gold_answer``;
``documents`` records carry ``id, content``. A local directory may hold them as

- ``examples.jsonl[.gz]`` / ``examples.parquet`` and ``documents.jsonl[.gz]`` / ``documents.parquet`` (one task), or
- ``examples/<task>-*.parquet`` and ``documents/<task>-*.parquet`` (the dataset's own layout; ``split`` names the task).

``hf://xlangai/BRIGHT`` (or any ``hf://`` dataset id) loads through ``datasets`` where a hub is reachable.
``excluded_ids`` of each query are dropped from every ranking before scoring, as BRIGHT's evaluation does.
"""

from __future__ import annotations

from pathlib import Path

from llmrank.data.io import read_jsonl, require
from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError

BRIGHT_TASKS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems",
)


def _records(path: Path, config: str, task: str | None) -> list[dict] | None:
    """Records of ``config`` (examples/documents) found in ``path``, or None when absent."""
    for name in (f"{config}.jsonl", f"{config}.jsonl.gz"):
        if (path / name).is_file():
            return [rec for _, rec in read_jsonl(path / name)]
    files = [path / f"{config}.parquet"] if (path / f"{config}.parquet").is_file() else []
    sub = path / config
    if not files and sub.is_dir():
        files = sorted(sub.glob("*.parquet")) + sorted(sub.glob("*.jsonl")) + sorted(sub.glob("*.jsonl.gz"))
        if task is not None:
            files = [f for f in files if f.name.startswith(task)]
        elif len({f.name.split("-")[0] for f in files}) > 1:
            raise LlmrankError(f"{sub}: several BRIGHT tasks here; name one with --split (one of {BRIGHT_TASKS})")
    if not files:
        return None
    out: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                out.extend(pq.read_table(f).to_pylist())
            except Exception as e:  # a truncated or corrupt parquet file (pyarrow raises several kinds)
                raise LlmrankError(f"{f}: not a readable parquet file ({type(e).__name__}: {e})") from None
        else:
            out.extend(rec for _, rec in read_jsonl(f))
    return out


def is_bright_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / n).exists() for n in ("examples.jsonl", "examples.jsonl.gz", "examples.parquet", "examples")
    )


def load_bright(path: str | Path, split: str | None = None, query_field: str = "query") -> RankingData:
    """Load one BRIGHT task. ``query_field='reasoning'`` uses the reasoning-expanded query text instead."""
    if str(path).startswith("hf://"):
        examples, documents = _from_hub(str(path)[5:], split)
        where = str(path)
    else:
        path = Path(path)
        task = split if split in BRIGHT_TASKS else None
        examples = _records(path, "examples", task)
        if examples is None:
            raise LlmrankError(f"{path}: no BRIGHT examples (expected examples.jsonl[.gz], examples.parquet or examples/)")
        documents = _records(path, "documents", task) or []
        where = str(path)
    queries, qrels, excluded = {}, {}, {}
    for i, rec in enumerate(examples):
        w = f"{where}: example {i}"
        qid = str(require(rec, "id", w, (str, int)))
        text = require(rec, query_field, w)
        queries[qid] = Query(qid, text, {k: rec[k] for k in ("reasoning", "gold_answer") if k in rec})
        qrels[qid] = {str(d): 1 for d in require(rec, "gold_ids", w, list)}
        excluded[qid] = {str(d) for d in rec.get("excluded_ids") or [] if d != "N/A"}
    docs = {}
    for i, rec in enumerate(documents):
        w = f"{where}: document {i}"
        docid = str(require(rec, "id", w, (str, int)))
        docs[docid] = Doc(docid, require(rec, "content", w))
    name = split if split in BRIGHT_TASKS else Path(str(path)).name
    return RankingData(name, queries, docs, qrels, None, excluded, source=where, kind="bright")


def _from_hub(dataset_id: str, task: str | None) -> tuple[list[dict], list[dict]]:
    if task not in BRIGHT_TASKS:
        raise LlmrankError(f"hf://{dataset_id}: name the BRIGHT task with --split (one of {', '.join(BRIGHT_TASKS)})")
    try:
        import datasets

        examples = datasets.load_dataset(dataset_id, "examples", split=task).to_list()
        documents = datasets.load_dataset(dataset_id, "documents", split=task).to_list()
    except Exception as e:  # no hub, no network, unknown id
        raise LlmrankError(f"hf://{dataset_id}: could not load through `datasets` ({type(e).__name__}: {e}); "
                           "download the examples and documents and pass the local directory instead") from None
    return examples, documents
