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

from typing import Any

from llmrank.losses._utils import LossError, RankingLoss
from llmrank.losses.bce import GradedBCELoss
from llmrank.losses.combined import CombinedLoss
from llmrank.losses.cprd import ContrastivePartialRankingLoss
from llmrank.losses.label_ce import LabelCrossEntropyLoss
from llmrank.losses.listmle import ListMLELoss
from llmrank.losses.listnet import ListNetLoss
from llmrank.losses.margin_mse import MarginMSELoss
from llmrank.losses.pld import PLDLoss
from llmrank.losses.ranknet import RankNetLoss

LOSSES: dict[str, type[RankingLoss]] = {
    "ranknet": RankNetLoss,
    "margin_mse": MarginMSELoss,
    "listnet": ListNetLoss,
    "kl": ListNetLoss,
    "listmle": ListMLELoss,
    "pld": PLDLoss,
    "cprd": ContrastivePartialRankingLoss,
    "bce": GradedBCELoss,
    "label_ce": LabelCrossEntropyLoss,
    "combined": CombinedLoss,
}


def build_loss(name: str, **kwargs: Any) -> RankingLoss:
    """Build the loss registered as ``name`` with constructor ``kwargs``.

    For ``"combined"``, pass ``weights={"listnet": 1.0, "label_ce": 0.5}`` and, optionally, per-term
    kwargs keyed by term name: ``build_loss("combined", weights=..., listnet={"temperature": 2.0})``.

    Raises:
        LossError (a ValueError): unknown name, or kwargs the loss does not accept.
    """
    if name not in LOSSES:
        raise LossError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    if name == "combined":
        if "weights" not in kwargs:
            raise LossError("combined: needs weights={loss name: weight, ...}")
        weights = kwargs.pop("weights")
        bad = {key: value for key, value in kwargs.items() if not isinstance(value, dict)}
        if bad:
            raise LossError(f"combined: per-term kwargs must be dicts keyed by term name, got {sorted(bad)}")
        return CombinedLoss(weights, term_kwargs=kwargs)
    try:
        return LOSSES[name](**kwargs)
    except TypeError as error:
        raise LossError(f"{name}: bad arguments {sorted(kwargs)}: {error}") from error


__all__ = [
    "LOSSES",
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
