"""Checking a free mapping of settings against a training config class, before anything is trained.

A recipe's ``distill.training`` and ``refine.training`` hold the fields of a library config dataclass:
transformers' ``TrainingArguments`` (the pointwise student), trl's ``SFTConfig`` (the reasoning student),
``GRPOConfig`` or ``DPOConfig`` (refinement), or any class a plugin names as ``"module:Class"`` (for example
sentence-transformers' ``CrossEncoderTrainingArguments``). :func:`check_fields` validates such a mapping the
way the recipe validates its own sections: an unknown key gets "did you mean", a value of the wrong type or an
impossible value (a negative learning rate, ``max_steps: 0``) is named with its key path and what was expected.

The fields are those of the installed class itself, ``dataclasses.fields()`` (inherited ones included, whatever
module they come from) — :func:`library_fields`. Importing transformers and trl costs 5–60 s on a small, busy
CPU machine, far too long for "a bad recipe is named at once", so what is read is kept on disk
(:func:`fields_cache_dir`, one JSON file per class and installed library version): a recipe load imports
the library only the first time after it is installed or upgraded. A class that cannot be imported or is not
a dataclass is an error naming it, never an empty schema. The training itself builds the real dataclass,
whose ``__post_init__`` has the last word.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrank.errors import LlmrankError

LIBRARY_CLASSES = {
    "TrainingArguments": "transformers:TrainingArguments",
    "SFTConfig": "trl:SFTConfig",
    "GRPOConfig": "trl:GRPOConfig",
    "DPOConfig": "trl:DPOConfig",
}
"""Short names of the library configs llmrank's own students and refiners use -> ``"module:Class"``. Any other
class is named by ``"module:Class"`` (or given as the class itself)."""
FIELDS_CACHE_VERSION = 1

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


def _target(cls) -> str:
    """``"module:Class"`` of a config class given as a short name, ``"module:Class"`` or the class itself."""
    if isinstance(cls, type):
        return f"{cls.__module__}:{cls.__qualname__}"
    if not isinstance(cls, str) or not (cls in LIBRARY_CLASSES or re.fullmatch(r"[\w.]+:[\w.]+", cls)):
        raise LlmrankError(f"config class {cls!r}: expected a class, 'module:Class' or one of "
                           f"{', '.join(LIBRARY_CLASSES)}")
    return LIBRARY_CLASSES.get(cls, cls)


def _distribution_version(module: str) -> str:
    """The installed version of the distribution providing ``module`` (``"?"`` when it has no metadata)."""
    import importlib.metadata as md

    top = module.split(".")[0]
    for name in (top, top.replace("_", "-")):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    for dist in md.packages_distributions().get(top, []):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "?"


def import_class(cls) -> type:
    """The config class itself (imports its library); an error naming it when it cannot be imported."""
    if isinstance(cls, type):
        return cls
    target = _target(cls)
    module, name = target.split(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise LlmrankError(f"config class {target}: cannot be imported ({type(e).__name__}: {e})") from None
    if not isinstance(obj, type):
        raise LlmrankError(f"config class {target}: is not a class")
    return obj


def _ann_text(t) -> str:
    """An annotation as text a reader can name (``int``, ``None | str | list[str]``, ``SchedulerType | str``)."""
    if isinstance(t, str):
        text = t
    elif isinstance(t, type) and not typing.get_args(t):
        text = t.__name__
    else:
        text = str(t)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text).replace("typing.", "")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)  # module prefixes: SchedulerType


def _jsonable(value) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return dataclasses.MISSING


def read_fields(cls) -> dict[str, FieldSpec]:
    """The settable fields of a dataclass config class, read from the (imported) class: name, annotation,
    default and help text. A class that is not a dataclass is an error naming it."""
    klass = import_class(cls)
    if not dataclasses.is_dataclass(klass):
        raise LlmrankError(f"config class {_target(cls)}: is not a dataclass, so its fields cannot be checked")
    out = {}
    for f in dataclasses.fields(klass):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        out[f.name] = FieldSpec(f.name, _ann_text(f.type), _jsonable(default) if default is not dataclasses.MISSING
                                else dataclasses.MISSING, " ".join(str(f.metadata.get("help", "")).split()))
    return out


def fields_cache_dir() -> Path:
    """Where the fields read from library classes are kept: ``$LLMRANK_FIELDS_CACHE``, else
    ``~/.cache/llmrank/config-fields`` (``$XDG_CACHE_HOME`` respected). Not under ``$LLMRANK_CACHE``: what is kept
    depends only on the installed libraries, so a run with its own cache folder (a test, a fresh experiment)
    need not import transformers again to check a recipe or build the CLI's flags."""
    if os.environ.get("LLMRANK_FIELDS_CACHE"):
        return Path(os.environ["LLMRANK_FIELDS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmrank" / "config-fields"


def _cache_file(target: str):
    module = target.split(":")[0]
    version = _distribution_version(module)
    safe = re.sub(r"[^\w.\-]", "_", f"{target}-{version}")
    return fields_cache_dir() / f"{safe}.json", version


def _to_json(fields: dict[str, FieldSpec]) -> list:
    return [{"name": f.name, "annotation": f.annotation, "help": f.help,
             **({"default": f.default} if f.default is not dataclasses.MISSING else {})} for f in fields.values()]


@functools.lru_cache(maxsize=None)
def _library_fields(target: str) -> dict[str, FieldSpec]:
    path, version = _cache_file(target)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format") == FIELDS_CACHE_VERSION and saved.get("class") == target and saved.get("version") == version:
            return {d["name"]: FieldSpec(d["name"], d["annotation"], d.get("default", dataclasses.MISSING), d["help"])
                    for d in saved["fields"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache yet (or a damaged one): read the class
    fields = read_fields(target)
    try:
        from llmrank.data.io import atomic_write_text

        atomic_write_text(path, json.dumps({"format": FIELDS_CACHE_VERSION, "class": target, "version": version,
                                            "fields": _to_json(fields)}))
    except OSError:
        pass  # a read-only cache only costs the import next time
    return fields


def library_fields(cls) -> dict[str, FieldSpec]:
    """The fields of a library config class (``TrainingArguments``, ``SFTConfig``, ``GRPOConfig``, ``DPOConfig``,
    any ``"module:Class"`` or a class) as the installed library defines them, inherited ones included. Read
    from the class once per installed library version and kept on disk (:func:`fields_cache_dir`); a class that cannot be
    read is an error naming it."""
    if isinstance(cls, type):
        return read_fields(cls)
    return _library_fields(_target(cls))


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
                 "None": None, "NoneType": type(None), "List": list, "Dict": dict, "typing": typing})


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


RENAMED_FIELDS = {"gradient_checkpointing": "activation_checkpointing",
                  "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}
"""Training fields transformers renamed (the old names are deprecated aliases in the installed 5.x, the only
names in older 5.x releases such as the one vLLM's CPU build pins): ``old -> new``."""


def current_names(config_class, values: dict) -> dict:
    """``values`` with each renamed field under the name ``config_class`` has, so a recipe's
    ``gradient_checkpointing: true`` works (and warns nothing) on transformers releases before and after the
    rename."""
    names = {f.name for f in dataclasses.fields(config_class)}
    out = dict(values)
    for old, new in RENAMED_FIELDS.items():
        if old in out and new in names and new not in out:
            out[new] = out.pop(old)
    return out
