"""PLD: Plackett-Luce distillation with confidence weighting.

Background: Plackett-Luce listwise likelihood (ListMLE; F. Xia et al., ICML 2008) as used for
listwise distillation of LLM rerankers ("Plackett-Luce distillation with confidence weighting"). This is
our own formulation of that idea, described exactly below; it does not claim to reproduce a specific
paper's loss.

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_ranks   LongTensor  [B, n]  teacher rank per candidate, 0 = best   } at least one; ranks
    teacher_scores  FloatTensor [B, n]  teacher scores, higher = better         } fix the order if both
    labels          FloatTensor [B, n]  optional relevance labels; labels > 0 are gold
    mask            BoolTensor  [B, n]  optional, True for real candidates

What is computed, per query:

1. Target permutation ``pi``: the teacher order; if ``labels`` are given, the gold candidates
   (``labels > 0``) are moved to the front, keeping the teacher's order within gold and within non-gold.
2. Step weights ``w_k`` for the Plackett-Luce choice of ``pi_k`` among ``pi_k, ..., pi_last``:
   with ``teacher_scores``, the teacher's own confidence in that choice,
   ``w_k = softmax(t / T)`` over the remaining candidates, evaluated at ``pi_k``; without teacher scores,
   the position weight ``w_k = 1 / (k + 1)``. Weights are constants (no gradient).
3. Loss ``-sum_k w_k * [s_{pi_k} - log sum_{j >= k} exp(s_{pi_j})]``. With all weights 1 this is ListMLE.

Use it instead of ListMLE when the teacher's order is reliable at the top and noisy further down (the
usual case for LLM rerankers): steps the teacher was unsure about, or late positions, count less, and
known-relevant documents are kept on top whatever the teacher said.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, plackett_luce_log_probs, teacher_order


class PLDLoss(RankingLoss):
    """Confidence-weighted Plackett-Luce NLL of the (gold-first) teacher permutation.

    Args:
        temperature: Divides the teacher scores before the confidence softmax; higher = flatter weights.
    """

    name = "pld"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def target_order(self, inputs: LossInputs) -> Tensor:
        """[B, n] target permutation: teacher order, gold-labelled candidates first (stable)."""
        order = teacher_order(inputs, self.name)
        if inputs.labels is None:
            return order
        not_gold = (inputs.labels <= 0).gather(-1, order).to(torch.int8)
        return order.gather(-1, torch.sort(not_gold, dim=-1, stable=True).indices)

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        order = self.target_order(inputs)
        valid_sorted = inputs.mask.gather(-1, order)
        log_probs = plackett_luce_log_probs(inputs.student, order, valid_sorted)
        with torch.no_grad():
            if inputs.teacher_scores is not None:
                teacher = inputs.teacher_scores / self.temperature
                weights = plackett_luce_log_probs(teacher, order, valid_sorted).exp()
            else:
                steps = torch.arange(order.shape[-1], device=order.device, dtype=log_probs.dtype)
                weights = (1.0 / (steps + 1.0)).expand_as(log_probs)
        return -(weights * log_probs).sum(dim=-1), inputs.mask.any(dim=-1)
