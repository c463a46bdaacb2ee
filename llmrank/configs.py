"""Checking a free mapping of settings against a training config class, before anything is imported or run.

A recipe's ``distill.training`` and ``refine.training`` hold the fields of a config dataclass: transformers'
``TrainingArguments`` (the pointwise student), trl's ``SFTConfig`` (the reasoning student), ``GRPOConfig``
or ``DPOConfig`` (refinement). :func:`check_fields` validates such a mapping the way the recipe validates
its own sections: an unknown key gets "did you mean", a value of the wrong type or an impossible value
(a negative learning rate, ``max_steps: 0``) is named with its key path and what was expected.

Importing transformers and trl costs 5–15 s on a small CPU machine (they pull in peft, bitsandbytes and
torch's compiler), far too long for "a bad recipe is named at once". So the fields of those classes are
read from their source files with :mod:`ast` (:func:`library_fields`: name, annotation, default, help),
found through ``importlib.util.find_spec`` without importing them. The training itself then builds the
real dataclass, whose ``__post_init__`` has the last word.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib.util
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# where a config class is defined: class name -> (distribution, file inside it)
LIBRARY_CLASSES = {
    "TrainingArguments": ("transformers", "training_args.py"),
    "SFTConfig": ("trl", "trainer/sft_config.py"),
    "GRPOConfig": ("trl", "trainer/grpo_config.py"),
    "DPOConfig": ("trl", "trainer/dpo_config.py"),
}

# values no training can run with: field -> (test, what is expected)
CONSTRAINTS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "a number > 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "an integer >= 1 (or -1: train num_train_epochs)"),
    "num_train_epochs": (lambda v: v > 0, "a number > 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "an integer >= 1"),
    "warmup_steps": (lambda v: v >= 0, "a number >= 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "max_grad_norm": (lambda v: v >= 0, "a number >= 0"),
    "logging_steps": (lambda v: v > 0, "a number > 0"),
    "save_steps": (lambda v: v > 0, "a number > 0"),
    "eval_steps": (lambda v: v > 0, "a number > 0"),
    "save_total_limit": (lambda v: v >= 1, "an integer >= 1"),
    "adam_epsilon": (lambda v: v > 0, "a number > 0"),
    "max_length": (lambda v: v >= 1, "an integer >= 1"),
    "max_prompt_length": (lambda v: v >= 1, "an integer >= 1"),
    "max_completion_length": (lambda v: v >= 1, "an integer >= 1"),
    "num_generations": (lambda v: v >= 2, "an integer >= 2 (GRPO compares completions within a group)"),
    "temperature": (lambda v: v > 0, "a number > 0"),
    "beta": (lambda v: v >= 0, "a number >= 0"),
    "dataloader_num_workers": (lambda v: v >= 0, "an integer >= 0"),
}
# keys llmrank sets itself: a recipe that sets them is told where they come from
RESERVED = {"output_dir": "the run directory (runs/<name>/<stage>)"}


@dataclass(frozen=True)
class FieldSpec:
    """One settable field: its annotation (as written), default and help text."""

    name: str
    annotation: str
    default: Any = dataclasses.MISSING
    help: str = ""


class _Opaque:
    """An annotation name the checker does not know (an enum such as ``SchedulerType``): any text or number."""


@functools.lru_cache(maxsize=None)
def _source(dist: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(dist)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / rel
    return path if path.is_file() else None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return dataclasses.MISSING  # a computed default (default_factory, a call): unknown here


def _field_of(stmt: ast.AnnAssign) -> FieldSpec:
    name = stmt.target.id  # type: ignore[union-attr]
    ann = ast.unparse(stmt.annotation)
    default, help_ = dataclasses.MISSING, ""
    v = stmt.value
    if isinstance(v, ast.Call) and getattr(v.func, "id", getattr(v.func, "attr", "")) == "field":
        for kw in v.keywords:
            if kw.arg == "default":
                default = _literal(kw.value)
            elif kw.arg == "metadata" and isinstance(kw.value, ast.Dict):
                for k, val in zip(kw.value.keys, kw.value.values):
                    if isinstance(k, ast.Constant) and k.value == "help":
                        text = _literal(val)
                        help_ = text if isinstance(text, str) else ""
    elif v is not None:
        default = _literal(v)
    return FieldSpec(name, ann, default, " ".join(help_.split()))


def _class_fields(path: Path, cls: str, depth: int = 0) -> dict[str, FieldSpec]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports: dict[str, Path] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            mod = base.joinpath(*(node.module or "").split(".")).with_suffix(".py")
            for a in node.names:
                imports[a.asname or a.name] = mod
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            fields: dict[str, FieldSpec] = {}
            for b in node.bases:
                bname = ast.unparse(b).split(".")[-1]
                if depth < 6 and bname in LIBRARY_CLASSES:
                    fields.update(library_fields(bname))
                elif depth < 6 and bname in imports and imports[bname].is_file():
                    fields.update(_class_fields(imports[bname], bname, depth + 1))
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if "ClassVar" in ast.unparse(stmt.annotation):
                        continue
                    f = _field_of(stmt)
                    if f.name in fields and not f.help:  # a subclass that only changes a default keeps the help
                        f = FieldSpec(f.name, f.annotation, f.default, fields[f.name].help)
                    fields[f.name] = f
            return fields
    raise KeyError(f"class {cls} not found in {path}")


@functools.lru_cache(maxsize=None)
def library_fields(cls: str) -> dict[str, FieldSpec]:
    """The fields of ``TrainingArguments``, ``SFTConfig``, ``GRPOConfig`` or ``DPOConfig`` as the installed
    library defines them (inherited ones included), read from source without importing the library.
    Empty when the library is not installed."""
    dist, rel = LIBRARY_CLASSES[cls]
    path = _source(dist, rel)
    if path is None:
        return {}
    return _class_fields(path, cls)


def dataclass_fields(cls) -> dict[str, FieldSpec]:
    """The fields of one of llmrank's own (light) config dataclasses."""
    out = {}
    for f in dataclasses.fields(cls):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)  # type: ignore[misc]
        out[f.name] = FieldSpec(f.name, ann, default, f.metadata.get("help", ""))
    return out


