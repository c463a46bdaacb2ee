"""BRIGHT (Su et al., 2024) in its public schema.

``examples`` records carry ``id, query, reasoning, gold_ids, gold_ids_long, excluded_ids, gold_answer``;
``documents`` records carry ``id, content``. A local directory may hold them as

- ``examples.jsonl[.gz]`` / ``examples.parquet`` and ``documents.jsonl[.gz]`` / ``documents.parquet`` (one task), or
- ``examples/<task>-*.parquet`` and ``documents/<task>-*.parquet`` (the dataset's own layout; ``split`` names the task).

``hf://xlangai/BRIGHT`` (or any ``hf://`` dataset id) loads through ``datasets`` where a hub is reachable.
``excluded_ids`` of each query are dropped from every ranking before scoring, as BRIGHT's evaluation does.

The query text (``query_field``), as the published experiments define it:

- ``query``: the original question (the default);
- ``<model>_reason`` (``gpt4_reason``, ``llama3-70b_reason``, ``claude-3-opus_reason``, ``grit_reason`` …):
  the query rewritten with an LLM's reasoning, read from that configuration of the dataset (its records
  in the ``examples`` schema, ``query`` holding the reasoning-expanded text), on disk as
  ``<config>.jsonl[.gz]`` / ``<config>.parquet`` / ``<config>/<task>-*.parquet`` beside the examples. These
  are BRIGHT's "reasoning" rows; judgements and excluded ids still come from ``examples``.
- ``human-reasoning``: each example's ``reasoning`` field, written by the annotators to explain the gold
  documents. BRIGHT's authors did not use it in any experiment, so it is named for what it is and no
  published figure compares with it (``reasoning`` alone is refused with this explanation).

``documents='long'`` reads the ``long_documents`` configuration (whole web pages rather than their
chunks) and judges against ``gold_ids_long``, as BRIGHT's long-context setting does.
"""

from __future__ import annotations

from pathlib import Path

from llmrank.data.io import read_jsonl, require, require_text
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


HUMAN_REASONING = "human-reasoning"
DOCUMENTS = ("short", "long")


def query_source(query_field: str) -> str:
    """What a ``query_field`` names, in words for reports (and an error for one BRIGHT does not define)."""
    if query_field == "query":
        return "original query"
    if query_field == HUMAN_REASONING:
        return "human-written reasoning (examples' `reasoning` field; not used in BRIGHT's published experiments)"
    if query_field.endswith("_reason") and len(query_field) > len("_reason"):
        return f"LLM reasoning-expanded query ({query_field} configuration)"
    if query_field == "reasoning":
        raise LlmrankError("BRIGHT query_field 'reasoning': the examples' `reasoning` field was written by the "
                           "annotators and used in none of BRIGHT's published experiments; name it "
                           f"'{HUMAN_REASONING}' to use it anyway, or use the published LLM reasoning queries "
                           "(query_field: gpt4_reason, or another <model>_reason configuration)")
    raise LlmrankError(f"BRIGHT query_field '{query_field}': expected 'query', '{HUMAN_REASONING}' or an LLM "
                       "reasoning configuration such as 'gpt4_reason'")


