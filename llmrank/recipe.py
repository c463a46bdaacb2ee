"""Recipes: one YAML file names the whole pipeline — data, teacher, distill, refine, eval, export.

A recipe is validated completely before anything runs: an unknown or mistyped key, a wrong type or a
missing required field is reported with the file (and line), the key path (``teacher.members[0].method``)
and what was expected. ``${VAR}`` and ``${VAR:-default}`` are read from the environment; ``--set a.b=c``
overrides any key (its value parsed as YAML; ``eval.datasets[0].queries=50`` indexes a list). An eval
suite (``eval.suite: beir``, a file under ``eval/``) is validated the same way. YAML floats need no dot
(``1e-4`` is a number). See ``recipes/`` for examples and :class:`Recipe` for every field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, create_model, field_validator

from llmrank.config import loader as _loader
from llmrank.config.loader import (  # noqa: F401 - the loader's names, importable from here as before
    _ENV_RE,
    Section,
    _at,
    _described,
    _fix_path,
    _line_map,
    _Loader,
    _model_at,
    _path_str,
    _read_yaml,
    _suggest,
    _yaml_load,
)
from llmrank.data.io import same_paths  # noqa: F401 - importable from here as before
from llmrank.errors import LlmrankError
from llmrank.eval.suites import (  # noqa: F401 - the eval suites, importable from here as before
    SUITES_DIR,
    EvalDataset,
    EvalSuite,
    eval_entries,
    load_suite,
    suite_location,
)


class DataConfig(Section):
    dataset: str = Field(description="dataset path (BEIR dir, candidates JSON, BRIGHT dir, jsonl)")
    train_split: str = Field("train", description="split whose queries are taught and distilled")
    first_stage: str = Field("bm25", description="'bm25', 'bm25+dense' (merged, for hard negatives), 'dense' "
                             "(MiniLM), 'dense:<model>' or a bi-encoder student's folder (corpus embeddings cached), "
                             "or a TREC run path")
    k: int = Field(20, ge=2, description="candidates per query taken from the first stage for teaching")
    queries: int | None = Field(None, ge=1, description="keep only the first N training queries")


class TeacherConfig(Section):
    method: str = Field("pointwise", description="pointwise | pairwise | listwise | setwise | rationale | dense | oracle | "
                                                 "fusion | student (a saved student folder as 'model' teaches as it scores)")
    model: str = Field("smollm2-135m", description="teacher model: alias, local path or hub id")
    backend: str = Field("hf", description="hf | vllm | openai | http://… base URL")
    prompt: str | None = Field(None, description="prompt name or YAML path (default: the method's)")
    options: dict[str, Any] = Field(default_factory=dict, description="method options (window, step, strategy, …)")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="backend options (dtype, batch_size, base_url, …)")
    members: list[TeacherConfig] = Field(default_factory=list, description="for method 'fusion': the teachers fused")
    fusion: Literal["rrf", "borda"] = Field("rrf", description="for method 'fusion': rank fusion rule")
    include_first_stage: bool = Field(False, description="for method 'fusion': fuse the first-stage ranking too")


class DistillBase(Section):
    """What every student kind's ``distill`` section is made on (:func:`_distill_section`)."""

    tag_noun: ClassVar[str] = "student kind"


def _distill_section(kind: str) -> type[BaseModel]:
    """The recipe section of one student kind, made from its fields dataclass (one source for the fields,
    their defaults and help): ``kind``, the student's own fields, ``lora`` and ``training``."""
    import dataclasses
    import typing

    from llmrank.students import get_student
    from llmrank.students.base import LORA_KEYS

    student = get_student(kind)
    hints = typing.get_type_hints(student.fields)
    fields: dict[str, Any] = {"kind": (Literal[kind], Field(kind, description=f"student kind: {student.description}"))}  # type: ignore[valid-type]
    for f in dataclasses.fields(student.fields):
        if f.name in LORA_KEYS.values():
            continue
        bounds = {k: f.metadata[k] for k in ("ge", "gt", "le", "lt") if k in f.metadata}
        if f.metadata.get("hash_neutral"):
            bounds["json_schema_extra"] = {"hash_neutral": True}
        if f.default is not dataclasses.MISSING:
            info = Field(f.default, description=f.metadata.get("help", ""), **bounds)
        else:
            info = Field(default_factory=f.default_factory, description=f.metadata.get("help", ""), **bounds)  # type: ignore[arg-type]
        fields[f.name] = (hints[f.name], info)
    lora_default = {k: next(f.default for f in dataclasses.fields(student.fields) if f.name == v)
                    for k, v in LORA_KEYS.items() if k != "target_modules"}
    fields["lora"] = (dict[str, Any], Field(default_factory=lambda: dict(lora_default),
                                            description="LoRA: r, alpha, dropout, target_modules"))
    fields["training"] = (dict[str, Any], Field(default_factory=dict, description=f"fields of {student.base_config} "
                                                "(checked at recipe load): max_steps, learning_rate, …"))
    name = "".join(part.capitalize() for part in kind.replace("_", "-").split("-")) + "DistillSection"
    return create_model(name, __base__=DistillBase, __doc__=f"The distill section of a {kind} student.", **fields)


