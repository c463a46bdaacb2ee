"""Label cross-entropy: the ordinary supervised listwise loss on relevance labels (no teacher).

Background: softmax cross-entropy over a query's candidate group with the relevant documents as targets
(the standard "localised contrastive" / InfoNCE reranker loss, e.g. L. Gao et al., "Rethink Training of
BERT Rerankers in Multi-Stage Retrieval Pipeline", ECIR 2021).

Inputs:
    student_scores  FloatTensor [B, n]  student logits
    labels          FloatTensor [B, n]  relevance labels (required); labels > 0 are positives
    mask            BoolTensor  [B, n]  optional, True for real candidates

With several positives the per-positive losses are averaged: ``-mean_{i: y_i > 0} log softmax(s)_i``.
Queries without a positive are left out of the mean over queries.

Use it on its own for plain fine-tuning on qrels, or next to a distillation loss in
:class:`~llmrank.losses.combined.CombinedLoss` to keep the student anchored to the gold labels.
"""

from __future__ import annotations

from torch import Tensor

from llmrank.losses._utils import LossInputs, RankingLoss, masked_log_softmax, require


class LabelCrossEntropyLoss(RankingLoss):
    """Softmax cross-entropy with the labelled positives (``labels > 0``) as targets, averaged over positives."""

    name = "label_ce"

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        labels = require(inputs.labels, "labels", self.name)
        positive = (labels > 0) & inputs.mask
        log_probs = masked_log_softmax(inputs.student, inputs.mask)
        n_positive = positive.sum(dim=-1)
        nll = -log_probs.masked_fill(~positive, 0.0).sum(dim=-1)
        return nll / n_positive.clamp_min(1), n_positive > 0
