"""RankNet: pairwise logistic loss over the teacher's preferences.

Paper: C. Burges et al., "Learning to Rank using Gradient Descent", ICML 2005.

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_ranks   LongTensor  [B, n]  teacher rank per candidate, 0 = best   } one of the two
    teacher_scores  FloatTensor [B, n]  teacher scores, higher = better         } (ranks win if both)
    mask            BoolTensor  [B, n]  optional, True for real candidates

Use it when the teacher gives only an order (e.g. a listwise LLM permutation) or its scores are not
calibrated: RankNet imitates which candidate beats which and nothing about score magnitudes. It costs
O(n^2) pairs per query, fine for reranking depths of tens of candidates.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, teacher_preference


class RankNetLoss(RankingLoss):
    """``mean over pairs (i, j) the teacher strictly prefers i over j of log(1 + exp(-sigma * (s_i - s_j)))``.

    Pairs are the ordered pairs of real candidates with a strictly better teacher rank (or strictly
    higher teacher score when no ranks are given); ties give no pair. Each query's loss is the mean over
    its pairs; queries without a pair are left out of the mean over queries.

    Args:
        sigma: Sharpness of the logistic applied to the student's score difference.
    """

    name = "ranknet"

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = sigma

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        key = teacher_preference(inputs, self.name)
        valid = inputs.mask.unsqueeze(-1) & inputs.mask.unsqueeze(-2)
        pairs = valid & (key.unsqueeze(-1) > key.unsqueeze(-2))  # [B, i, j]: teacher prefers i over j
        diff = inputs.student.unsqueeze(-1) - inputs.student.unsqueeze(-2)
        pair_loss = F.softplus(-self.sigma * diff).masked_fill(~pairs, 0.0)
        n_pairs = pairs.sum(dim=(-1, -2))
        return pair_loss.sum(dim=(-1, -2)) / n_pairs.clamp_min(1), n_pairs > 0
