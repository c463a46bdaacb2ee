"""Recipes: one YAML file names the whole pipeline — data, teacher, distill, refine, eval, export.

A recipe is validated completely before anything runs: an unknown or mistyped key, a wrong type or a
missing required field is reported with the file (and line), the key path (``teacher.members[0].method``)
and what was expected. ``${VAR}`` and ``${VAR:-default}`` are read from the environment; ``--set a.b=c``
overrides any key (its value parsed as YAML; ``eval.datasets[0].queries=50`` indexes a list). An eval
suite (``eval.suite: beir``, a file under ``eval/``) is validated the same way. YAML floats need no dot
(``1e-4`` is a number). See ``recipes/`` for examples and :class:`Recipe` for every field.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model, field_validator

from llmrank.assets import asset_dir
from llmrank.errors import LlmrankError


class Section(BaseModel):
    # numbers are accepted for text fields (``name: ${RUN}`` with RUN=42 is the name "42")
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


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
    name = f"{kind.capitalize()}DistillSection"
    return create_model(name, __base__=Section, __doc__=f"The distill section of a {kind} student.", **fields)


def _distill_kind(value) -> str:
    if isinstance(value, dict):
        return value.get("kind", "pointwise")
    return getattr(value, "kind", "pointwise")


DISTILL_SECTIONS: dict[str, type[BaseModel]] = {k: _distill_section(k) for k in ("pointwise", "reasoning")}
"""kind -> its distill section; the recipe's ``distill`` is one of them, chosen by ``kind`` (default pointwise)."""
DistillSection = Annotated[Union[tuple(Annotated[m, Tag(k)] for k, m in DISTILL_SECTIONS.items())],  # type: ignore[misc]
                           Discriminator(_distill_kind)]


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
    method: Literal["grpo", "dpo"] = Field(description="grpo (ranking rewards) or dpo (ranking preferences)")
    rewards: list[RewardSpec] = Field(default_factory=list, description="grpo: the rewards and their weights "
                                      "(default: format 0.2 + relevance 1.0)")
    options: dict[str, Any] = Field(default_factory=dict, description="how prompts/pairs are built: grpo: per_query, "
                                    "queries, top_m, balance; dpo: pairs_per_query, top_m, queries, anchors (pointwise), samples, "
                                    "temperature, max_new_tokens, per_query (reasoning)")
    lora: dict[str, Any] = Field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05},
                                 description="the refinement's new LoRA adapter: r, alpha, dropout, target_modules")
    training: dict[str, Any] = Field(default_factory=dict, description="trl.GRPOConfig (grpo) or trl.DPOConfig (dpo) fields")


