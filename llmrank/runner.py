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

import contextlib
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
from llmrank.stages import distill, first_stage, teach

log = logging.getLogger(__name__)
STAGES = ("generate", "teach", "distill", "refine", "eval", "export")
# which recipe sections each stage's output depends on
DEPENDS = {"generate": ("data", "generate"), "teach": ("data", "teacher"), "distill": ("data", "teacher", "distill"),
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
    def __init__(self, recipe: Recipe, out_dir: str | Path = "runs", progress: bool | None = None,
                 where: str = "recipe"):
        self.recipe = recipe
        self.where = where  # the recipe file, named by errors found before the stages run
        self.root = Path(out_dir) / recipe.name
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._train: RankingData | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest_hash(self, stage: str) -> str:
        names = DEPENDS[stage]
        if self.recipe.generate is not None and "generate" not in names:  # generated queries feed every stage
            names = ("generate", *names)
        return self.recipe.section_hash(*names)

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
        return {"generate": r.generate is not None, "teach": True, "distill": r.distill is not None, "refine": r.refine is not None,
                "eval": r.eval is not None, "export": r.export is not None and r.export.enabled and r.distill is not None}[stage]

    # -- running -------------------------------------------------------------------------------------
    def run(self, only: str | None = None) -> dict:
        if only is not None and only not in STAGES:
            raise LlmrankError(f"unknown stage '{only}' (one of {', '.join(STAGES)})")
        from llmrank.recipe import check_inputs, check_models

        check_inputs(self.recipe, self.where)  # a missing dataset is named before any stage runs
        from llmrank.outputs import begin_dir, check_output, record_dir

        # before any stage: the run folder is writable and holds nothing llmrank did not write; one run at a time
        check_output(self.root, "recipe-run", can_overwrite=False)
        check_models(self.recipe, self.where)  # so is a model that cannot be loaded, and a missing vLLM
        main = _state().is_main_process
        # the lock file lies beside the run folder, so a run that finds every stage done changes nothing in it
        lock = run_lock(self.root, f"llmrank run {self.recipe.name}") if main else contextlib.nullcontext()
        with _agreed(lock):
            begun = []

            def claim() -> None:  # marks the folder as being written, once, just before the first stage runs
                if main and not begun:
                    begin_dir(self.root, "recipe-run")
                    begun.append(True)

            ran = self._run_stages(only, claim)
            if main and self.root.is_dir():  # (no folder: no stage ran, nothing written)
                record_dir(self.root, "recipe-run")  # rewritten only when what is recorded changed
        return ran

    def _run_stages(self, only: str | None, claim=lambda: None) -> dict:
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
            claim()
            print(f"[{stage}] running …", file=sys.stderr)
            t0 = time.perf_counter()
            info = getattr(self, f"stage_{stage}")() or {}
            self.finish(stage, time.perf_counter() - t0, **info)
            ran[stage] = "done"
        if only in (None, "eval") and self.recipe.eval is not None and _state().is_main_process:
            from llmrank.eval.report import write_report

            table = write_report(self)
            print(table)
        return ran

    # -- data ----------------------------------------------------------------------------------------
    def train_data(self) -> tuple[RankingData, Candidates]:
        d = self.recipe.data
        if self._train is None:
            with _state().main_process_first():  # the main process builds (and caches) the BM25 index first
                if self.recipe.generate is not None:  # the corpus alone: the generate stage's kept queries
                    data = self._generated_data().first_queries(d.queries)
                else:
                    data = load_dataset(d.dataset, d.train_split).first_queries(d.queries)
                data.candidates = first_stage(data, d.first_stage, d.k)
            self._train = data
        return self._train, self._train.candidates.top(d.k)

    def _generated_data(self) -> RankingData:
        from llmrank.synth.queries import generated_data
        from llmrank.synth.records import read_records

        kept = self.stage_dir("generate") / "kept.jsonl"
        if not kept.is_file():
            raise LlmrankError(f"{kept} not found: run the generate stage first")
        corpus = _load_corpus(self.recipe.data.dataset)
        return generated_data(corpus, read_records(kept, ("key", "qid", "doc_id", "query")), "generated",
                              str(kept))

    # -- stages --------------------------------------------------------------------------------------
    def stage_generate(self) -> dict:
        """Queries written for documents sampled from the corpus, filtered (llmrank.synth.queries): the raw
        records in ``generate/queries.jsonl`` (append-only: a rerun resumes), the kept ones in ``kept.jsonl``,
        the counts in ``stats.json`` and ``stats.md``."""
        from llmrank.synth.queries import QueryGenSettings, run_generation, stats_table

        g = self.recipe.generate
        out = self.stage_dir("generate")
        settings = QueryGenSettings(model=g.model, backend=g.backend, backend_options=dict(g.backend_options),
                                    prompt=g.prompt, docs=g.docs, seed=self.recipe.seed,
                                    max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                    max_doc_tokens=g.max_doc_tokens, keep_likelihood=g.keep_likelihood,
                                    round_trip_k=g.round_trip_k)
        state = _state()
        if state.is_main_process:
            kept, stats = run_generation(_load_corpus(self.recipe.data.dataset), out / "queries.jsonl", settings,
                                         progress=self.progress)
            if not kept:
                raise LlmrankError(f"generate: no query survived the filters ({stats_table(stats)})")
            atomic_write_text(out / "kept.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            atomic_write_text(out / "stats.json", json.dumps(stats, indent=1))
            table = stats_table(stats)
            atomic_write_text(out / "stats.md", table + "\n")
            print(table, file=sys.stderr)
        state.wait_for_everyone()
        stats = json.loads((out / "stats.json").read_text())
        self._train = None
        return {"inputs": {"dataset": self.recipe.data.dataset}, "generation": {k: stats[k] for k in (
            "documents_sampled", "queries_written", "kept", "likelihood", "round_trip", "source_rank")}}

    def teacher_path(self) -> Path:
        return self.stage_dir("teach") / "teacher.jsonl"

    def stage_teach(self) -> dict:
        from llmrank.eval.metrics import evaluate
        from llmrank.rerankers import build_teacher
        from llmrank.teacher import read_teacher_run, teacher_candidates

        data, cands = self.train_data()
        k = self.recipe.data.k
        teacher = build_teacher(self.recipe.teacher, data.qrels)
        path = self.teacher_path()
        # without a terminal, rerank_all prints a line per tenth of the queries (also in logs)
        stats = teach(teacher, data, cands, k, path, progress=self.progress, replace_others=True)
        from llmrank.rerankers import release

        release(teacher)  # the teacher's engine leaves the GPU to the student that trains next
        info = {"queries": len(cands), "cost_per_query": stats.get("cost_per_query", {}),
                "processes": stats["processes"], "config": self.recipe.teacher.model_dump()}
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
        from llmrank.teacher import read_teacher_run

        student = self.student()
        data, _ = self.train_data()
        teacher = read_teacher_run(self.teacher_path())
        out = self.stage_dir("distill")
        state = _state()
        if state.is_main_process:
            _stale_checkpoints(out, self.manifest_hash("distill"))
        state.wait_for_everyone()
        last = _last_checkpoint(out)
        n = distill(student, self.recipe.distill, data, teacher, out, self.recipe.seed, resume=str(last) if last else None)
        return {"inputs": {"teacher": str(self.teacher_path()), "examples": n},
                "student": {"kind": student.kind, "examples": n}}

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
        """The recipe's refine method (:mod:`llmrank.training.refiners`: GRPO, DPO, or one registered from
        outside) on the distilled student into ``refine/``: a new LoRA over the merged distilled student, saved
        as ``adapter/`` + ``merged/`` like a distilled one. The kind-specific rows come from the student kind."""
        from transformers import set_seed

        from llmrank.students import get_student
        from llmrank.teacher import read_teacher_run
        from llmrank.training.refined import student_meta
        from llmrank.training.refiners import check_fits

        r, s = self.recipe.refine, self.recipe.distill
        if s is None:
            raise LlmrankError("key 'refine': a refine stage refines the distilled student; add a 'distill' section")
        _, meta = student_meta(self.stage_dir("distill"))
        student = get_student(meta.get("kind", "pointwise"))
        refiner = check_fits(r.method, student, "refine.method")
        data, _ = self.train_data()
        teacher = read_teacher_run(self.teacher_path())
        out = self.stage_dir("refine")
        args = refiner.make_args(refiner.training_args(r, out, self.recipe.seed, _cuda()))
        state = _state()
        if state.is_main_process:
            _stale_checkpoints(out, self.manifest_hash("refine"))
        state.wait_for_everyone()
        last = _last_checkpoint(out)
        resume = str(last) if last else None
        student_dir = self.stage_dir("distill")

        def build():
            set_seed(self.recipe.seed)
            return refiner.build_rows(student, student_dir, data, teacher, dict(r.options), out=out, dtype=s.dtype,
                                      seed=self.recipe.seed, progress=self.progress)

        if refiner.rows_file is None:
            rows, stats = build()
        else:  # costly rows (they need the student) are built once, by the main process, and kept
            saved_rows = out / refiner.rows_file
            if state.is_main_process and not _fresh(saved_rows, self.manifest_hash("refine")):
                rows, stats = build()
                if not rows:
                    raise LlmrankError(f"refine ({r.method}): no {refiner.rows_name} to train on ({stats})")
                atomic_write_text(saved_rows, json.dumps({"config_hash": self.manifest_hash("refine"), "stats": stats,
                                                          "rows": rows}))
            state.wait_for_everyone()
            saved = json.loads(saved_rows.read_text())
            rows, stats = saved["rows"], saved["stats"]
        set_seed(self.recipe.seed)  # before the new LoRA is initialised (as for distill)
        refiner.train(student, student_dir, rows, args, r, s.dtype, resume=resume, stats=stats)
        return {"inputs": {"student": str(self.student_dir()), refiner.rows_name: len(rows)},
                **refiner.manifest(rows, stats)}

    def stage_eval(self) -> dict:
        from llmrank.eval.run_eval import evaluate_recipe

        students = {}
        if self.recipe.distill is not None:
            students["student"] = (self.student_dir(), self.manifest_hash("distill"))
        if self.recipe.refine is not None:
            students["student_refined"] = (self.refined_dir(), self.manifest_hash("refine"))
        for row, folder in self.recipe.eval.students.items():  # saved students of other runs, side by side
            students[row] = (Path(folder), _folder_stamp(folder, f"eval.students.{row}"))
        return evaluate_recipe(self.recipe, self.stage_dir("eval"), students, progress=self.progress)

    def stage_export(self) -> dict:
        from llmrank.serve.export import export_student

        # the stage folder is the run's own (claimed with the run folder): an export there is replaced
        info = export_student(self.newest_student_dir(), self.stage_dir("export") / "model", dtype=self.recipe.export.dtype,
                              overwrite=True)
        return {"export": info}


def _load_corpus(dataset: str):
    """The documents of a dataset, read without its queries or judgements (a BEIR folder's corpus file, or
    any dataset's documents)."""
    from llmrank.data.beir import _find, is_beir_dir, load_corpus

    path = Path(dataset)
    if is_beir_dir(path):
        return load_corpus(_find(path, "corpus"))
    if path.is_file() and path.suffix in (".jsonl", ".gz"):
        return load_corpus(path)
    raise LlmrankError(f"key 'data.dataset': generating queries needs a corpus (a BEIR folder or a corpus "
                       f".jsonl of {{_id, title, text}}), got {dataset}")


def _folder_stamp(folder: str | Path, key: str) -> str:
    """What a saved student folder's eval row depends on: its path and its files' names, sizes and mtimes."""
    from llmrank.rerankers.dense import model_fingerprint
    from llmrank.students import is_student_dir

    if not is_student_dir(folder):
        raise LlmrankError(f"key '{key}': {folder} is not a saved student folder (distill's merged/ or adapter/, or "
                           "an export)")
    return model_fingerprint(str(Path(folder).resolve()))


def run_lock(root: Path, what: str):
    """The lock of a run folder: ``.<name>.llmrank-lock`` beside it (see :class:`llmrank.outputs.FolderLock`)."""
    from llmrank.outputs import FolderLock

    return FolderLock(root, what, lock_file=Path(root).parent / f".{Path(root).name}.llmrank-lock")


@contextlib.contextmanager
def _agreed(lock):
    """Enter ``lock`` (the main process's folder lock); under ``accelerate launch`` every process learns whether
    the main one got it, so a refused launch stops in all its processes instead of training without the lock."""
    state = _state()
    error = None
    try:
        lock.__enter__()
    except LlmrankError as e:
        error = str(e)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        raise LlmrankError(error)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


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


def checkpoints(out: Path) -> list[Path]:
    """The trainer's ``checkpoint-<step>`` folders in ``out``, by step."""
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def _last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint: ``trainer_state.json`` is the last file the Trainer writes into one,
    so a checkpoint without it (the process was killed while saving) is skipped."""
    for ckpt in reversed(checkpoints(out)):
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
    for ckpt in checkpoints(out):
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
