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
        """The manifest matches the recipe, and every file it lists is there with its recorded size."""
        m = self.stage_dir(stage) / "manifest.json"
        if not m.is_file():
            return False
        try:
            manifest = json.loads(m.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            print(f"[{stage}] {m} is unreadable (an interrupted write?): running the stage again", file=sys.stderr)
            return False
        if not isinstance(manifest, dict) or manifest.get("config_hash") != self.manifest_hash(stage):
            return False
        problem = _missing_output(self.stage_dir(stage), manifest.get("files"))
        if problem:
            print(f"[{stage}] {problem}: running the stage again", file=sys.stderr)
            return False
        return True

    def finish(self, stage: str, seconds: float, inputs: dict | None = None, **extra) -> None:
        if not _state().is_main_process:
            return
        manifest = {"stage": stage, "config_hash": self.manifest_hash(stage), "inputs": inputs or {},
                    "versions": versions(), "seconds": round(seconds, 2), **extra,
                    "files": _stage_files(self.stage_dir(stage))}
        atomic_write_text(self.stage_dir(stage) / "manifest.json", json.dumps(manifest, indent=1))

    def enabled(self, stage: str) -> bool:
        r = self.recipe
        return {"teach": True, "distill": r.distill is not None, "refine": r.refine is not None,
                "eval": r.eval is not None, "export": r.export is not None and r.export.enabled and r.distill is not None}[stage]

    # -- running -------------------------------------------------------------------------------------
    def run(self, only: str | None = None) -> dict:
        if only is not None and only not in STAGES:
            raise LlmrankError(f"unknown stage '{only}' (one of {', '.join(STAGES)})")
        from llmrank.recipe import check_inputs

        check_inputs(self.recipe)  # a missing dataset is named before any stage runs
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
        from llmrank.rerankers import build_teacher
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
        # without a terminal, rerank_all prints a line per tenth of the queries (also in logs)
        if state.num_processes == 1:
            stats = run_teacher(teacher, data, cands, k, path, progress=self.progress)
        else:  # each process teaches every n-th query still to do into its own part; the main process joins them
            done = set(read_teacher_run(path)) if path.is_file() else set()
            qids = cands.qids()
            todo = [q for q in qids if q not in done]
            part = path.with_name(f"teacher.part{state.process_index}.jsonl")
            _keep_records(part, set(keys.values()))
            mine = cands.subset(todo[state.process_index::state.num_processes])
            stats = run_teacher(teacher, data, mine, k, part, progress=self.progress and state.is_main_process)
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
            from llmrank.eval.metrics import default_rel_threshold

            rel = info["rel_threshold"] = default_rel_threshold(data.qrels)  # the report prints recall@k(rel>=2)
            info["metrics"] = evaluate(run, data.qrels, metrics, rel)
            info["first_stage_metrics"] = evaluate(cands.subset(run.qids()), data.qrels, metrics, rel)
        return {"inputs": {"dataset": self.recipe.data.dataset, "queries": len(cands)}, "teacher": info}

    def student(self):
        """The student kind of the recipe's ``distill`` section."""
        from llmrank.students import get_student

        return get_student(self.recipe.distill.kind)

    def stage_distill(self) -> dict:
        from transformers import set_seed

        from llmrank.teacher import read_teacher_run

        student = self.student()
        data, _ = self.train_data()
        teacher = read_teacher_run(self.teacher_path())
        out = self.stage_dir("distill")
        cfg = student.make_config(self.recipe.distill, out, seed=self.recipe.seed)
        examples = student.build_examples(data, teacher, cfg, seed=self.recipe.seed)
        state = _state()
        if state.is_main_process:
            _stale_checkpoints(out, self.manifest_hash("distill"))
        state.wait_for_everyone()
        last = _last_checkpoint(out)
        # the LoRA weights are initialised before the Trainer seeds anything: seed here, so the same recipe
        # trains the same student whatever ran before in this process (a teach stage, or nothing)
        set_seed(self.recipe.seed)
        student.train(cfg, examples, resume=str(last) if last else None)
        return {"inputs": {"teacher": str(self.teacher_path()), "examples": len(examples)},
                "student": {"kind": student.kind, "examples": len(examples)}}

    def student_dir(self) -> Path:
        """The distilled student (merged weights)."""
        return self.stage_dir("distill") / "merged"

    def newest_student_dir(self) -> Path:
        """The student that eval's last row and export use: the refined one when the recipe refines."""
        if self.recipe.refine is not None and (self.stage_dir("refine") / "merged").is_dir():
            return self.stage_dir("refine") / "merged"
        return self.student_dir()

    def refined_dir(self) -> Path:
        """The refined student (merged weights)."""
        return self.stage_dir("refine") / "merged"

    def stage_refine(self) -> dict:
        """GRPO or DPO on the distilled student (llmrank.training.grpo / .dpo) into ``refine/``: a new LoRA
        over the merged distilled student, saved as ``adapter/`` + ``merged/`` like a distilled one."""
        from transformers import set_seed

        from llmrank.teacher import read_teacher_run
        from llmrank.training.refine_config import make_trainer_config
        from llmrank.training.refined import check_method, student_meta

        r, s = self.recipe.refine, self.recipe.distill
        if s is None:
            raise LlmrankError("key 'refine': a refine stage refines the distilled student; add a 'distill' section")
        if r.method == "grpo":
            from llmrank.training.grpo import check_use_vllm

            check_use_vllm(bool(r.training.get("use_vllm")))
        folder, meta = student_meta(self.stage_dir("distill"))
        check_method(r.method, meta.get("kind", "pointwise"), "refine.method")
        data, _ = self.train_data()
        teacher = read_teacher_run(self.teacher_path())
        out = self.stage_dir("refine")
        targs = {"per_device_train_batch_size": 1, "max_steps": 50, "logging_steps": 5, "save_steps": 25,
                 "save_total_limit": 1, "report_to": [], "seed": self.recipe.seed, "use_cpu": not _cuda(),
                 "bf16": _cuda(), "gradient_checkpointing": False, **r.training, "output_dir": str(out)}
        if r.method == "grpo":  # one step's generations on a device: whole groups of num_generations
            targs = {"num_generations": 4, "max_completion_length": 128, **targs}
            if "per_device_train_batch_size" not in r.training:
                targs["per_device_train_batch_size"] = targs["num_generations"]
        args = make_trainer_config(r.method, targs)
        state = _state()
        if state.is_main_process:
            _stale_checkpoints(out, self.manifest_hash("refine"))
        state.wait_for_everyone()
        last = _last_checkpoint(out)
        resume = str(last) if last else None
        opts = dict(r.options)
        if r.method == "grpo":
            from transformers import AutoTokenizer

            from llmrank.training.grpo import build_grpo_prompts, train_grpo

            rows = build_grpo_prompts(data, teacher, meta, AutoTokenizer.from_pretrained(folder), seed=self.recipe.seed, **opts)
            set_seed(self.recipe.seed)  # before the new LoRA is initialised (as for distill)
            train_grpo(self.stage_dir("distill"), rows, args, [x.model_dump() for x in r.rewards], r.lora, s.dtype,
                       resume=resume)
            return {"inputs": {"student": str(self.student_dir()), "prompts": len(rows)}}
        from llmrank.training.dpo import build_dpo_rows, train_dpo

        pairs = out / "pairs.json"  # built once, by the main process (it scores or samples with the student)
        if state.is_main_process and not _fresh(pairs, self.manifest_hash("refine")):
            set_seed(self.recipe.seed)
            rows, stats = build_dpo_rows(self.stage_dir("distill"), data, teacher, out, opts, s.dtype,
                                         self.recipe.seed, self.progress)
            atomic_write_text(pairs, json.dumps({"config_hash": self.manifest_hash("refine"), "stats": stats, "rows": rows}))
        state.wait_for_everyone()
        saved = json.loads(pairs.read_text())
        set_seed(self.recipe.seed)
        train_dpo(self.stage_dir("distill"), saved["rows"], args, r.lora, s.dtype, resume=resume,
                  info={"pair_stats": saved["stats"]})
        return {"inputs": {"student": str(self.student_dir()), "pairs": len(saved["rows"])}, "pairs": saved["stats"]}

    def stage_eval(self) -> dict:
        from llmrank.eval.run_eval import evaluate_recipe

        students = {}
        if self.recipe.distill is not None:
            students["student"] = (self.student_dir(), self.manifest_hash("distill"))
        if self.recipe.refine is not None:
            students["student_refined"] = (self.refined_dir(), self.manifest_hash("refine"))
        return evaluate_recipe(self.recipe, self.stage_dir("eval"), students, progress=self.progress)

    def stage_export(self) -> dict:
        from llmrank.serve.export import export_student

        info = export_student(self.newest_student_dir(), self.stage_dir("export") / "model", dtype=self.recipe.export.dtype)
        return {"export": info}


def _stage_files(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file a stage wrote (hidden scratch files and the manifest aside)."""
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f.is_file() and rel.as_posix() != "manifest.json" and not any(p.startswith(".") for p in rel.parts):
            out[rel.as_posix()] = f.stat().st_size
    return out


def _missing_output(folder: Path, files: dict | None) -> str | None:
    """What is gone or changed among the files a manifest lists (None: all there)."""
    for rel, size in (files or {}).items():
        f = folder / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != size:
            return f"{f} has {f.stat().st_size} bytes, the manifest recorded {size}"
    return None


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


def _fresh(path: Path, config_hash: str) -> bool:
    """Whether a stage's intermediate file exists and was written for this configuration."""
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash
    except (OSError, ValueError):
        return False


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