class EvalDataset(Section):
    dataset: str = Field(description="dataset path")
    split: str = Field("test", description="split or BRIGHT task")
    name: str | None = Field(None, description="label in the report (default: <folder>-<split>)")
    queries: int | None = Field(None, ge=1, description="first N queries only")
    query_field: str = Field("query", description="BRIGHT: the examples field used as query text ('query', or "
                                                  "'reasoning' for the reasoning-expanded queries)")

    def label(self) -> str:
        """The dataset's name in the report and under ``eval/``."""
        if self.name:
            return self.name
        base = f"{Path(self.dataset).name}-{self.split}"
        return base if self.query_field == "query" else f"{base}-{self.query_field}"


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
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillSection | None = None
    refine: RefineSection | None = None
    eval: EvalSection | None = None
    export: ExportSection | None = None
    compare: CompareSection | None = None

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (a stage's manifest compares it to decide a re-run)."""
        payload = {n: (getattr(self, n).model_dump() if getattr(self, n) is not None else None) for n in names}
        payload["seed"] = self.seed
        if "eval" in names and self.eval is not None and self.eval.suite:  # the suite's datasets, not its name
            payload["eval_suite"] = [d.model_dump() for d in load_suite(self.eval.suite)[1]]
        payload = same_paths(payload)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_paths(value):
    """``value`` with every string that names an existing local path (it holds a ``/``) replaced by its
    resolved absolute path, so that ``../shared/data/scifact`` and ``/work/shared/data/scifact`` (one folder
    spelled from two places) give one stage hash and a run is not redone for the spelling of its data."""
    if isinstance(value, dict):
        return {k: same_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [same_paths(v) for v in value]
    if isinstance(value, str) and "/" in value and "://" not in value and "\n" not in value:
        try:  # prose with a slash (an eval note) is no path: too long a name is an OSError
            p = Path(value).expanduser()
            if p.exists():
                return str(p.resolve())
        except (OSError, ValueError):
            pass
    return value


TeacherConfig.model_rebuild()

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SUITES_DIR = asset_dir("suites")
"""Where ``eval.suite: <name>`` is looked up: the suites shipped in the package (``llmrank/assets/suites``,
linked from ``eval/<name>.yaml`` at the top of the repository)."""


class _Loader(yaml.SafeLoader):
    """Safe YAML where ``1e-4`` is a number: PyYAML follows YAML 1.1, which reads a float without a dot
    (``learning_rate: 1e-4``) as a string, and a string learning rate reaches the optimizer."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


# -- key paths and YAML lines ---------------------------------------------------------------------------

def _path_str(loc) -> str:
    """``('teacher', 'members', 0, 'method')`` -> ``teacher.members[0].method``."""
    out = ""
    for tok in loc:
        if isinstance(tok, int):
            out += f"[{tok}]"
        else:
            out += f".{tok}" if out else str(tok)
    return out


def _line_map(text: str) -> dict[tuple, int]:
    """1-based line of every key path in a YAML document (empty when it does not parse)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = path + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _kind(annotation) -> tuple[str, Any]:
    """What a field holds: ``("model", cls)``, ``("list", item annotation)``, ``("dict", value annotation)``
    or ``("scalar", annotation)``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        inner = [_kind(a) for a in args]
        if all(k == "model" for k, _ in inner):  # a union of sections chosen by a tag (distill: by kind)
            return ("union", [m for _, m in inner])
        return ("scalar", annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    if origin is list:
        return ("list", (get_args(annotation) or (Any,))[0])
    if origin is dict:
        return ("dict", (get_args(annotation) or (Any, Any))[-1])
    if annotation is dict or annotation is Any:
        return ("dict", Any)
    return ("scalar", annotation)


def _model_at(loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The section (pydantic model) at a key path, or None inside a free-form mapping."""
    kind: tuple[str, Any] = ("model", root)
    for tok in loc:
        if kind[0] == "union":
            kind = _union_member(kind[1], tok)
            if kind[0] == "model" and _tag_of(kind[1]) == tok:
                continue
        if kind[0] == "model" and isinstance(tok, str) and tok in kind[1].model_fields:
            kind = _kind(kind[1].model_fields[tok].annotation)
        elif (kind[0] == "list" and isinstance(tok, int)) or (kind[0] == "dict" and kind[1] is not Any):
            kind = _kind(kind[1])
        else:
            return None
    if kind[0] == "union":
        return kind[1][0]
    return kind[1] if kind[0] == "model" else None


def _tag_of(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("kind")
    return f.default if f is not None and isinstance(f.default, str) else None


def _union_member(models: list, tok) -> tuple[str, Any]:
    """In a union of sections: the member a tag names (pydantic's error paths include it), else the first
    member that has the key ``tok``, else the first member."""
    for m in models:
        if _tag_of(m) == tok:
            return ("model", m)
    for m in models:
        if isinstance(tok, str) and tok in m.model_fields:
            return ("model", m)
    return ("model", models[0])


def _clean_loc(loc: tuple, root: type[BaseModel]) -> tuple:
    """A pydantic error path without the tags of tagged unions (``distill.pointwise.loss`` -> ``distill.loss``)."""
    out: list = []
    kind: tuple[str, Any] = ("model", root)
    for tok in loc:
        if kind[0] == "union":
            member = _union_member(kind[1], tok)
            if _tag_of(member[1]) == tok:
                kind = member
                continue
            kind = member
        out.append(tok)
        if kind[0] == "model" and isinstance(tok, str) and tok in kind[1].model_fields:
            kind = _kind(kind[1].model_fields[tok].annotation)
        elif kind[0] in ("list", "dict") and kind[1] is not Any:
            kind = _kind(kind[1])
        else:
            kind = ("any", None)
    return tuple(out)


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _described(value) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# -- ${ENV} and --set ------------------------------------------------------------------------------------

def _interpolate(value, path: tuple, where: str, root: type[BaseModel] | None = None):
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string. A value that is one ``${…}`` alone and sits
    in a free-form mapping (``distill.training``, ``teacher.options`` …, where no field type converts it)
    takes the YAML type of its expansion (``max_steps: ${STEPS:-60}`` is the number 60); in a section the
    field's type converts the text, and an empty expansion there is no value (``queries: ${N:-}``)."""
    root = root or Recipe
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise LlmrankError(f"{where}: key '{_path_str(path)}': environment variable ${{{name}}} is not set "
                               f"(set it, or write ${{{name}:-default}} for a default)")

        out = _ENV_RE.sub(sub, value)
        if out == value or not _ENV_RE.fullmatch(value):
            return out
        if _model_at(path[:-1], root) is not None:  # a section's field: its type converts the text
            return out if out != "" else None
        try:
            typed = _yaml_load(out)
        except yaml.YAMLError:
            return out
        return typed if typed is None or isinstance(typed, (str, int, float, bool)) else out
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (k,), where, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (i,), where, root) for i, v in enumerate(value)]
    return value


_PART_RE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_@\-]*)((?:\[[0-9]+\])*)")