# -- types ---------------------------------------------------------------------------------------------

class _Names(dict):
    def __missing__(self, key):
        return _Opaque


_NAMES = _Names({"Optional": typing.Optional, "Union": typing.Union, "Literal": typing.Literal, "Any": Any,
                 "list": list, "dict": dict, "tuple": tuple, "str": str, "int": int, "float": float, "bool": bool,
                 "None": None, "List": list, "Dict": dict, "typing": typing})


def _annotation(text: str):
    try:
        return eval(text, {"__builtins__": {}}, _NAMES)  # noqa: S307 - names only, no builtins
    except Exception:  # an annotation this checker cannot read: accept any value
        return Any


def _accepts(ann, value) -> bool:
    if ann is Any or ann is _Opaque and isinstance(value, (str, int, float)):
        return True
    if ann is None or ann is type(None):
        return value is None
    origin = typing.get_origin(ann)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(_accepts(a, value) for a in typing.get_args(ann))
    if isinstance(ann, type) and ann.__module__ == "types" and ann.__name__ == "UnionType":
        return True
    if origin is typing.Literal:
        return value in typing.get_args(ann)
    if origin in (list, tuple):
        args = typing.get_args(ann)
        item = args[0] if args else Any
        if isinstance(value, (list, tuple)):
            return all(_accepts(item, v) for v in value) if origin is list else True
        # HF/trl configs turn one value into a list in __post_init__ (DPOConfig's loss_type: "sigmoid")
        return item is not Any and not isinstance(value, dict) and _accepts(item, value)
    if origin is dict or ann is dict:
        return isinstance(value, dict)
    if ann in (list, tuple):
        return isinstance(value, (list, tuple))
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann is _Opaque:
        return isinstance(value, (str, int, float))
    if typing.get_origin(ann) is not None:  # list[str] | None and friends (types.UnionType)
        args = typing.get_args(ann)
        return any(_accepts(a, value) for a in args) if args else True
    return True


def _expected(text: str) -> str:
    return text.replace("typing.", "").replace("Optional[", "None | ").replace("NoneType", "None")


def _described(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def check_fields(schema: dict[str, FieldSpec], values: dict, what: str = "the config") -> list[tuple[str, str]]:
    """Problems of ``values`` against ``schema``: ``[(key, message)]``, empty when it is valid.

    An unknown key names the closest known one; a value of the wrong type says which type was expected (an
    int is a valid float; text is never a number); a number outside :data:`CONSTRAINTS` says what is
    possible; NaN and infinity are refused.
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(values, dict):
        return [("", f"expected a mapping of {what} fields (got {_described(values)})")]
    for key, value in values.items():
        key = str(key)
        if key in RESERVED:
            problems.append((key, f"set by llmrank ({RESERVED[key]}); remove it"))
            continue
        spec = schema.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append((key, f"unknown key{hint} (not a field of {what})"))
            continue
        ann = _annotation(spec.annotation)
        if not _accepts(ann, value):
            problems.append((key, f"expected {_expected(spec.annotation)} (got {_described(value)})"))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append((key, f"expected a finite number (got {value!r})"))
            continue
        if key in CONSTRAINTS and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok, expected = CONSTRAINTS[key]
            if not ok(value):
                problems.append((key, f"expected {expected} (got {value!r})"))
    return problems


def fields_help(schema: dict[str, FieldSpec], key: str) -> str:
    spec = schema.get(key)
    return spec.help if spec else ""
