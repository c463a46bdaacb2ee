"""ListNet / listwise KL distillation: match the teacher's softmax distribution over the candidates.

Papers: Z. Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach" (ListNet), ICML
2007; R. Ren et al., "RocketQAv2: A Joint Training Method for Dense Passage Retrieval and Passage
Re-ranking", EMNLP 2021 (dynamic listwise distillation).

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    teacher_scores  FloatTensor [B, n]  teacher logits (required)
    mask            BoolTensor  [B, n]  optional, True for real candidates

Computes ``KL(softmax(t / T) || softmax(s / T))`` over the real candidates of each query. This is
ListNet's top-one cross-entropy minus the teacher's entropy, a constant, so the gradients are the same;
the KL form is 0 at a perfect match. Invariant to a constant shift of teacher (and student) logits.

Use it as the default listwise distillation loss when the teacher gives real-valued scores for the whole
candidate group; raise ``temperature`` to pass on more of the teacher's preferences among the lower
candidates. Registry names ``"listnet"`` and ``"kl"``.
"""

from __future__ import annotations

from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, masked_log_softmax, require


class ListNetLoss(RankingLoss):
    """``sum_i p_t(i) * (log p_t(i) - log p_s(i))`` with ``p = softmax(scores / temperature)`` per query.

    Args:
        temperature: Divides both teacher and student scores before the softmax.
    """

    name = "listnet"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        teacher = require(inputs.teacher_scores, "teacher_scores", self.name)
        log_p_teacher = masked_log_softmax(teacher / self.temperature, inputs.mask)
        log_p_student = masked_log_softmax(inputs.student / self.temperature, inputs.mask)
        p_teacher = log_p_teacher.exp().masked_fill(~inputs.mask, 0.0)
        kl = (p_teacher * (log_p_teacher - log_p_student)).sum(dim=-1)
        return kl, inputs.mask.any(dim=-1)