def _distill_kind(value) -> str:
    if isinstance(value, dict):
        return value.get("kind", "pointwise")
    return getattr(value, "kind", "pointwise")


def _distill_union(sections: dict[str, type[BaseModel]]):
    return Annotated[Union[tuple(Annotated[m, Tag(k)] for k, m in sections.items())],  # type: ignore[misc]
                     Discriminator(_distill_kind)]


def _student_kinds() -> list[str]:
    from llmrank.students import STUDENT_KINDS

    return list(STUDENT_KINDS)


DISTILL_SECTIONS: dict[str, type[BaseModel]] = {k: _distill_section(k) for k in _student_kinds()}
"""kind -> its distill section; the recipe's ``distill`` is one of them, chosen by ``kind`` (default pointwise).
A kind registered later (:func:`llmrank.students.register_student`) is added when the next recipe loads
(:func:`sync_schema`)."""
DistillSection = _distill_union(DISTILL_SECTIONS)


class RewardSpec(Section):
    name: str = Field(description="reward name (llmrank.training.rewards: format, relevance, setwise, listwise_ndcg, length)")
    weight: float = Field(1.0, description="its weight in the summed reward (trl's reward_weights)")
    options: dict[str, Any] = Field(default_factory=dict, description="the reward's keyword options")

    @field_validator("weight")
    @classmethod
    def _finite(cls, v):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return v


class RefineSection(Section):
    method: str = Field(description="refine method (llmrank.training.refiners): grpo (ranking rewards), dpo (ranking "
                                    "preferences), or one registered with register_refiner")
    rewards: list[RewardSpec] = Field(default_factory=list, description="grpo: the rewards and their weights "
                                      "(default: format 0.2 + relevance 1.0)")
    options: dict[str, Any] = Field(default_factory=dict, description="how prompts/pairs are built: grpo: per_query, "
                                    "queries, top_m, balance; dpo: pairs_per_query, top_m, queries, anchors (pointwise), samples, "
                                    "temperature, max_new_tokens, per_query (reasoning)")
    lora: dict[str, Any] = Field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05},
                                 description="the refinement's new LoRA adapter: r, alpha, dropout, target_modules")
    training: dict[str, Any] = Field(default_factory=dict, description="trl.GRPOConfig (grpo) or trl.DPOConfig (dpo) fields")


class GenerateSection(Section):
    """Training queries written by an LLM for documents sampled from ``data.dataset``'s corpus (InPars /
    Promptagator; llmrank.synth.queries). With this section the recipe reads the corpus only: no train
    queries and no train qrels; each kept query's source document is its one judged positive."""

    model: str = Field("smollm2-135m", description="the query generator: alias, local path or hub id")
    backend: str = Field("hf", description="hf | vllm | openai | http://… base URL (the likelihood filter needs hf)")
    backend_options: dict[str, Any] = Field(default_factory=lambda: {"dtype": "bfloat16"},
                                            description="backend options (dtype, batch_size, …)")
    prompt: str = Field("query_gen", description="prompt name or YAML path (a qlm prompt rendering {{ document }})")
    docs: int = Field(200, ge=1, le=1_000_000, description="documents sampled from the corpus (with the recipe's seed)")
    max_new_tokens: int = Field(32, ge=4, le=512, description="longest query generated, in tokens")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    max_doc_tokens: int = Field(160, ge=16, le=8192, description="document tokens shown to the generator")
    keep_likelihood: float = Field(1.0, gt=0, le=1, description="likelihood filter (InPars): share of the queries "
                                   "kept, those the generator finds most likely (mean log-prob); 1 = off")
    round_trip_k: int = Field(0, ge=0, le=1000, description="round-trip filter (Promptagator): keep a query only when "
                              "its source document is in the first stage's top k for it; 0 = off")


