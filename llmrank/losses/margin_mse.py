"""Margin-MSE: match the student's score margins to the teacher's.

Paper: S. Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation", 2020 (arXiv:2010.02666).

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_scores  FloatTensor [B, n]  teacher scores (required: margins need magnitudes)
    teacher_ranks   LongTensor  [B, n]  optional; if given, picks the teacher's top candidate
    mask            BoolTensor  [B, n]  optional, True for real candidates

The paper uses one (query, positive, negative) triple. For a group of n candidates we take the margin of
the teacher's top candidate over every other candidate: ``s_top - s_j`` against ``t_top - t_j`` for the
n - 1 candidates j != top. This keeps the loss O(n), ties every margin to the candidate the teacher is
surest about and reduces exactly to the paper's loss for n = 2. Like the original, it is invariant to a
constant shift of the student scores and of the teacher scores.

Use it when the teacher's scores are meaningful on an interval scale (e.g. yes/no logit differences of a
pointwise LLM judge) and the student should reproduce how much better, not only which is better.
"""

from __future__ import annotations

from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, require, teacher_order


class MarginMSELoss(RankingLoss):
    """``mean over j != top of ((s_top - s_j) - (t_top - t_j))^2``, top = the teacher's best candidate.

    Queries with fewer than two real candidates have no margin and are left out of the mean over queries.
    """

    name = "margin_mse"

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        teacher = require(inputs.teacher_scores, "teacher_scores", self.name)
        top = teacher_order(inputs, self.name)[:, :1]
        student_margin = inputs.student.gather(-1, top) - inputs.student
        teacher_margin = teacher.gather(-1, top) - teacher
        others = inputs.mask.clone()
        others.scatter_(-1, top, False)
        squared = (student_margin - teacher_margin).square().masked_fill(~others, 0.0)
        n_margins = others.sum(dim=-1)
        return squared.sum(dim=-1) / n_margins.clamp_min(1), n_margins > 0
