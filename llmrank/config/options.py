"""Options a plugin declares, checked before anything runs: a plugin's options are the fields of a dataclass
(each with ``metadata={"help": …, "ge": …}``) or the keyword parameters of a callable (a class's
``__init__``, a function), and a recipe's mapping of them is checked here — unknown keys with "did you
mean", wrong types, values out of bounds. Knows nothing of llmrank.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

BOUNDS = ("ge", "gt", "le", "lt")


class OptionSpec(typing.NamedTuple):
    """One option: its name, type, default (``inspect.Parameter.empty`` when required) and help."""

    name: str
    annotation: Any
    default: Any
    help: str = ""
    bounds: dict | None = None


def dataclass_options(cls) -> tuple[list[OptionSpec], bool]:
    """The options of a dataclass (its fields, with help and bounds from their metadata)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved: that option takes any value
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = inspect.Parameter.empty
        out.append(OptionSpec(f.name, hints.get(f.name, Any), default, str(f.metadata.get("help", "")),
                              {k: f.metadata[k] for k in BOUNDS if k in f.metadata}))
    return out, False


def signature_options(func, skip: int = 0, exclude: tuple[str, ...] = ()) -> tuple[list[OptionSpec], bool]:
    """The keyword options of a callable (a class: its ``__init__``), after its first ``skip`` parameters
    (``self`` aside) and without ``exclude``; the flag says whether it also takes ``**kwargs`` (then any
    other key is accepted too). A callable's ``option_bounds`` attribute (``{"window": {"ge": 2}}``) gives
    the bounds of its numeric options, so a value out of them is refused at load, not when it is used."""
    target = func.__init__ if isinstance(func, type) else func
    sig = inspect.signature(target)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - e.g. a name imported only for type checkers
        hints = {}
    bounds = getattr(func, "option_bounds", None) or {}
    unknown = [k for k, b in bounds.items() if k not in sig.parameters or set(b) - set(BOUNDS)]
    if unknown:
        raise TypeError(f"{func!r}: option_bounds names {unknown}: not parameters, or bounds other than {BOUNDS}")
    out, open_ = [], False
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            open_ = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL or i < skip or p.name in exclude:
            continue
        out.append(OptionSpec(p.name, hints.get(p.name, Any), p.default, bounds=bounds.get(p.name)))
    return out, open_


def _model(specs: list[OptionSpec], open_: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for s in specs:
        default = ... if s.default is inspect.Parameter.empty else s.default
        fields[s.name] = (s.annotation, Field(default, description=s.help, **(s.bounds or {})))
    config = ConfigDict(extra="allow" if open_ else "forbid", arbitrary_types_allowed=True)
    return create_model("Options", __config__=config, **fields)


def _described(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def check_options(specs: list[OptionSpec], values, what: str, open_: bool = False,
                  required: bool = False) -> list[tuple[tuple, str]]:
    """Problems of ``values`` (a mapping of options) against ``specs``: ``[(key path, message)]``, empty when
    they are valid. ``what`` names the owner in messages ("the listwise method"). Required options (no
    default) are checked only with ``required`` (a plugin may fill them itself)."""
    if not isinstance(values, dict):
        return [((), f"expected a mapping of options of {what} (got {_described(values)})")]
    names = [s.name for s in specs]
    problems: list[tuple[tuple, str]] = []
    for key, value in values.items():
        if key not in names and not open_:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            problems.append(((key,), f"not an option of {what}" + (f"; did you mean '{close[0]}'?" if close else "")
                             + f" (options: {', '.join(names) or 'none'})"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(((key,), f"expected a finite number (got {value!r})"))
    if problems:
        return problems
    given = [s for s in specs if s.name in values or (required and s.default is inspect.Parameter.empty)]
    model = _model(given, open_)
    try:
        model.model_validate({k: v for k, v in values.items() if k in names})
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "required option is missing"
            elif "input" in err:
                msg += f" (got {_described(err['input'])})"
            problems.append((loc[:1] or (), msg))
    return problems


def options_help(specs: list[OptionSpec]) -> str:
    """``name (default): help`` of each option, one per line."""
    lines = []
    for s in specs:
        default = "required" if s.default is inspect.Parameter.empty else repr(s.default)
        lines.append(f"{s.name} ({default})" + (f": {s.help}" if s.help else ""))
    return "\n".join(lines)
