"""Ranking distillation losses, one module per loss, and a registry to build them by name.

All losses share one call signature (see :class:`~llmrank.losses._utils.RankingLoss`)::

    loss(student_scores, teacher_scores=None, teacher_ranks=None, labels=None, mask=None) -> scalar

with [B, n] tensors (B queries, n candidates each, ``mask`` False on padding) and a mean over queries.

===========  ======================================  ==================================
name         class                                   needs
===========  ======================================  ==================================
ranknet      :class:`RankNetLoss`                    teacher ranks or scores
margin_mse   :class:`MarginMSELoss`                  teacher scores
listnet, kl  :class:`ListNetLoss`                    teacher scores
listmle      :class:`ListMLELoss`                    teacher ranks or scores
pld          :class:`PLDLoss`                        teacher ranks or scores (+ labels)
cprd         :class:`ContrastivePartialRankingLoss`  teacher ranks or scores
bce          :class:`GradedBCELoss`                  teacher scores or labels
label_ce     :class:`LabelCrossEntropyLoss`          labels
combined     :class:`CombinedLoss`                   whatever its terms need
===========  ======================================  ==================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# name -> "module:Class" under llmrank.losses (or, registered from outside, "package.module:Class" or the
# class); classes are imported on first use, so that the names can be checked (a recipe's ``distill.loss``)
# without importing torch
_REGISTRY: dict[str, Any] = {
    "ranknet": "ranknet:RankNetLoss",
    "margin_mse": "margin_mse:MarginMSELoss",
    "listnet": "listnet:ListNetLoss",
    "kl": "listnet:ListNetLoss",
    "listmle": "listmle:ListMLELoss",
    "pld": "pld:PLDLoss",
    "cprd": "cprd:ContrastivePartialRankingLoss",
    "bce": "bce:GradedBCELoss",
    "label_ce": "label_ce:LabelCrossEntropyLoss",
    "combined": "combined:CombinedLoss",
}
LOSS_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Every registered loss name."""
_CLASSES = {target.split(":")[1]: target for target in _REGISTRY.values()}
_CLASSES.update({"RankingLoss": "_utils:RankingLoss", "LossError": "_utils:LossError"})


def _load(target):
    import importlib

    if isinstance(target, type):
        return target
    module, cls = target.split(":")
    return getattr(importlib.import_module(module if "." in module else f"llmrank.losses.{module}"), cls)


def register_loss(name: str, loss) -> None:
    """Register a ranking loss under ``name``: a class (or ``"package.module:Class"``) called as
    ``cls(**loss_options)`` whose instances take the shared call signature (module docstring). Recipes may
    then say ``distill: {loss: <name>, loss_options: {…}}``; the options are its constructor's parameters."""
    global LOSS_NAMES
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_loss: a loss name is a name such as 'listnet' (got {name!r})")
    if not (isinstance(loss, type) or (isinstance(loss, str) and ":" in loss)):
        raise ValueError(f"register_loss({name!r}): give the loss class or 'package.module:Class'")
    _REGISTRY[name] = loss
    LOSS_NAMES = tuple(_REGISTRY)


def loss_option_problems(name: str, options: dict) -> list[tuple[tuple, str]]:
    """Problems of a recipe's ``loss_options`` for loss ``name``: ``[(key path under loss_options, message)]``,
    checked against the loss class's constructor (``combined``: its ``weights`` name losses, and each term's
    options are that term's). Imports the loss (and torch) only when options are given."""
    from llmrank.config.options import check_options, signature_options

    if not options:
        return []
    if name == "combined":
        problems: list[tuple[tuple, str]] = []
        weights = options.get("weights")
        if not isinstance(weights, dict) or not weights:
            return [(("weights",), "combined needs weights: {loss name: weight, …}")]
        for term in weights:
            if term not in _REGISTRY or term == "combined":
                problems.append((("weights", term), f"unknown loss {term!r} (one of "
                                 f"{', '.join(n for n in _REGISTRY if n != 'combined')})"))
        for key, value in options.items():
            if key == "weights":
                continue
            if key not in weights:
                problems.append(((key,), f"options of a loss that is not a term (terms: {', '.join(weights)})"))
            elif not isinstance(value, dict):
                problems.append(((key,), "a term's options are a mapping"))
            else:
                specs, open_ = signature_options(LOSSES[key])
                problems += [((key, *k), m) for k, m in check_options(specs, value, f"loss {key!r}", open_)]
        return problems
    specs, open_ = signature_options(LOSSES[name])
    return check_options(specs, options, f"loss {name!r}", open_)


class _Registry(Mapping):
    """``LOSSES[name]`` -> the loss class (imported when asked for)."""

    def __getitem__(self, name: str):
        return _load(_REGISTRY[name])

    def __iter__(self):
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


LOSSES = _Registry()


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return _load(_CLASSES[name])
    raise AttributeError(name)


def build_loss(name: str, **kwargs: Any):
    """Build the loss registered as ``name`` with constructor ``kwargs``.

    For ``"combined"``, pass ``weights={"listnet": 1.0, "label_ce": 0.5}`` and, optionally, per-term
    kwargs keyed by term name: ``build_loss("combined", weights=..., listnet={"temperature": 2.0})``.

    Raises:
        LossError (a ValueError): unknown name, or kwargs the loss does not accept.
    """
    LossError = _load(_CLASSES["LossError"])
    if name not in _REGISTRY:
        raise LossError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    if name == "combined":
        if "weights" not in kwargs:
            raise LossError("combined: needs weights={loss name: weight, ...}")
        weights = kwargs.pop("weights")
        bad = {key: value for key, value in kwargs.items() if not isinstance(value, dict)}
        if bad:
            raise LossError(f"combined: per-term kwargs must be dicts keyed by term name, got {sorted(bad)}")
        return LOSSES["combined"](weights, term_kwargs=kwargs)
    try:
        return LOSSES[name](**kwargs)
    except TypeError as error:
        raise LossError(f"{name}: bad arguments {sorted(kwargs)}: {error}") from error


__all__ = [
    "LOSSES",
    "LOSS_NAMES",
    "register_loss",
    "loss_option_problems",
    "CombinedLoss",
    "ContrastivePartialRankingLoss",
    "GradedBCELoss",
    "LabelCrossEntropyLoss",
    "ListMLELoss",
    "ListNetLoss",
    "LossError",
    "MarginMSELoss",
    "PLDLoss",
    "RankNetLoss",
    "RankingLoss",
    "build_loss",
]