def _parse_key(key: str, fail) -> list:
    tokens: list = []
    for part in key.split("."):
        m = _PART_RE.fullmatch(part.strip())
        if not m:
            fail(f"'{part}' is not a key (expected KEY.PATH=VALUE with names such as distill.training.max_steps "
                 "or eval.datasets[0].queries)")
        tokens.append(m.group(1))
        tokens += [int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2))]
    return tokens


def apply_override(raw: dict, assignment: str, where: str = "--set", root: type[BaseModel] | None = None) -> list:
    """Apply ``a.b.c=value`` (value parsed as YAML; ``list[0]`` indexes a list) to ``raw`` in place and
    return the key path set. The path is checked against the recipe's sections first: an unknown section
    key, or a value (``data.k``) used as a section, is an error naming the key."""
    root = root or Recipe

    def fail(why: str):
        raise LlmrankError(f"{where} {assignment!r}: {why}")

    if "=" not in assignment:
        fail("expected KEY.PATH=VALUE, e.g. distill.training.max_steps=10")
    key, value = assignment.split("=", 1)
    if not key.strip():
        fail("nothing before '='; expected KEY.PATH=VALUE")
    tokens = _parse_key(key.strip(), fail)
    try:
        parsed = _yaml_load(value)
    except yaml.YAMLError as e:
        fail(f"the value is not valid YAML ({getattr(e, 'problem', e)})")

    # the schema: each key must exist in its section, and only sections, mappings and lists hold keys
    kind: tuple[str, Any] = ("model", root)
    for j, tok in enumerate(tokens):
        parent = _path_str(tokens[:j]) or "the recipe"
        here = _path_str(tokens[: j + 1])
        if kind[0] == "union":
            kind = _union_member(kind[1], tok)
        if kind[0] == "model":
            fields = kind[1].model_fields
            if isinstance(tok, int):
                fail(f"'{parent}' is a section, not a list")
            if tok not in fields:
                fail(f"unknown key '{here}'{_suggest(tok, fields)} (keys of {parent}: {', '.join(fields)})")
            kind = _kind(fields[tok].annotation)
        elif kind[0] == "list":
            if not isinstance(tok, int):
                fail(f"'{parent}' is a list; pick an item with {parent}[0]")
            kind = _kind(kind[1])
        elif kind[0] == "dict":
            kind = ("any", None) if kind[1] is Any else _kind(kind[1])
        elif kind[0] == "scalar":
            fail(f"'{parent}' is a value ({_type_name(kind[1])}), not a section: write --set {parent}=VALUE")

    # the document: walk (creating missing mappings), then set
    node: Any = raw
    for j, tok in enumerate(tokens[:-1]):
        here = _path_str(tokens[: j + 1])
        nxt = tokens[j + 1]
        if isinstance(tok, int):
            if tok >= len(node):
                fail(f"'{here}': the list has {len(node)} item(s)")
            child = node[tok]
        else:
            child = node.get(tok)
            if child is None:
                if isinstance(nxt, int):
                    fail(f"'{here}' is empty, so it has no item {nxt}")
                child = node[tok] = {}
        if isinstance(nxt, int) and not isinstance(child, list):
            fail(f"'{here}' is not a list (it is {_described(child)})")
        if isinstance(nxt, str) and not isinstance(child, dict):
            fail(f"'{here}' is not a section (it is {_described(child)}): write --set {here}=VALUE")
        node = child
    last = tokens[-1]
    if isinstance(last, int) and last >= len(node):
        fail(f"'{_path_str(tokens)}': the list has {len(node)} item(s)")
    node[last] = parsed
    return tokens