class EvalSection(Section):
    datasets: list[EvalDataset] = Field(default_factory=list, description="datasets to evaluate on")
    suite: str | None = Field(None, description="an eval suite: a name under eval/ (beir, bright, trec-dl), or a "
                                                "YAML path; ':variant' picks one of its variants (bright:reasoning)")
    metrics: list[str] = Field(default_factory=lambda: ["ndcg@10", "recall@20", "mrr@10"], description="metric names")
    top_k: int = Field(20, ge=1, description="rerank depth")
    in_flight: int | None = Field(None, ge=1, description="queries each row ranks at once, their prompts sent to the "
                                                         "backend together (default: sized for the backend)")
    baselines: list[str] = Field(default_factory=lambda: ["first_stage", "teacher", "student_before", "student"],
                                 description="rows of the report table")
    note: str | None = Field(None, description="a paragraph the report prints first: what this run demonstrates "
                                               "and what it does not (e.g. a CPU demo vs the GPU recipes)")
    students: dict[str, str] = Field(default_factory=dict, description="more rows: saved students by row name (e.g. "
                                     "{llm_student: runs/quickstart-cpu/distill/merged}), measured beside this run's "
                                     "student; the report gives each one's cost per query and its ratio to the student's")
    dtype: str | None = Field(None, description="dtype the student rows (zero-shot, distilled, refined) score in "
                                                "(default: distill.dtype); e.g. bfloat16 for a student trained in "
                                                "float32")


class ExportSection(Section):
    enabled: bool = Field(True, description="export the student for vLLM serving")
    dtype: str = Field("bfloat16", description="dtype of the exported weights")


class CompareSection(Section):
    """``llmrank compare RECIPE.yaml``: every (model, method, prompt) cell, plus ``cells``, on one dataset."""

    dataset: str | None = Field(None, description="dataset to compare on (default: the data section's dataset)")
    split: str = Field("test", description="split (BEIR qrels split, or BRIGHT task)")
    queries: int | None = Field(None, ge=1, description="first N queries only")
    top_k: int = Field(20, ge=1, description="candidates reranked per query")
    first_stage_k: int = Field(100, ge=1, description="BM25 depth when the dataset has no candidates")
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m"], description="models (alias, path or hub id)")
    methods: list[str] = Field(default_factory=lambda: ["pointwise"], description="ranking methods")
    prompts: list[str] = Field(default_factory=list, description="prompt names or YAML paths; each method runs "
                                                                 "with those that declare it (else its default)")
    backend: str = Field("hf", description="hf | vllm | openai | http://… base URL, for the models above")
    backend_options: dict[str, Any] = Field(default_factory=lambda: {"dtype": "bfloat16"},
                                            description="backend options (dtype, batch_size, …)")
    cells: list[TeacherConfig] = Field(default_factory=list, description="more cells, each a teacher section "
                                       "(method, model, backend, prompt, options), e.g. a served student")
    baseline: str | None = Field(None, description="row the others are tested against (default: the first cell)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the markers (Holm-corrected)")
    attack: list[Literal["plain", "format", "hidden"]] = Field(
        default_factory=list, description="prompt-injection variants to run (empty: no attack)")
    resamples: int = Field(10000, ge=100, description="randomization-test resamples (exact up to 16 queries)")
    rel_threshold: int = Field(1, ge=1, description="grade counted relevant by MRR and recall (TREC DL: 2)")