def load_bright(path: str | Path, split: str | None = None, query_field: str = "query",
                documents: str = "short") -> RankingData:
    """Load one BRIGHT task; ``query_field`` and ``documents`` as in the module docstring. The dataset's
    name says which query text and documents it holds (``biology``, ``biology-gpt4_reason``,
    ``biology-human-reasoning``, ``biology-long``)."""
    source = query_source(query_field)
    if documents not in DOCUMENTS:
        raise LlmrankError(f"BRIGHT documents '{documents}': expected one of {', '.join(DOCUMENTS)}")
    doc_config = "long_documents" if documents == "long" else "documents"
    reason_config = query_field if query_field.endswith("_reason") else None
    reasons = None
    if str(path).startswith("hf://"):
        examples, docs_recs, reasons = _from_hub(str(path)[5:], split, doc_config, reason_config)
        where = str(path)
    else:
        path = Path(path)
        task = split if split in BRIGHT_TASKS else None
        examples = _records(path, "examples", task)
        if examples is None:
            raise LlmrankError(f"{path}: no BRIGHT examples (expected examples.jsonl[.gz], examples.parquet or examples/)")
        docs_recs = _records(path, doc_config, task)
        if docs_recs is None and documents == "long" and _records(path, "documents", task) is not None:
            raise LlmrankError(f"{path}: documents: long needs BRIGHT's long_documents configuration "
                               "(long_documents.jsonl[.gz], long_documents.parquet or long_documents/); only the "
                               "short documents are here")
        docs_recs = docs_recs or []
        if reason_config:
            reasons = _records(path, reason_config, task)
            if reasons is None:
                raise LlmrankError(f"{path}: query_field {reason_config} reads BRIGHT's {reason_config} configuration "
                                   f"({reason_config}.jsonl[.gz], {reason_config}.parquet or {reason_config}/), "
                                   "which is not here")
        where = str(path)
    gold_key = "gold_ids_long" if documents == "long" else "gold_ids"
    queries, qrels, excluded = {}, {}, {}
    for i, rec in enumerate(examples):
        w = f"{where}: example {i}"
        qid = str(require(rec, "id", w, (str, int)))
        text = require_text(rec, "reasoning" if query_field == HUMAN_REASONING else "query", w)
        queries[qid] = Query(qid, text, {k: rec[k] for k in ("reasoning", "gold_answer") if k in rec})
        qrels[qid] = {str(d): 1 for d in require(rec, gold_key, w, list)}
        excluded[qid] = {str(d) for d in rec.get("excluded_ids") or [] if d != "N/A"}
    if reasons is not None:
        seen = set()
        for i, rec in enumerate(reasons):
            w = f"{where}: {reason_config} record {i}"
            qid = str(require(rec, "id", w, (str, int)))
            if qid not in queries:
                raise LlmrankError(f"{w}: id '{qid}' is not an example of this task")
            queries[qid] = Query(qid, require(rec, "query", w), {**queries[qid].meta, "original_query": queries[qid].text})
            seen.add(qid)
        if seen != set(queries):
            missing = sorted(set(queries) - seen)
            raise LlmrankError(f"{where}: {reason_config} has no reasoning query for {len(missing)} example(s) "
                               f"(first: {missing[0]})")
    docs = {}
    for i, rec in enumerate(docs_recs):
        w = f"{where}: {doc_config} record {i}"
        docid = str(require(rec, "id", w, (str, int)))
        docs[docid] = Doc(docid, require(rec, "content", w))
    name = split if split in BRIGHT_TASKS else Path(str(path)).name
    name += "" if query_field == "query" else f"-{query_field}"
    name += "-long" if documents == "long" else ""
    return RankingData(name, queries, docs, qrels, None, excluded, source=where, kind="bright",
                       query_source="" if query_field == "query" else source)


def _from_hub(dataset_id: str, task: str | None, doc_config: str = "documents",
              reason_config: str | None = None) -> tuple[list[dict], list[dict], list[dict] | None]:
    if task not in BRIGHT_TASKS:
        raise LlmrankError(f"hf://{dataset_id}: name the BRIGHT task with --split (one of {', '.join(BRIGHT_TASKS)})")
    try:
        import datasets

        examples = datasets.load_dataset(dataset_id, "examples", split=task).to_list()
        documents = datasets.load_dataset(dataset_id, doc_config, split=task).to_list()
        reasons = datasets.load_dataset(dataset_id, reason_config, split=task).to_list() if reason_config else None
    except Exception as e:  # no hub, no network, unknown id
        raise LlmrankError(f"hf://{dataset_id}: could not load through `datasets` ({type(e).__name__}: {e}); "
                           "download the examples and documents and pass the local directory instead") from None
    return examples, documents, reasons