# -- validation errors -----------------------------------------------------------------------------------

def _format_error(e: ValidationError, where: str, lines: dict | None = None, overrides: list | None = None,
                  root: type[BaseModel] | None = None) -> str:
    """One clause per problem: ``FILE[:LINE]: key 'a.b[0].c': what is wrong (what was expected)``."""
    root = root or Recipe
    out = []
    for err in e.errors():
        raw = tuple(err["loc"])
        loc = _clean_loc(raw, root)
        path = _path_str(loc) or "(top level)"
        kind = err["type"]
        if kind == "union_tag_invalid":
            from llmrank.students import STUDENT_KINDS

            loc = loc + ("kind",)
            path = _path_str(loc)
            tag = (err.get("ctx") or {}).get("tag", "")
            msg = f"unknown student kind {tag!r}{_suggest(tag, STUDENT_KINDS)} (one of {', '.join(STUDENT_KINDS)})"
        elif kind == "extra_forbidden":
            section = _model_at(raw[:-1], root)
            fields = list(section.model_fields) if section else []
            msg = "unknown key" + _suggest(loc[-1], fields)
            if fields:
                msg += f" (keys of {_path_str(loc[:-1]) or 'a recipe'}: {', '.join(fields)})"
        elif kind == "missing":
            field = None
            section = _model_at(raw[:-1], root)
            if section is not None and loc and loc[-1] in section.model_fields:
                field = section.model_fields[loc[-1]]
            msg = "required key is missing" + (f": {field.description}" if field and field.description else "")
        else:
            msg = err["msg"]
            if kind == "value_error" and msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if "input" in err and not (kind == "value_error" and isinstance(err["input"], (dict, list))):
                msg += f" (got {_described(err['input'])})"
        out.append(f"{_at(loc, where, lines, overrides)}: key '{path}': {msg}")
    return "; ".join(out)


def _at(loc: tuple, where: str, lines: dict | None, overrides: list | None) -> str:
    """``FILE:LINE`` of a key path, or ``FILE: --set 'a.b=c'`` when an override set it."""
    at = where
    src = next((o for o in overrides or [] if tuple(o[0][: len(loc)]) == tuple(loc[: len(o[0])])), None)
    if src is not None:
        at += f": --set {src[1]!r}"
    elif lines:
        for n in range(len(loc), 0, -1):
            if tuple(loc[:n]) in lines:
                at += f":{lines[tuple(loc[:n])]}"
                break
    return at


REFINE_CONFIGS = {"grpo": "GRPOConfig", "dpo": "DPOConfig"}
RATIONALE_METHODS = ("rationale",)
"""Teacher methods whose records carry an explanation per document."""


def recipe_problems(recipe: Recipe) -> list[tuple[tuple, str]]:
    """What the schema cannot see, checked at load before anything runs: the ``training`` mappings against
    the library configs (transformers' / trl's, read from source), LoRA settings, the student kind's own
    checks (loss names), metric names and whether the refine method fits the student."""
    from llmrank.configs import check_fields, library_fields
    from llmrank.students import get_student

    problems: list[tuple[tuple, str]] = []
    if recipe.distill is not None:
        student = get_student(recipe.distill.kind)
        schema = library_fields(student.base_config)
        if schema:
            for key, msg in check_fields(schema, recipe.distill.training, student.base_config):
                problems.append((("distill", "training", key) if key else ("distill", "training"), msg))
        for key, value in recipe.distill.lora.items():
            from llmrank.students.base import LORA_KEYS

            if key not in LORA_KEYS:
                problems.append((("distill", "lora", key), f"unknown LoRA key{_suggest(key, LORA_KEYS)} (expected "
                                 f"{', '.join(LORA_KEYS)})"))
            elif key == "r" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                problems.append((("distill", "lora", key), f"expected an integer >= 1 (got {_described(value)})"))
            elif key == "alpha" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                problems.append((("distill", "lora", key), f"expected a number > 0 (got {_described(value)})"))
            elif key == "dropout" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
                problems.append((("distill", "lora", key), f"expected a number in [0, 1) (got {_described(value)})"))
        for key, msg in student.check_section(recipe.distill):
            problems.append((("distill", key), msg))
        if student.needs_rationales and recipe.teacher.method not in RATIONALE_METHODS:
            problems.append((("teacher", "method"), f"a {student.kind} student learns from the teacher's explanations: "
                             f"use a teacher that writes them ({', '.join(RATIONALE_METHODS)}), not "
                             f"'{recipe.teacher.method}'"))
    if recipe.refine is not None:
        method = recipe.refine.method
        if recipe.distill is None:
            problems.append((("refine",), "refinement needs a student: add a 'distill' section"))
        else:
            student = get_student(recipe.distill.kind)
            if method not in student.refine_methods:
                problems.append((("refine", "method"), f"'{method}' does not fit a {student.kind} student "
                                 f"({student.description}); it fits: {', '.join(student.refine_methods) or 'none'}"))
        schema = library_fields(REFINE_CONFIGS[method])
        if schema:
            for key, msg in check_fields(schema, recipe.refine.training, REFINE_CONFIGS[method]):
                problems.append((("refine", "training", key) if key else ("refine", "training"), msg))
        problems += _refine_problems(recipe.refine, recipe.distill.kind if recipe.distill is not None else None)
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


