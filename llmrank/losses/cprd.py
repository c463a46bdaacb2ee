"""CPRD: contrastive partial ranking distillation.

Idea: imitate the teacher's order only where it matters and is reliable (its top candidates), and
treat everything else as a block of easy negatives that must merely score below each of the top ones.
Built from the Plackett-Luce likelihood (ListMLE; F. Xia et al., ICML 2008) and an InfoNCE-style
contrastive term (A. van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
2018).

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_ranks   LongTensor  [B, n]  teacher rank per candidate, 0 = best   } one of the two
    teacher_scores  FloatTensor [B, n]  teacher scores, higher = better         } (ranks win if both)
    mask            BoolTensor  [B, n]  optional, True for real candidates

Per query, with H = the teacher's top ``k_hard`` real candidates in teacher order and E = the rest:

* hard term: Plackett-Luce NLL of the teacher order of H among H only,
  ``-sum_{k < |H|} [s_{h_k} - log sum_{j >= k} exp(s_{h_j})]``;
* easy term: for each i in H, ``-log(exp(s_i) / (exp(s_i) + sum_{e in E} exp(s_e)))``, averaged over H
  (0 when E is empty);
* loss = hard + ``easy_weight`` * easy.

Use it when the teacher only ranks a short head reliably (top-k listwise LLM output, or a long BM25
list with many clearly irrelevant documents) and the order among the tail is noise you do not want the
student to fit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmrank.losses._utils import LossError, LossInputs, RankingLoss, plackett_luce_log_probs, teacher_order


class ContrastivePartialRankingLoss(RankingLoss):
    """ListMLE over the teacher's top ``k_hard`` plus an InfoNCE term pushing the rest below each of them.

    Args:
        k_hard: How many of the teacher's top candidates have their order imitated.
        easy_weight: Weight of the contrastive term for the remaining (easy) candidates.
    """

    name = "cprd"

    def __init__(self, k_hard: int = 4, easy_weight: float = 1.0) -> None:
        super().__init__()
        if k_hard < 1:
            raise LossError(f"{self.name}: k_hard must be at least 1, got {k_hard}")
        self.k_hard = k_hard
        self.easy_weight = easy_weight

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        order = teacher_order(inputs, self.name)
        valid_sorted = inputs.mask.gather(-1, order)
        positions = torch.arange(order.shape[-1], device=order.device)
        hard_sorted = valid_sorted & (positions < self.k_hard)
        easy_sorted = valid_sorted & ~hard_sorted

        hard = -plackett_luce_log_probs(inputs.student, order, hard_sorted).sum(dim=-1)

        sorted_scores = inputs.student.gather(-1, order)
        floor = torch.finfo(sorted_scores.dtype).min
        easy_lse = torch.logsumexp(sorted_scores.masked_fill(~easy_sorted, floor), dim=-1, keepdim=True)
        # -log(e^{s_i} / (e^{s_i} + sum_E e^{s_e})) = logaddexp(s_i, logsumexp_E s) - s_i
        per_hard = (torch.logaddexp(sorted_scores, easy_lse) - sorted_scores).masked_fill(~hard_sorted, 0.0)
        n_hard = hard_sorted.sum(dim=-1)
        easy = torch.where(easy_sorted.any(dim=-1), per_hard.sum(dim=-1) / n_hard.clamp_min(1), 0.0)

        return hard + self.easy_weight * easy, inputs.mask.any(dim=-1)
