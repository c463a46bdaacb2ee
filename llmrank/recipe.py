"""Recipes: one YAML file names the whole pipeline — data, teacher, distill, refine, eval, export.

A recipe is validated completely before anything runs: an unknown or mistyped key, a wrong type or a
missing required field is reported with the file, the key path and what was expected. ``${VAR}`` and
``${VAR:-default}`` are read from the environment; ``--set a.b=c`` overrides any key (its value parsed
as YAML). See ``recipes/`` for examples and :class:`Recipe` for every field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmrank.errors import LlmrankError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    dataset: str = Field(description="dataset path (BEIR dir, candidates JSON, BRIGHT dir, jsonl)")
    train_split: str = Field("train", description="split whose queries are taught and distilled")
    first_stage: str = Field("bm25", description="'bm25', 'bm25+dense' (merged, for hard negatives) or a TREC run path")
    k: int = Field(20, ge=2, description="candidates per query taken from the first stage for teaching")
    queries: int | None = Field(None, ge=1, description="keep only the first N training queries")


class TeacherConfig(Section):
    method: str = Field("pointwise", description="pointwise | pairwise | listwise | setwise | rationale | dense | oracle | fusion")
    model: str = Field("smollm2-135m", description="teacher model: alias, local path or hub id")
    backend: str = Field("hf", description="hf | vllm | openai | http://… base URL")
    prompt: str | None = Field(None, description="prompt name or YAML path (default: the method's)")
    options: dict[str, Any] = Field(default_factory=dict, description="method options (window, step, strategy, …)")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="backend options (dtype, batch_size, base_url, …)")
    members: list[TeacherConfig] = Field(default_factory=list, description="for method 'fusion': the teachers fused")
    fusion: Literal["rrf", "borda"] = Field("rrf", description="for method 'fusion': rank fusion rule")
    include_first_stage: bool = Field(False, description="for method 'fusion': fuse the first-stage ranking too")


class DistillSection(Section):
    model: str = Field("smollm2-135m", description="student base model")
    prompt: str = Field("yes_no", description="pointwise prompt the student is trained and served with")
    loss: str = Field("listnet", description="ranking loss name (llmrank.losses)")
    loss_options: dict[str, Any] = Field(default_factory=dict, description="loss keyword arguments")
    group_size: int = Field(8, ge=2, description="candidates per query per training group")
    max_doc_tokens: int = Field(256, ge=8, description="document truncation (document side only)")
    lora: dict[str, Any] = Field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05},
                                 description="LoRA: r, alpha, dropout, target_modules")
    qlora: bool = Field(False, description="4-bit nf4 base (bitsandbytes) under the LoRA")
    dtype: str = Field("float32", description="base weights dtype")
    training: dict[str, Any] = Field(default_factory=dict, description="passed to transformers.TrainingArguments")
    kind: Literal["pointwise", "reasoning"] = Field("pointwise", description="pointwise yes/no student, or reasoning student (SFT on rationales)")

    @field_validator("lora")
    @classmethod
    def _lora_keys(cls, v):
        bad = set(v) - {"r", "alpha", "dropout", "target_modules"}
        if bad:
            raise ValueError(f"unknown LoRA key(s) {sorted(bad)} (expected r, alpha, dropout, target_modules)")
        return v


class RefineSection(Section):
    method: Literal["grpo", "dpo"] = Field(description="grpo (ranking rewards) or dpo (ranking preferences)")
    options: dict[str, Any] = Field(default_factory=dict, description="trainer options")
    training: dict[str, Any] = Field(default_factory=dict, description="passed to trl's config")


class EvalDataset(Section):
    dataset: str = Field(description="dataset path")
    split: str = Field("test", description="split or BRIGHT task")
    name: str | None = Field(None, description="label in the report")
    queries: int | None = Field(None, ge=1, description="first N queries only")


class EvalSection(Section):
    datasets: list[EvalDataset] = Field(default_factory=list, description="datasets to evaluate on")
    suite: str | None = Field(None, description="an eval suite YAML under eval/ (beir.yaml, bright.yaml, trec-dl.yaml)")
    metrics: list[str] = Field(default_factory=lambda: ["ndcg@10", "recall@20", "mrr@10"], description="metric names")
    top_k: int = Field(20, ge=1, description="rerank depth")
    baselines: list[str] = Field(default_factory=lambda: ["first_stage", "teacher", "student_before", "student"],
                                 description="rows of the report table")


class ExportSection(Section):
    enabled: bool = Field(True, description="export the student for vLLM serving")
    dtype: str = Field("bfloat16", description="dtype of the exported weights")


class Recipe(Section):
    name: str = Field(description="run name: outputs go to runs/<name>/")
    seed: int = Field(0, description="random seed")
    data: DataConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillSection | None = None
    refine: RefineSection | None = None
    eval: EvalSection | None = None
    export: ExportSection | None = None

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (a stage's manifest compares it to decide a re-run)."""
        payload = {n: (getattr(self, n).model_dump() if getattr(self, n) is not None else None) for n in names}
        payload["seed"] = self.seed
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


TeacherConfig.model_rebuild()

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value, path: str, where: str):
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise LlmrankError(f"{where}: key '{path}': environment variable ${{{name}}} is not set (write ${{{name}:-default}} for a default)")
        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), where) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", where) for i, v in enumerate(value)]
    return value


def apply_override(raw: dict, assignment: str, where: str = "--set") -> None:
    """``a.b.c=value`` (value parsed as YAML) applied in place."""
    if "=" not in assignment:
        raise LlmrankError(f"{where} {assignment!r}: expected KEY.PATH=VALUE")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise LlmrankError(f"{where} {assignment!r}: '{p}' is not a section")
        node = node[p]
    node[parts[-1]] = yaml.safe_load(value)


def _format_error(e: ValidationError, where: str) -> str:
    lines = []
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key (check the spelling; see llmrank.recipe for the fields of each section)"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            got = err.get("input")
            msg = f"{err['msg']}" + (f" (got {got!r})" if not isinstance(got, (dict, list)) else "")
        lines.append(f"{where}: key '{path}': {msg}")
    return "; ".join(lines)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, interpolate, override and validate a recipe; every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise LlmrankError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise LlmrankError(f"{path}: malformed YAML{at} ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise LlmrankError(f"{path}: a recipe is a mapping with sections name, data, teacher, distill, refine, eval, export")
    for o in overrides or []:
        apply_override(raw, o)
    raw = _interpolate(raw, "", str(path))
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise LlmrankError(_format_error(e, str(path))) from None
    base = path.resolve().parent
    _resolve_paths(recipe, base)
    return recipe


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    """Relative dataset paths are taken from the recipe's folder, or from the working directory if they exist there."""

    def fix(p: str) -> str:
        if p.startswith(("hf://", "/")) or Path(p).exists():
            return p
        cand = base / p
        return str(cand) if cand.exists() else p

    recipe.data.dataset = fix(recipe.data.dataset)
    if recipe.eval:
        for d in recipe.eval.datasets:
            d.dataset = fix(d.dataset)