REFINE_OPTIONS = {("grpo", "reasoning"): ("per_query", "queries", "top_m", "balance"),
                  ("dpo", "pointwise"): ("pairs_per_query", "top_m", "queries", "anchors"),
                  ("dpo", "reasoning"): ("samples", "temperature", "max_new_tokens", "per_query", "top_m", "queries")}
"""The ``refine.options`` each (method, student kind) takes (llmrank.training.grpo / .dpo)."""


def _refine_problems(refine: RefineSection, kind: str | None) -> list[tuple[tuple, str]]:
    """The refine section's own keys: each reward exists and takes its options (GRPO only), the weights
    come from ``rewards`` rather than ``training.reward_weights``, the options fit the method and student,
    and the LoRA keys."""
    from llmrank.students.base import LORA_KEYS
    from llmrank.training.rewards import build_reward

    problems: list[tuple[tuple, str]] = []
    if refine.rewards and refine.method != "grpo":
        problems.append((("refine", "rewards"), "rewards are for method 'grpo'; DPO learns from preference pairs "
                         "(see refine.options)"))
    for i, spec in enumerate(refine.rewards):
        try:
            build_reward(spec.name, "reward", **spec.options)
        except LlmrankError as e:
            problems.append((("refine", "rewards", i), str(e).removeprefix("reward: ")))
    allowed = REFINE_OPTIONS.get((refine.method, kind))
    for key in refine.options if allowed is not None else ():
        if key not in allowed:
            problems.append((("refine", "options", key), f"not an option of {refine.method} for a {kind} student"
                             f"{_suggest(key, allowed)} (options: {', '.join(allowed)})"))
    if "reward_weights" in refine.training:
        problems.append((("refine", "training", "reward_weights"), "set by llmrank from each reward's 'weight' in "
                         "refine.rewards; remove it"))
    for key in refine.lora:
        if key not in LORA_KEYS:
            problems.append((("refine", "lora", key), f"unknown LoRA key{_suggest(key, LORA_KEYS)} (expected "
                             f"{', '.join(LORA_KEYS)})"))
    return problems


def check_inputs(recipe: Recipe, where: str = "recipe") -> None:
    """The recipe's dataset paths exist (``hf://`` ids aside): checked before any stage runs."""
    entries: list[tuple[str, str]] = [("data.dataset", recipe.data.dataset)]
    if recipe.eval is not None:
        entries += [(f"eval.datasets[{i}].dataset", d.dataset) for i, d in enumerate(recipe.eval.datasets)]
    for key, p in entries:
        if not p.startswith("hf://") and not Path(p).exists():
            raise LlmrankError(f"{where}: key '{key}': dataset path {p} does not exist")


