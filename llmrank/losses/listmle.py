"""ListMLE: Plackett-Luce likelihood of the teacher's permutation under the student's scores.

Paper: F. Xia et al., "Listwise Approach to Learning to Rank: Theory and Algorithm", ICML 2008.

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_ranks   LongTensor  [B, n]  teacher rank per candidate, 0 = best   } one of the two
    teacher_scores  FloatTensor [B, n]  teacher scores, higher = better         } (ranks win if both)
    mask            BoolTensor  [B, n]  optional, True for real candidates

Use it when the teacher's output is a full permutation (listwise / sliding-window LLM rerankers) and you
want the student to reproduce the whole order. Every position counts equally; see ``PLDLoss`` for a
variant that weights the steps, and ``ContrastivePartialRankingLoss`` for one that only imitates the top.
"""

from __future__ import annotations

from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, plackett_luce_log_probs, teacher_order


class ListMLELoss(RankingLoss):
    """``-sum_k [s_{pi_k} - log sum_{j >= k} exp(s_{pi_j})]`` with ``pi`` the teacher order (real candidates).

    The per-query loss is the full negative log-likelihood (a sum over steps, not a mean).
    """

    name = "listmle"

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        order = teacher_order(inputs, self.name)
        valid_sorted = inputs.mask.gather(-1, order)
        log_probs = plackett_luce_log_probs(inputs.student, order, valid_sorted)
        return -log_probs.sum(dim=-1), inputs.mask.any(dim=-1)