class Recipe(Section):
    name: str = Field(description="run name: outputs go to runs/<name>/")
    seed: int = Field(0, description="random seed")
    data: DataConfig
    generate: GenerateSection | None = Field(None, description="write the training queries from the corpus "
                                             "instead of reading data.train_split's (llmrank.synth.queries)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillSection | None = None
    refine: RefineSection | None = None
    eval: EvalSection | None = None
    export: ExportSection | None = None
    compare: CompareSection | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        """A run name is one folder name under ``--out``, never a path: ``../x``, ``/abs`` or ``a/b`` would
        put the stages outside ``--out`` (or straight into it, for an empty name)."""
        if not v.strip():
            raise ValueError("the run name is empty; give a folder name such as 'my-run'")
        if v in (".", "..") or "/" in v or "\\" in v or "\0" in v or v != v.strip():
            raise ValueError("a path, not a name: give one folder name, without '/', '\\', surrounding spaces, "
                             "'.' or '..'")
        if len(v.encode("utf-8")) > 200:
            raise ValueError(f"a name of {len(v.encode('utf-8'))} bytes is too long for a folder name (at most 200)")
        return v

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (a stage's manifest compares it to decide a re-run)."""
        payload = {n: (_hash_dump(getattr(self, n)) if getattr(self, n) is not None else None) for n in names}
        payload["seed"] = self.seed
        if "eval" in names and self.eval is not None and self.eval.suite:  # the suite's datasets, not its name
            payload["eval_suite"] = [d.model_dump() for d in load_suite(self.eval.suite)[1]]
        payload = same_paths(payload)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hash_dump(section: BaseModel) -> dict:
    """A section as its stage hash sees it: keys marked ``hash_neutral`` (added after runs were made) are left
    out while they hold their default, so a finished run stays up to date when a new key arrives."""
    out = section.model_dump()
    for name, f in type(section).model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("hash_neutral") and out.get(name) == f.get_default(call_default_factory=True):
            out.pop(name, None)
    return out


TeacherConfig.model_rebuild()



def _interpolate(value, path: tuple, where: str, root: type[BaseModel] | None = None):
    return _loader._interpolate(value, path, where, root or Recipe)


def apply_override(raw: dict, assignment: str, where: str = "--set", root: type[BaseModel] | None = None) -> list:
    """Apply ``a.b.c=value`` to ``raw`` in place (checked against the recipe's schema, or ``root``) and
    return the key path set (:func:`llmrank.config.loader.apply_override`)."""
    return _loader.apply_override(raw, assignment, where, root or Recipe)


def _format_error(e: ValidationError, where: str, lines: dict | None = None, overrides: list | None = None,
                  root: type[BaseModel] | None = None) -> str:
    return _loader._format_error(e, where, lines, overrides, root or Recipe)




RATIONALE_METHODS = ("rationale",)
"""Teacher methods whose records carry an explanation per document."""


def sync_schema() -> None:
    """Bring the recipe schema up to the registries: a student kind registered since the schema was built
    (:func:`llmrank.students.register_student`) gets its ``distill`` section, one removed loses it."""
    kinds = _student_kinds()
    if kinds == list(DISTILL_SECTIONS):
        return
    from pydantic.fields import FieldInfo

    for k in list(DISTILL_SECTIONS):
        if k not in kinds:
            del DISTILL_SECTIONS[k]
    for k in kinds:
        if k not in DISTILL_SECTIONS:
            DISTILL_SECTIONS[k] = _distill_section(k)
    global DistillSection
    DistillSection = _distill_union(DISTILL_SECTIONS)
    Recipe.model_fields["distill"] = FieldInfo.from_annotated_attribute(DistillSection | None, None)  # type: ignore[operator]
    Recipe.model_rebuild(force=True)


def _library_problems(cls, values, where: tuple) -> list[tuple[tuple, str]]:
    """``values`` (a ``training`` mapping) against the fields of a library config class."""
    from llmrank.configs import check_fields, library_fields

    name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    try:
        schema = library_fields(cls)
    except LlmrankError as e:
        return [(where, str(e))]
    return [(where + (key,) if key else where, msg) for key, msg in check_fields(schema, values, name.split(":")[-1])]


def _lora_problems(lora: dict, where: tuple) -> list[tuple[tuple, str]]:
    from llmrank.students.base import LORA_KEYS

    problems = []
    for key, value in lora.items():
        if key not in LORA_KEYS:
            problems.append((where + (key,), f"unknown LoRA key{_suggest(key, LORA_KEYS)} (expected "
                             f"{', '.join(LORA_KEYS)})"))
        elif key == "r" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            problems.append((where + (key,), f"expected an integer >= 1 (got {_described(value)})"))
        elif key == "alpha" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            problems.append((where + (key,), f"expected a number > 0 (got {_described(value)})"))
        elif key == "dropout" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
            problems.append((where + (key,), f"expected a number in [0, 1) (got {_described(value)})"))
    return problems


def recipe_problems(recipe: Recipe) -> list[tuple[tuple, str]]:
    """What the schema cannot see, checked at load before anything runs, against the registries: the
    ``training`` mappings against the library configs the student kind and the refine method name (their
    installed classes), LoRA settings, the student kind's own checks (loss names), the refine method, its
    options and rewards, metric names."""
    from llmrank.students import get_student

    problems: list[tuple[tuple, str]] = []
    student = None
    if recipe.distill is not None:
        student = get_student(recipe.distill.kind)
        problems += _library_problems(student.base_config, recipe.distill.training, ("distill", "training"))
        problems += _lora_problems(recipe.distill.lora, ("distill", "lora"))
        for key, msg in student.check_section(recipe.distill):
            problems.append((("distill", *key.split(".")), msg))
        if student.needs_rationales and recipe.teacher.method not in RATIONALE_METHODS:
            problems.append((("teacher", "method"), f"a {student.kind} student learns from the teacher's explanations: "
                             f"use a teacher that writes them ({', '.join(RATIONALE_METHODS)}), not "
                             f"'{recipe.teacher.method}'"))
    if "passages" in recipe.teacher.options:  # whole documents as windows: checked before any model loads
        from llmrank.rerankers import PASSAGE_METHODS
        from llmrank.rerankers.passages import check_passage_options

        if recipe.teacher.method not in PASSAGE_METHODS:
            problems.append((("teacher", "options", "passages"), f"method '{recipe.teacher.method}' does not score "
                             f"documents one by one (passages fit {', '.join(PASSAGE_METHODS)})"))
        for key, msg in check_passage_options(recipe.teacher.options["passages"]):
            problems.append((("teacher", "options", "passages") + ((key,) if key else ()), msg))
    problems += _teacher_problems(recipe.teacher, ("teacher",))
    if recipe.refine is not None:
        problems += _refine_problems(recipe.refine, student)
    if recipe.export is not None:
        from llmrank.checks import DTYPE_NAMES

        if recipe.export.dtype not in DTYPE_NAMES:
            problems.append((("export", "dtype"), f"unknown dtype {recipe.export.dtype!r}"
                             f"{_suggest(recipe.export.dtype, DTYPE_NAMES)} (one of {', '.join(DTYPE_NAMES)})"))
    if recipe.eval is not None:
        problems += _eval_problems(recipe.eval)
    if recipe.eval is not None:
        from llmrank.eval.metrics import check_metric

        for i, m in enumerate(recipe.eval.metrics):
            msg = check_metric(m)
            if msg:
                problems.append((("eval", "metrics", i), msg))
        if recipe.eval.dtype is not None:
            from llmrank.checks import DTYPE_NAMES

            if recipe.eval.dtype not in DTYPE_NAMES:
                problems.append((("eval", "dtype"), f"unknown dtype {recipe.eval.dtype!r} (one of {', '.join(DTYPE_NAMES)})"))
    return problems


EVAL_ROWS = ("first_stage", "teacher", "student_before", "student", "student_refined")
"""The rows an eval table may name in ``eval.baselines``."""


def _eval_problems(ev: EvalSection) -> list[tuple[tuple, str]]:
    problems: list[tuple[tuple, str]] = []
    for i, row in enumerate(ev.baselines):
        if row not in EVAL_ROWS:
            problems.append((("eval", "baselines", i), f"unknown eval row {row!r}{_suggest(row, EVAL_ROWS)} "
                             f"(one of {', '.join(EVAL_ROWS)})"))
    if not ev.datasets and not ev.suite:
        problems.append((("eval",), "an eval section evaluates on datasets: give 'datasets' or a 'suite' (without "
                         "them its other keys would be ignored)"))
    return problems


def _teacher_problems(t: TeacherConfig, where: tuple) -> list[tuple[tuple, str]]:
    """A teacher section against the ranking methods' registry: the method exists; its options are the
    method's (checked against its class); a given prompt loads and is written for the method; the backend
    exists; fusion members are teachers themselves; keys of another method are errors. (Whether its model can
    be loaded is checked before the stages run, :func:`check_models`: a GPU recipe still loads offline.)"""
    from llmrank.rerankers import RERANKERS, TEACHER_METHODS, method_options

    methods = [*RERANKERS, *TEACHER_METHODS]
    if t.method not in methods:
        return [(where + ("method",), f"unknown teacher method {t.method!r}{_suggest(t.method, methods)} "
                 f"(one of {', '.join(methods)})")]
    problems: list[tuple[tuple, str]] = []
    given = t.model_fields_set
    if t.method == "fusion":
        if not t.members:
            problems.append((where + ("members",), "method 'fusion' fuses the rankings of its 'members' (a list of "
                             "teacher sections); give at least one"))
        for i, m in enumerate(t.members):
            problems += _teacher_problems(m, where + ("members", i))
        return problems
    for key in ("members", "fusion", "include_first_stage"):
        if key in given:
            problems.append((where + (key,), f"'{key}' is for method 'fusion'; method '{t.method}' does not use it"))
    if t.method == "oracle":
        return problems
    from llmrank.config.options import check_options

    own = {k: v for k, v in t.options.items() if k != "passages"}  # passages wrap any method: checked above
    if own:
        try:
            specs, open_ = method_options(t.method)
            problems += [(where + ("options", *k), m) for k, m in check_options(specs, own, f"method '{t.method}'", open_)]
        except (ImportError, LlmrankError) as e:
            problems.append((where + ("method",), f"method '{t.method}' cannot be loaded: {e}"))
    if t.prompt is not None and RERANKERS[t.method][1] is not None:
        from llmrank.prompts import load_prompt

        try:
            load_prompt(t.prompt, method=t.method)
        except LlmrankError as e:
            problems.append((where + ("prompt",), str(e)))
    backend = t.backend
    if not backend.startswith(("http://", "https://")):
        from llmrank.backends import BACKENDS

        if backend not in BACKENDS:
            problems.append((where + ("backend",), f"unknown backend {backend!r}{_suggest(backend, BACKENDS)} (one of "
                             f"{', '.join(BACKENDS)}, or an http:// URL)"))
    return problems


def _refine_problems(refine: RefineSection, student) -> list[tuple[tuple, str]]:
    """The refine section against the refiner registry: the method exists and fits the student kind, its
    ``training`` fields, its options (declared per student kind), its own checks (GRPO: rewards) and LoRA."""
    from llmrank.training.refiners import REFINERS, fitting_methods, get_refiner

    if refine.method not in REFINERS:
        return [(("refine", "method"), f"unknown refine method {refine.method!r}{_suggest(refine.method, REFINERS)} "
                 f"(one of {', '.join(REFINERS)})")]
    refiner = get_refiner(refine.method)
    problems: list[tuple[tuple, str]] = []
    if student is None:
        problems.append((("refine",), "refinement needs a student: add a 'distill' section"))
    elif not refiner.fits(student):
        problems.append((("refine", "method"), f"'{refine.method}' does not fit a {student.kind} student "
                         f"({student.description}){refiner.unfit_reason(student)}; it fits: "
                         f"{', '.join(fitting_methods(student)) or 'none'}"))
    else:
        problems += [(("refine", "options", *key), msg) for key, msg in refiner.check_options(student, refine.options)]
    problems += _library_problems(refiner.trainer_config, refine.training, ("refine", "training"))
    problems += refiner.check_section(refine)
    for key in refine.lora:
        from llmrank.students.base import LORA_KEYS

        if key not in LORA_KEYS:
            problems.append((("refine", "lora", key), f"unknown LoRA key{_suggest(key, LORA_KEYS)} (expected "
                             f"{', '.join(LORA_KEYS)})"))
    return problems


def check_inputs(recipe: Recipe, where: str = "recipe") -> None:
    """The recipe's dataset paths exist (``hf://`` ids aside): checked before any stage runs."""
    entries: list[tuple[str, str]] = [("data.dataset", recipe.data.dataset)]
    if recipe.eval is not None:
        entries += [(f"eval.datasets[{i}].dataset", d.dataset) for i, d in enumerate(recipe.eval.datasets)]
        entries += [(f"eval.students.{row}", p) for row, p in recipe.eval.students.items()]
    if recipe.teacher.method == "student":
        entries.append(("teacher.model", recipe.teacher.model))
    for key, p in entries:
        if not p.startswith("hf://") and not Path(p).exists():
            raise LlmrankError(f"{where}: key '{key}': dataset path {p} does not exist")
    spec = recipe.data.first_stage
    named = spec in ("bm25", "bm25+dense", "hybrid", "dense") or spec.startswith("dense:")
    if not named and not Path(spec).expanduser().exists():
        raise LlmrankError(f"{where}: key 'data.first_stage': {spec!r} is not 'bm25', 'bm25+dense', 'dense' or "
                           f"'dense:<model>', and no run file or bi-encoder folder is at that path")


def recipe_models(recipe: Recipe) -> list[tuple[str, str, str]]:
    """``(key, model, backend)`` of every model the recipe loads in this process, teacher first: the teacher
    (and fusion members) on the ``hf``/``vllm`` backends, and the student's base model. A teacher behind an
    OpenAI-compatible server and the ``dense`` / ``oracle`` teachers load no LLM here."""
    from llmrank.rerankers import needs_backend

    out: list[tuple[str, str, str]] = []

    def teacher(t: TeacherConfig, key: str) -> None:
        if t.method == "fusion":
            for i, m in enumerate(t.members):
                teacher(m, f"{key}.members[{i}]")
        elif t.method in ("oracle",) or not needs_backend(t.method):
            return
        elif t.backend in ("hf", "vllm"):
            out.append((f"{key}.model", t.model, t.backend))

    teacher(recipe.teacher, "teacher")
    if recipe.distill is not None:
        out.append(("distill.model", recipe.distill.model, "hf"))
    if recipe.generate is not None and recipe.generate.backend in ("hf", "vllm"):  # the query generator
        out.append(("generate.model", recipe.generate.model, recipe.generate.backend))
    return out


def check_models(recipe: Recipe, where: str = "recipe") -> None:
    """Before any stage runs: every model the recipe loads resolves (an alias, a local folder, the local hub
    cache, or a hub id the hub answers for within seconds: :func:`llmrank.models.check_model`), and vLLM is
    importable where the recipe asks for it. The error is one line naming the key that holds the model."""
    import importlib.util

    from llmrank.models import check_model

    vllm = importlib.util.find_spec("vllm") is not None
    for key, name, backend in recipe_models(recipe):
        if backend == "vllm" and not vllm:
            raise LlmrankError(f"{where}: key '{key.rsplit('.', 1)[0]}.backend': 'vllm' needs vLLM, which is not "
                               "installed for this python (pip install 'llmrank[vllm]' on a GPU machine; on a CPU "
                               "`make vllm` and .venv-vllm/bin/llmrank run …; or backend: hf)")
        check = check_model
        if key == "distill.model":  # a kind whose base is not an LLM (a bi-encoder) checks its own
            from llmrank.students import get_student

            check = getattr(get_student(recipe.distill.kind), "check_model", None) or check_model
        try:
            check(name)
        except LlmrankError as e:
            raise LlmrankError(f"{where}: key '{key}': {e}") from None
    if recipe.refine is not None and recipe.refine.training.get("use_vllm") and not vllm:
        raise LlmrankError(f"{where}: key 'refine.training.use_vllm': true needs vLLM installed (pip install "
                           "'llmrank[vllm]' on a CUDA machine); set it to false to generate with transformers")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, interpolate, override and validate a recipe; every problem names the file and the key."""
    path = Path(path)
    sync_schema()  # kinds registered since the schema was built
    if not path.is_file():
        raise LlmrankError(f"{path}: recipe file not found")
    raw, text = _read_yaml(path, "the recipe")
    if not isinstance(raw, dict):
        got = "the file is empty" if raw is None else f"got {_described(raw)}"
        raise LlmrankError(f"{path}: a recipe is a mapping with the sections name, data, teacher, distill, refine, "
                           f"eval, export ({got})")
    set_paths = []
    for o in overrides or []:
        set_paths.append((apply_override(raw, o, f"{path}: --set"), o))
    raw = _interpolate(raw, (), str(path))
    lines = _line_map(text)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise LlmrankError(_format_error(e, str(path), lines, set_paths)) from None
    problems = recipe_problems(recipe)
    if problems:
        raise LlmrankError("; ".join(f"{_at(loc, str(path), lines, set_paths)}: key '{_path_str(loc)}': {msg}"
                                     for loc, msg in problems))
    base = path.resolve().parent
    _resolve_paths(recipe, base)
    if recipe.eval is not None:
        if recipe.eval.suite:
            suite_path, variant = suite_location(recipe.eval.suite, base, f"{path}: key 'eval.suite'")
            recipe.eval.suite = str(suite_path) + (f":{variant}" if variant else "")
        eval_entries(recipe.eval, where=str(path))  # the suite loads and every label is unique
    return recipe


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    """Relative dataset paths are taken from the working directory if they exist there, else from the
    recipe's folder."""
    recipe.data.dataset = _fix_path(recipe.data.dataset, [base])
    if recipe.eval:
        for d in recipe.eval.datasets:
            d.dataset = _fix_path(d.dataset, [base])
        recipe.eval.students = {row: _fix_path(p, [base]) for row, p in recipe.eval.students.items()}