def _read_yaml(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LlmrankError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        col = f", column {mark.column + 1}" if mark else ""
        raise LlmrankError(f"{path}{at}: malformed YAML (line {mark.line + 1 if mark else '?'}{col}: "
                           f"{getattr(e, 'problem', None) or e})") from None
    return raw, text


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, interpolate, override and validate a recipe; every problem names the file and the key."""
    path = Path(path)
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
            suite_path, variant = _suite_location(recipe.eval.suite, base, f"{path}: key 'eval.suite'")
            recipe.eval.suite = str(suite_path) + (f":{variant}" if variant else "")
        eval_entries(recipe.eval, where=str(path))  # the suite loads and every label is unique
    return recipe


def _fix_path(p: str, bases: list[Path]) -> str:
    """A relative path as it is when it exists from the working directory, else from the first base
    folder where it exists, else unchanged."""
    if p.startswith(("hf://", "/")) or Path(p).exists():
        return p
    for base in bases:
        cand = base / p
        if cand.exists():
            return str(cand)
    return p


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    """Relative dataset paths are taken from the working directory if they exist there, else from the
    recipe's folder."""
    recipe.data.dataset = _fix_path(recipe.data.dataset, [base])
    if recipe.eval:
        for d in recipe.eval.datasets:
            d.dataset = _fix_path(d.dataset, [base])


# -- eval suites -----------------------------------------------------------------------------------------

class EvalSuite(Section):
    """An eval suite file (``eval/*.yaml``): a ``datasets`` list of eval entries, and optionally other named
    lists under ``variants`` (``suite: bright:reasoning`` picks ``variants.reasoning``)."""

    description: str | None = Field(None, description="what the suite is")
    datasets: list[EvalDataset] = Field(description="the suite's eval datasets")
    variants: dict[str, list[EvalDataset]] = Field(default_factory=dict,
                                                   description="other named dataset lists (suite: NAME:VARIANT)")


def _suite_location(suite: str, base: Path | None = None, where: str = "eval suite") -> tuple[Path, str | None]:
    """``name``, ``name:variant``, ``path.yaml`` or ``path.yaml:variant`` -> (existing file, variant)."""
    ref, variant = suite, None
    head, sep, tail = suite.rpartition(":")
    if sep and re.fullmatch(r"[A-Za-z0-9_\-]+", tail) and head:
        ref, variant = head, tail
    if not Path(ref).suffix:
        cands = [SUITES_DIR / f"{ref}.yaml"]
    else:
        p = Path(ref)
        cands = [p] if p.is_absolute() else [p, *( [base / p] if base else []), SUITES_DIR / p.name]
    for c in cands:
        if c.is_file():
            return c.resolve(), variant
    names = sorted(f.stem for f in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise LlmrankError(f"{where}: eval suite '{suite}' not found (looked for {', '.join(str(c) for c in cands)}"
                       + (f"; suites in {SUITES_DIR}: {', '.join(names)}" if names else "") + ")")


def load_suite(suite: str, base: Path | None = None) -> tuple[Path, list[EvalDataset]]:
    """The datasets of an eval suite (``eval/<name>.yaml``, a path, either with ``:variant``), validated
    like a recipe's ``eval.datasets``: a bad entry names the suite file, its line and the key."""
    path, variant = _suite_location(suite, base)
    raw, text = _read_yaml(path, "the eval suite")
    if not isinstance(raw, dict):
        got = "the file is empty" if raw is None else f"got {_described(raw)}"
        raise LlmrankError(f"{path}: an eval suite is a mapping with a 'datasets' list ({got})")
    raw = _interpolate(raw, (), str(path), EvalSuite)
    try:
        parsed = EvalSuite.model_validate(raw)
    except ValidationError as e:
        raise LlmrankError(_format_error(e, str(path), _line_map(text), root=EvalSuite)) from None
    if variant is None:
        entries = parsed.datasets
    elif variant in parsed.variants:
        entries = parsed.variants[variant]
    else:
        raise LlmrankError(f"{path}: eval suite has no variant '{variant}'"
                           f" (variants: {', '.join(parsed.variants) or 'none'})")
    # a shipped suite's relative paths (../shared/data) are read from the repository root of a checkout
    bases = [path.parent, Path(__file__).resolve().parents[1]] if path.parent == SUITES_DIR else [path.parent]
    for d in entries:
        d.dataset = _fix_path(d.dataset, bases)
    return path, entries


def eval_entries(ev: EvalSection, where: str = "eval") -> list[EvalDataset]:
    """The eval section's datasets followed by its suite's, each with a unique label (its report name)."""
    entries = list(ev.datasets)
    if ev.suite:
        entries += load_suite(ev.suite)[1]
    seen: dict[str, EvalDataset] = {}
    for d in entries:
        label = d.label()
        if label in seen:
            raise LlmrankError(f"{where}: key 'eval.datasets': two eval datasets are both named '{label}' "
                               f"({seen[label].dataset} split {seen[label].split} and {d.dataset} split {d.split}); "
                               "give each a distinct 'name'")
        seen[label] = d
    return entries
