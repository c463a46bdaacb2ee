"""A recipe's ``refine.training`` is trl's ``GRPOConfig`` (method grpo) or ``DPOConfig`` (method dpo): checked
here at recipe load, before anything runs — an unknown key (with "did you mean"), a value of the wrong type,
or an impossible value is an error naming the file, line and key path. The config object itself is built
by the refine stage (:func:`make_trainer_config`), where trl's own cross-field checks run (e.g. the
generation batch must hold whole groups of ``num_generations``); their message is given the key too.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

from llmrank.errors import LlmrankError

# keys the refine stage sets itself: a recipe may not set them
RESERVED = {"output_dir": "the run directory's refine/ folder",
            "reward_weights": "each reward's 'weight' in refine.rewards"}
# values that would make a run impossible, per key: (test, what is expected)
_LIMITS: dict[str, tuple] = {
    "learning_rate": (lambda v: v > 0, "a positive number"),
    "max_steps": (lambda v: v > 0 or v == -1, "a positive number of steps (or -1 to train num_train_epochs)"),
    "num_train_epochs": (lambda v: v > 0, "a positive number"),
    "per_device_train_batch_size": (lambda v: v >= 1, "at least 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "num_generations": (lambda v: v >= 2, "at least 2 (GRPO compares a prompt's completions with each other)"),
    "max_completion_length": (lambda v: v >= 1, "at least 1 token"),
    "max_length": (lambda v: v >= 1, "at least 1 token"),
    "temperature": (lambda v: v > 0, "a positive number"),
    "beta": (lambda v: v >= 0, "zero or more"),
    "logging_steps": (lambda v: v > 0, "a positive number"),
    "save_steps": (lambda v: v > 0, "a positive number"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "between 0 and 1"),
}


def trainer_config_class(method: str):
    """trl's config class of a refine method."""
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig
    raise LlmrankError(f"refine.method: unknown method '{method}' (grpo or dpo)")


def _accepts(annotation, value) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is None:
        return True
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:  # trl turns one item into a list itself (loss_type: sigmoid)
        item = (typing.get_args(annotation) or (Any,))[0]
        return isinstance(value, list) or (not isinstance(value, (dict, list)) and _accepts(item, value))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return True  # an enum or class: trl's own conversion decides, at the refine stage


def _type_name(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_training(method: str, values: dict, where: str = "recipe", key_path: str = "refine.training",
                   lines: dict | None = None) -> dict:
    """Validate ``values`` as trl's config of ``method`` (module docstring); returns them unchanged.
    ``lines`` maps a key path tuple to its YAML line, for the message."""
    cls = trainer_config_class(method)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)

    def fail(key: str, msg: str):
        at = where
        if lines:
            path = tuple(key_path.split(".")) + (key,)
            for n in range(len(path), 0, -1):
                if path[:n] in lines:
                    at += f":{lines[path[:n]]}"
                    break
        raise LlmrankError(f"{at}: key '{key_path}.{key}': {msg}")

    if not isinstance(values, dict):
        raise LlmrankError(f"{where}: key '{key_path}': expected a mapping of {cls.__name__} fields")
    for key, value in values.items():
        if key in RESERVED:
            fail(key, f"set by llmrank ({RESERVED[key]}); remove it")
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            fail(key, f"unknown key for trl.{cls.__name__}" + (f"; did you mean '{close[0]}'?" if close else ""))
        ann = hints.get(key, Any)
        if not _accepts(ann, value):
            fail(key, f"expected {_type_name(ann)} (got {value!r})")
        if key in _LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok, expected = _LIMITS[key]
            if not math.isfinite(value) or not ok(value):
                fail(key, f"expected {expected} (got {value!r})")
    return values


def make_trainer_config(method: str, values: dict, where: str = "refine.training"):
    """trl's config object; a ``ValueError`` from trl's own checks becomes an error naming the section."""
    cls = trainer_config_class(method)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise LlmrankError(f"{where}: trl.{cls.__name__} rejects these settings: {e}") from None
