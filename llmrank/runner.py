"""Carries out a recipe stage by stage: teach → distill → (refine) → eval → export, then the report.

Each stage writes into ``runs/<name>/<stage>/`` and finishes by writing ``manifest.json`` (the hash of the
recipe sections it depends on, its inputs, library versions, seconds). A stage whose manifest matches is
skipped, so re-running after a crash continues where it stopped; inside a stage, teacher runs resume per
query, training resumes from its last checkpoint and evaluation per table row.

Under ``accelerate launch`` the teacher's queries are sharded across processes (each writes its own part,
the main process joins them in query order), training is distributed by ``transformers.Trainer``, and only
the main process writes shared files, evaluates and exports. Without a GPU,
``accelerate launch --multi_gpu --num_processes 2 -m llmrank run RECIPE`` starts two CPU processes in a gloo
group (``--cpu`` would start a single process: accelerate runs several CPU processes only through mpirun).

A changed recipe re-runs the stages that depend on what changed, reusing what still applies: teacher
records whose key (query, candidates, teacher) is unchanged, eval rows whose inputs are unchanged; training
checkpoints of another configuration are discarded rather than resumed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from llmrank.data import load_dataset
from llmrank.data.io import atomic_write_text
from llmrank.data.types import Candidates, RankingData
from llmrank.errors import LlmrankError
from llmrank.recipe import Recipe

log = logging.getLogger(__name__)
STAGES = ("teach", "distill", "refine", "eval", "export")
# which recipe sections each stage's output depends on
DEPENDS = {"teach": ("data", "teacher"), "distill": ("data", "teacher", "distill"),
           "refine": ("data", "teacher", "distill", "refine"), "eval": ("data", "teacher", "distill", "refine", "eval"),
           "export": ("data", "teacher", "distill", "refine", "export")}


def _state():
    """The process layout. On a machine without CUDA (or under ``accelerate launch --cpu``) the processes that
    ``accelerate launch --multi_gpu --num_processes N`` starts join one gloo group: ``PartialState()`` alone
    never forms a CPU group (it needs ``cpu=True``), so each process would teach every query by itself."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=not _cuda() or parse_flag_from_env("ACCELERATE_USE_CPU"))


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("llmrank", "torch", "transformers", "peft", "trl", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Runner:
    def __init__(self, recipe: Recipe, out_dir: str | Path = "runs", progress: bool | None = None):
        self.recipe = recipe
        self.root = Path(out_dir) / recipe.name
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._train: RankingData | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest_hash(self, stage: str) -> str:
        return self.recipe.section_hash(*DEPENDS[stage])

    def is_done(self, stage: str) -> bool:
        m = self.stage_dir(stage) / "manifest.json"
        return m.is_file() and json.loads(m.read_text()).get("config_hash") == self.manifest_hash(stage)

    def finish(self, stage: str, seconds: float, inputs: dict | None = None, **extra) -> None:
        if not _state().is_main_process:
            return
        manifest = {"stage": stage, "config_hash": self.manifest_hash(stage), "inputs": inputs or {},
                    "versions": versions(), "seconds": round(seconds, 2), **extra}
        atomic_write_text(self.stage_dir(stage) / "manifest.json", json.dumps(manifest, indent=1))

    def enabled(self, stage: str) -> bool:
        r = self.recipe
        return {"teach": True, "distill": r.distill is not None, "refine": r.refine is not None,
                "eval": r.eval is not None, "export": r.export is not None and r.export.enabled and r.distill is not None}[stage]

    # -- running -------------------------------------------------------------------------------------
    def run(self, only: str | None = None) -> dict:
        if only is not None and only not in STAGES:
            raise LlmrankError(f"unknown stage '{only}' (one of {', '.join(STAGES)})")
        self.root.mkdir(parents=True, exist_ok=True)
        ran = {}
        for stage in STAGES:
            if only is not None and stage != only:
                continue
            if not self.enabled(stage):
                continue
            if stage in ("eval", "export") and not _state().is_main_process:
                continue  # under accelerate launch, evaluation and export are the main process's alone
            if self.is_done(stage):
                log.info("stage %s: up to date, skipped", stage)
                print(f"[{stage}] up to date ({self.stage_dir(stage)})", file=sys.stderr)
                ran[stage] = "skipped"
                continue
            print(f"[{stage}] running …", file=sys.stderr)
            t0 = time.perf_counter()
            info = getattr(self, f"stage_{stage}")() or {}
            self.finish(stage, time.perf_counter() - t0, **info)
            ran[stage] = "done"
        if only is None and self.recipe.eval is not None and _state().is_main_process:
            from llmrank.eval.report import write_report

            table = write_report(self)
            print(table)
        return ran

    # -- data ----------------------------------------------------------------------------------------
    def train_data(self) -> tuple[RankingData, Candidates]:
        d = self.recipe.data
        if self._train is None:
            with _state().main_process_first():  # the main process builds (and caches) the BM25 index first
                data = load_dataset(d.dataset, d.train_split).first_queries(d.queries)
                data.candidates = self._first_stage(data, d.first_stage, d.k)
            self._train = data
        return self._train, self._train.candidates.top(d.k)

    def _first_stage(self, data: RankingData, spec: str, k: int) -> Candidates:
        from llmrank.data.bm25 import ensure_candidates, retrieve

        if spec == "bm25":
            return ensure_candidates(data, k).subset(data.queries).top(k)
        if spec == "bm25+dense":
            from llmrank.rerankers.dense import dense_retrieve, merge_candidates

            return merge_candidates([retrieve(data, k), dense_retrieve(data, k)], k).subset(data.queries)
        from llmrank.data import read_run

        return read_run(spec).subset(data.queries).top(k)

    # -- stages --------------------------------------------------------------------------------------
    def teacher_path(self) -> Path:
        return self.stage_dir("teach") / "teacher.jsonl"

    def stage_teach(self) -> dict:
        from llmrank.eval.metrics import evaluate
        from llmrank.teacher import (
            read_teacher_run,
            run_teacher,
            teacher_candidates,
            write_teacher_run,
        )

        data, cands = self.train_data()
        k = self.recipe.data.k
        teacher = build_teacher(self.recipe.teacher, data.qrels)
        state = _state()
        path = self.teacher_path()
        keys = _teacher_keys(teacher, data, cands, k)
        if state.is_main_process:  # records of another configuration (a changed recipe) would conflict
            _keep_records(path, set(keys.values()))
        state.wait_for_everyone()
        from llmrank.eval.progress import ProgressLines

        lines = None
        if not self.progress and state.is_main_process:  # periodic lines for logs (no bar without a terminal)
            have = set(read_teacher_run(path)) if path.is_file() else set()
            lines = ProgressLines("[teach] teacher", sum(q not in have for q in cands.qids()))
        if state.num_processes == 1:
            stats = run_teacher(teacher, data, cands, k, path, progress=self.progress, on_ranking=lines)
        else:  # each process teaches every n-th query still to do into its own part; the main process joins them
            done = set(read_teacher_run(path)) if path.is_file() else set()
            qids = cands.qids()
            todo = [q for q in qids if q not in done]
            part = path.with_name(f"teacher.part{state.process_index}.jsonl")
            _keep_records(part, set(keys.values()))
            mine = cands.subset(todo[state.process_index::state.num_processes])
            if lines is not None:
                lines.total = len(mine)
            stats = run_teacher(teacher, data, mine, k, part, progress=self.progress and state.is_main_process,
                                on_ranking=lines)
            state.wait_for_everyone()
            if state.is_main_process:
                records = read_teacher_run(path) if path.is_file() else {}
                parts = [path.with_name(f"teacher.part{i}.jsonl") for i in range(state.num_processes)]
                for f in parts:
                    records.update(read_teacher_run(f))
                write_teacher_run([records[q] for q in qids if q in records], path)
                for f in parts:
                    f.unlink(missing_ok=True)
            state.wait_for_everyone()
        info = {"queries": len(cands), "cost_per_query": stats.get("cost_per_query", {}),
                "processes": state.num_processes}
        if data.qrels:
            run = teacher_candidates(read_teacher_run(path))
            metrics = ["ndcg@10", f"recall@{k}"]
            info["metrics"] = evaluate(run, data.qrels, metrics)
            info["first_stage_metrics"] = evaluate(cands.subset(run.qids()), data.qrels, metrics)
        return {"inputs": {"dataset": self.recipe.data.dataset, "queries": len(cands)}, "teacher": info}

    def stage_distill(self) -> dict:
        from transformers import TrainingArguments

        from llmrank.teacher import read_teacher_run
        from llmrank.training.distill import DistillConfig, train_distill
        from llmrank.training.examples import build_groups

        if self.recipe.distill.kind == "reasoning":
            raise LlmrankError("distill.kind 'reasoning' is not run by recipes in this version: train the reasoning "
                               "student with llmrank.training.sft.train_sft (trl SFTTrainer) on a rationale teacher run, "
                               "or use kind 'pointwise'")

        s = self.recipe.distill
        data, _ = self.train_data()
        teacher = read_teacher_run(self.teacher_path())
        groups = build_groups(data, teacher, s.group_size, seed=self.recipe.seed)
        out = self.stage_dir("distill")
        lora = {"r": 16, "alpha": 32, "dropout": 0.05, **s.lora}
        cfg = DistillConfig(model=s.model, prompt=s.prompt, loss=s.loss, loss_options=s.loss_options,
                            group_size=s.group_size, max_doc_tokens=s.max_doc_tokens, lora_r=lora["r"],
                            lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                            target_modules=lora.get("target_modules", "all-linear"), qlora=s.qlora, dtype=s.dtype,
                            merge=True)
        targs = {"per_device_train_batch_size": 1, "learning_rate": 1e-4, "max_steps": 50, "logging_steps": 5,
                 "save_steps": 25, "save_total_limit": 1, "report_to": [], "seed": self.recipe.seed,
                 "use_cpu": not _cuda(), **s.training, "output_dir": str(out)}
        args = TrainingArguments(**targs)
        state = _state()
        if state.is_main_process:
            _stale_checkpoints(out, self.manifest_hash("distill"))
        state.wait_for_everyone()
        last = _last_checkpoint(out)
        # the LoRA weights are initialised before the Trainer seeds anything: seed here, so the same recipe
        # trains the same student whatever ran before in this process (a teach stage, or nothing)
        from transformers import set_seed

        set_seed(self.recipe.seed)
        train_distill(cfg, groups, args, resume=str(last) if last else None)
        return {"inputs": {"teacher": str(self.teacher_path()), "groups": len(groups)}}

    def student_dir(self) -> Path:
        return self.stage_dir("distill") / "merged"

    def stage_refine(self) -> dict:
        raise LlmrankError("the refine stage (GRPO / DPO) is not available in this version of llmrank; "
                           "remove the 'refine' section to run the other stages")

    def stage_eval(self) -> dict:
        from llmrank.eval.run_eval import evaluate_recipe

        return evaluate_recipe(self)

    def stage_export(self) -> dict:
        from llmrank.serve.export import export_student

        info = export_student(self.student_dir(), self.stage_dir("export") / "model", dtype=self.recipe.export.dtype)
        return {"export": info}


def _teacher_keys(teacher, data: RankingData, cands: Candidates, k: int) -> dict[str, str]:
    """``{qid: record key}`` the teacher run will hold for these candidates (as :func:`run_teacher` keys them)."""
    from llmrank.teacher import canonical_json, teacher_key

    rkey = json.loads(canonical_json(teacher.cache_key))
    return {q: teacher_key(data.queries[q].text, cands.docids(q)[:k], rkey) for q in cands.qids() if q in data.queries}


def _keep_records(path: Path, keys: set[str]) -> None:
    """Drop the records of a teacher file that the current recipe would not write (another teacher, other
    candidates or query texts), so a changed recipe re-teaches those queries instead of failing on them."""
    from llmrank.teacher import TeacherRun, write_teacher_run

    if not path.is_file():
        return
    with TeacherRun(path) as run:  # also repairs a torn last line
        records = list(run.records.values())
    kept = [r for r in records if r["key"] in keys]
    if len(kept) < len(records):
        log.info("%s: %d records of another teacher configuration dropped", path, len(records) - len(kept))
        write_teacher_run(kept, path)


def _checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def _last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint: ``trainer_state.json`` is the last file the Trainer writes into one,
    so a checkpoint without it (the process was killed while saving) is skipped."""
    for ckpt in reversed(_checkpoints(out)):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return ckpt
    return None


def _stale_checkpoints(out: Path, config_hash: str) -> None:
    """Remove checkpoints that training cannot resume from: those of another configuration (a changed
    recipe must train from the start, not resume the old run) and half-written ones."""
    import shutil

    marker = out / "started.json"
    old = None
    if marker.is_file():
        try:
            old = json.loads(marker.read_text()).get("config_hash")
        except ValueError:
            pass
    last = _last_checkpoint(out) if old == config_hash else None
    for ckpt in _checkpoints(out):
        if last is None or int(ckpt.name.split("-", 1)[1]) > int(last.name.split("-", 1)[1]):
            shutil.rmtree(ckpt, ignore_errors=True)
    atomic_write_text(marker, json.dumps({"config_hash": config_hash}))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_teacher(cfg, qrels=None):
    """The Reranker a recipe's ``teacher`` section names (``oracle`` needs the qrels)."""
    from llmrank.backends import make_backend
    from llmrank.rerankers import build_reranker
    from llmrank.rerankers.fusion import FirstStage, FusionReranker

    if cfg.method == "oracle":
        from llmrank.rerankers.oracle import OracleReranker

        if not qrels:
            raise LlmrankError("teacher method 'oracle' needs a dataset with qrels")
        return OracleReranker(qrels)
    if cfg.method == "fusion":
        if not cfg.members:
            raise LlmrankError("teacher method 'fusion' needs 'members' (a list of teacher sections)")
        members = [build_teacher(m, qrels) for m in cfg.members]
        if cfg.include_first_stage:
            members.insert(0, FirstStage())
        return FusionReranker(members, cfg.fusion)
    if cfg.method == "dense":
        return build_reranker("dense", None, model=cfg.model, **cfg.options)
    backend = make_backend(cfg.backend, cfg.model, **cfg.backend_options)
    return build_reranker(cfg.method, backend, cfg.prompt, **cfg.options)
