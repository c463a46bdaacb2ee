"""The pipeline's stages as plain functions, one body each: the runner (``llmrank run``) and the commands
(``llmrank teach``, ``llmrank distill``) call these, so a command does what the recipe's stage does.

- :func:`first_stage`: candidates for the queries (``bm25``, ``dense``, ``bm25+dense`` or a TREC run file);
- :func:`teach`: a teacher over the candidates into a teacher file, sharded over the processes of
  ``accelerate launch`` (one process: :func:`llmrank.teacher.run_teacher` directly);
- :func:`distill`: a student kind trained on a teacher run, seeded once with the recipe's seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llmrank.data.types import Candidates, RankingData
from llmrank.errors import LlmrankError
from llmrank.rerankers.dense import DEFAULT_DENSE_MODEL

log = logging.getLogger(__name__)

FIRST_STAGES = ("bm25", "dense", "bm25+dense")
"""The first stages by name; ``dense:<model>``, a bi-encoder's folder or a TREC run file's path are taken too."""
FIRST_STAGE_ALIASES = {"hybrid": "bm25+dense"}
"""Older spellings, still taken (``llmrank teach --first-stage hybrid``)."""


def first_stage_name(spec: str) -> str:
    """``spec`` with an older spelling replaced by its name (and a note saying so)."""
    if spec in FIRST_STAGE_ALIASES:
        log.warning("first stage '%s' is now called '%s'", spec, FIRST_STAGE_ALIASES[spec])
        return FIRST_STAGE_ALIASES[spec]
    return spec


def first_stage(data: RankingData, spec: str = "bm25", k: int = 100, dense_model: str = DEFAULT_DENSE_MODEL,
                progress: bool = False) -> Candidates:
    """Top-``k`` candidates for ``data``'s queries: ``bm25`` (the dataset's own candidates when it has
    them), ``dense`` (exact cosine with ``dense_model``), ``dense:<model>`` or a bi-encoder's folder (a
    bi-encoder student's ``merged/`` or export), ``bm25+dense`` (BM25 and ``dense_model`` merged by reciprocal
    rank fusion: hard negatives of both kinds) or a TREC run file's path."""
    from llmrank.data.bm25 import ensure_candidates, retrieve
    from llmrank.rerankers.dense import dense_first_stage, dense_retrieve, merge_candidates

    spec = first_stage_name(spec)
    if spec == "bm25":
        cands = ensure_candidates(data, k, show_progress=progress)
    elif spec == "bm25+dense":
        cands = merge_candidates([retrieve(data, k, show_progress=progress),
                                  dense_retrieve(data, k, dense_model, show_progress=progress)], k)
    elif (model := dense_model if spec == "dense" else dense_first_stage(spec)) is not None:
        cands = dense_retrieve(data, k, model, show_progress=progress)
    else:
        from llmrank.data import read_run

        if not Path(spec).is_file():
            raise LlmrankError(f"first stage '{spec}': not one of {', '.join(FIRST_STAGES)}, dense:<model>, a "
                               "bi-encoder's folder, nor a run file")
        cands = read_run(spec)
    return cands.subset(data.queries).top(k)


def _world():
    """accelerate's process state under ``accelerate launch`` (or torchrun); None for one process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def teacher_keys(reranker, data: RankingData, cands: Candidates, k: int) -> dict[str, str]:
    """``{qid: record key}`` the teacher file will hold for these candidates (as :func:`run_teacher` keys them)."""
    import json

    from llmrank.teacher import canonical_json, teacher_key

    rkey = json.loads(canonical_json(reranker.cache_key))
    return {q: teacher_key(data.queries[q].text, cands.docids(q)[:k], rkey) for q in cands.qids() if q in data.queries}


def keep_records(path: Path, keys: set[str]) -> None:
    """Drop the records of a teacher file that these keys do not name (another teacher, other candidates or
    query texts), so a changed recipe re-teaches those queries instead of failing on them."""
    from llmrank.teacher import TeacherRun, write_teacher_run

    if not path.is_file():
        return
    with TeacherRun(path) as run:  # also repairs a torn last line
        records = list(run.records.values())
    kept = [r for r in records if r["key"] in keys]
    if len(kept) < len(records):
        log.info("%s: %d records of another teacher configuration dropped", path, len(records) - len(kept))
        write_teacher_run(kept, path)


def teach(reranker, data: RankingData, cands: Candidates, k: int, path: str | Path, progress: bool | None = None,
          require_rationales: bool = False, replace_others: bool = False) -> dict:
    """Rank the top-``k`` candidates of every query with the teacher ``reranker`` into ``path`` (resumable,
    :func:`llmrank.teacher.run_teacher`). With ``replace_others`` (a recipe's stage), records of another
    teacher configuration are dropped first.

    Under ``accelerate launch`` process i of n teaches every n-th query not yet in ``path`` into
    ``<stem>.part<i><suffix>`` (resumable like the file itself); then the main process appends the parts'
    records to ``path`` in query order and removes the parts. Every process returns its stats; the main
    process's ``queries``, ``done`` and ``skipped`` cover the whole file (``processes``: how many;
    ``main_process``: whether this is the main one)."""
    from llmrank.teacher import TeacherRun, read_teacher_run, run_teacher

    path = Path(path)
    state = _world()
    keys = set(teacher_keys(reranker, data, cands, k).values()) if replace_others else None
    if state is None:
        if keys is not None:
            keep_records(path, keys)
        stats = run_teacher(reranker, data, cands, k, path, progress=progress, require_rationales=require_rationales)
        return {**stats, "processes": 1, "main_process": True}
    if keys is not None:
        if state.is_main_process:
            keep_records(path, keys)
        state.wait_for_everyone()
    done = set(read_teacher_run(path)) if path.is_file() else set()
    todo = [q for q in cands.qids() if q not in done]
    parts = [path.with_name(f"{path.stem}.part{i}{path.suffix}") for i in range(state.num_processes)]
    part = parts[state.process_index]
    if keys is not None:
        keep_records(part, keys)
    stats = run_teacher(reranker, data, cands.subset(todo[state.process_index::state.num_processes]), k, part,
                        progress=progress if state.is_main_process else False, require_rationales=require_rationales)
    state.wait_for_everyone()
    if state.is_main_process:
        records: dict = {}
        for f in parts:
            if f.is_file():
                records.update(read_teacher_run(f))
        with TeacherRun(path) as run:
            for qid in todo:
                if qid in records:
                    run.append(records[qid])
        for f in parts:
            f.unlink(missing_ok=True)
        stats.update(queries=len(cands.qids()), done=len([q for q in todo if q in records]), skipped=len(done),
                     path=str(path))
    state.wait_for_everyone()
    return {**stats, "processes": state.num_processes, "main_process": state.is_main_process}


def distill(student, section, data: RankingData, teacher_records: dict, out: str | Path, seed: int,
            resume: str | None = None) -> int:
    """Train the student kind ``student`` (its recipe ``section``) on ``teacher_records`` into ``out``:
    its config, its examples (sampled with ``seed``), then the training, seeded with ``seed`` before the
    LoRA weights are made (so the same section trains the same student whatever ran before in this
    process). ``seed`` is the recipe's ``seed``; ``section.training.seed``, when given, seeds the trainer
    only. Returns the number of examples."""
    from transformers import set_seed

    cfg = student.make_config(section, out, seed=seed)
    examples = student.build_examples(data, teacher_records, cfg, seed=seed)
    set_seed(seed)
    student.train(cfg, examples, resume=resume)
    return len(examples)
