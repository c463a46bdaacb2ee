"""Combined loss: a weighted sum of other registered losses.

Inputs: the union of what the terms need (see each term), all with shape [B, n]:
    student_scores, teacher_scores, teacher_ranks, labels, mask

Each term is a registry name from :data:`llmrank.losses.LOSSES`. A term named ``"<name>_labels"`` is
loss ``<name>`` fed the labels only (teacher inputs withheld), e.g. ``"bce_labels"`` is pointwise BCE on
the qrels; every other term gets all the inputs. ``"label_ce"`` reads only the labels anyway.

Use it to distil from the teacher while keeping the ordinary label loss as an anchor, e.g.
``CombinedLoss({"listnet": 1.0, "label_ce": 0.5})``, or to mix a listwise and a pointwise objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from llmrank.losses._utils import LossError, RankingLoss

LABELS_ONLY_SUFFIX = "_labels"


class CombinedLoss(RankingLoss):
    """``sum_name weight[name] * loss_name(...)``, each term reduced (mean over queries) on its own.

    Args:
        weights: Term name -> weight, e.g. ``{"listnet": 1.0, "bce_labels": 0.5}``.
        term_kwargs: Term name -> constructor kwargs for that term, e.g. ``{"listnet": {"temperature": 2}}``.
    """

    name = "combined"

    def __init__(
        self, weights: Mapping[str, float], term_kwargs: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        super().__init__()
        from llmrank.losses import build_loss  # the registry imports this module

        term_kwargs = dict(term_kwargs or {})
        if not weights:
            raise LossError(f"{self.name}: needs at least one term in weights")
        unused = sorted(set(term_kwargs) - set(weights))
        if unused:
            raise LossError(f"{self.name}: kwargs given for {unused}, which are not terms of {sorted(weights)}")
        self.weights = {term: float(weight) for term, weight in weights.items()}
        self.labels_only = {term: term.endswith(LABELS_ONLY_SUFFIX) for term in weights}
        terms = {}
        for term in weights:
            base = term.removesuffix(LABELS_ONLY_SUFFIX) if self.labels_only[term] else term
            if base == self.name:
                raise LossError(f"{self.name}: a combined loss cannot contain another combined loss")
            terms[term] = build_loss(base, **term_kwargs.get(term, {}))
        self.terms = nn.ModuleDict(terms)

    def forward(
        self,
        student_scores: Tensor,
        teacher_scores: Tensor | None = None,
        teacher_ranks: Tensor | None = None,
        labels: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Return the weighted sum of the terms' scalar losses."""
        total = student_scores.new_zeros(())
        for term, loss in self.terms.items():
            if self.labels_only[term]:
                value = loss(student_scores, labels=labels, mask=mask)
            else:
                value = loss(student_scores, teacher_scores, teacher_ranks, labels, mask)
            total = total + self.weights[term] * value
        return total
