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

# name -> "module:Class" under llmrank.losses; classes are imported on first use, so that the names can be
# checked (a recipe's ``distill.loss``) without importing torch
_REGISTRY = {
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


def _load(target: str):
    import importlib

    module, cls = target.split(":")
    return getattr(importlib.import_module(f"llmrank.losses.{module}"), cls)


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
