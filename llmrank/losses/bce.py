"""Graded BCE: pointwise binary cross-entropy against soft (graded) relevance targets.

Background: BiXSE-style training of pointwise rerankers with binary cross-entropy on graded / soft
relevance targets instead of hard 0/1 labels; plain pointwise BCE distillation when the targets come
from a teacher.

Inputs:
    student_scores  FloatTensor [B, n]  student logits (e.g. yes-minus-no logit)
    teacher_scores  FloatTensor [B, n]  teacher logits, or probabilities with ``teacher_is_prob=True``
    labels          FloatTensor [B, n]  graded labels in [0, max_grade] (used only without teacher_scores)
    mask            BoolTensor  [B, n]  optional, True for real candidates

Targets: ``teacher_scores`` as given when ``teacher_is_prob``, else ``sigmoid(teacher_scores / T)``;
without teacher scores, ``clamp(labels / max_grade, 0, 1)``. One of teacher_scores / labels is required.

Use it when the student is deployed as a pointwise scorer whose outputs should stay calibrated
probabilities (thresholding, score fusion), or to add an absolute anchor next to a listwise loss.
Registered as ``"bce"``; in :class:`~llmrank.losses.combined.CombinedLoss`, ``"bce_labels"`` is the same
loss fed the labels only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from llmrank.losses._utils import LossError, LossInputs, RankingLoss


class GradedBCELoss(RankingLoss):
    """Mean over real candidates of ``BCEWithLogits(s_i, target_i)``, then mean over queries.

    Targets are constants (detached), even when the teacher scores carry a gradient.

    Args:
        temperature: Divides teacher logits before the sigmoid (ignored when ``teacher_is_prob``).
        teacher_is_prob: ``teacher_scores`` already are probabilities in [0, 1].
        max_grade: Largest label grade; labels are divided by it and clipped to [0, 1].
    """

    name = "bce"

    def __init__(self, temperature: float = 1.0, teacher_is_prob: bool = False, max_grade: float = 1.0) -> None:
        super().__init__()
        if max_grade <= 0:
            raise LossError(f"{self.name}: max_grade must be positive, got {max_grade}")
        self.temperature = temperature
        self.teacher_is_prob = teacher_is_prob
        self.max_grade = max_grade

    def targets(self, inputs: LossInputs) -> Tensor:
        """[B, n] soft targets in [0, 1] (padded entries arbitrary)."""
        if inputs.teacher_scores is not None:
            if not self.teacher_is_prob:
                return torch.sigmoid(inputs.teacher_scores / self.temperature)
            probs = inputs.teacher_scores
            if ((probs < 0) | (probs > 1))[inputs.mask].any():
                raise LossError(f"{self.name}: teacher_is_prob=True but teacher_scores are outside [0, 1]")
            return probs
        if inputs.labels is not None:
            return (inputs.labels / self.max_grade).clamp(0.0, 1.0)
        raise LossError(f"{self.name}: needs teacher_scores or labels, neither was given")

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        targets = self.targets(inputs).detach()
        bce = F.binary_cross_entropy_with_logits(inputs.student, targets, reduction="none")
        bce = bce.masked_fill(~inputs.mask, 0.0)
        n_real = inputs.mask.sum(dim=-1)
        return bce.sum(dim=-1) / n_real.clamp_min(1), n_real > 0
