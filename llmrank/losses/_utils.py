"""Shared plumbing for the ranking distillation losses.

Every loss in :mod:`llmrank.losses` takes the same inputs (see :class:`RankingLoss`), validates them the
same way, ignores padded candidates the same way and reduces the same way (mean over queries). The pieces
that more than one loss needs live here: input validation, the teacher's preference order, masked
log-softmax and the Plackett-Luce step log-probabilities.

Conventions
-----------
* ``mask`` is True for real candidates. Padded entries are replaced by neutral values before any
  arithmetic, so junk (even ``inf`` or ``nan``) in padded slots cannot leak into the loss or its gradient.
* "Teacher order" is the teacher's ranking, best first. ``teacher_ranks`` (0 = best) take precedence when
  given, otherwise the order is derived from ``teacher_scores`` by a stable descending sort. Padded
  candidates always come last.
* Each loss computes one value per query plus a flag saying whether the query had anything to score
  (e.g. at least one valid pair); the batch loss is the mean over flagged queries (0 if none), so a batch
  of queries gives the mean of the single-query losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llmrank.errors import LlmrankError


class LossError(LlmrankError, ValueError):
    """A loss was misconfigured or called without an input it needs."""


@dataclass(frozen=True)
class LossInputs:
    """Validated loss inputs; padded entries of every tensor are zeroed."""

    student: Tensor
    """[B, n] float student scores."""
    teacher_scores: Tensor | None
    """[B, n] float teacher scores (higher = more relevant), or None."""
    teacher_ranks: Tensor | None
    """[B, n] long teacher ranks (0 = best), or None."""
    labels: Tensor | None
    """[B, n] float relevance labels, or None."""
    mask: Tensor
    """[B, n] bool, True for real candidates."""


def prepare_inputs(
    loss_name: str,
    student_scores: Tensor,
    teacher_scores: Tensor | None = None,
    teacher_ranks: Tensor | None = None,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
) -> LossInputs:
    """Check shapes and dtypes, default the mask to all-True and neutralise padded entries."""
    if student_scores.dim() != 2 or not student_scores.is_floating_point():
        raise LossError(
            f"{loss_name}: student_scores must be a float tensor of shape [B, n], "
            f"got {student_scores.dtype} with shape {tuple(student_scores.shape)}"
        )
    shape = student_scores.shape
    named = {"teacher_scores": teacher_scores, "teacher_ranks": teacher_ranks, "labels": labels, "mask": mask}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != shape:
            raise LossError(
                f"{loss_name}: {name} must have the shape of student_scores {tuple(shape)}, got {tuple(tensor.shape)}"
            )
    valid = torch.ones(shape, dtype=torch.bool, device=student_scores.device) if mask is None else mask.bool()
    pad = ~valid

    def clean(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.masked_fill(pad, 0)

    return LossInputs(
        student=student_scores.masked_fill(pad, 0.0),
        teacher_scores=None if teacher_scores is None else clean(teacher_scores.to(student_scores.dtype)),
        teacher_ranks=None if teacher_ranks is None else clean(teacher_ranks.long()),
        labels=None if labels is None else clean(labels.to(student_scores.dtype)),
        mask=valid,
    )


def require(tensor: Tensor | None, input_name: str, loss_name: str) -> Tensor:
    """Return ``tensor``, or raise a :class:`LossError` naming the loss and the missing input."""
    if tensor is None:
        raise LossError(f"{loss_name}: needs {input_name}, which was not given")
    return tensor


def teacher_preference(inputs: LossInputs, loss_name: str) -> Tensor:
    """[B, n] float key, higher = preferred by the teacher: ``-teacher_ranks`` if given, else ``teacher_scores``."""
    if inputs.teacher_ranks is not None:
        return -inputs.teacher_ranks.to(inputs.student.dtype)
    if inputs.teacher_scores is not None:
        return inputs.teacher_scores
    raise LossError(f"{loss_name}: needs teacher_scores or teacher_ranks, neither was given")


def teacher_order(inputs: LossInputs, loss_name: str) -> Tensor:
    """[B, n] candidate indices in teacher order (best first, stable on ties, padded candidates last)."""
    key = teacher_preference(inputs, loss_name).masked_fill(~inputs.mask, float("-inf"))
    return torch.sort(key, dim=-1, descending=True, stable=True).indices


def ranks_from_order(order: Tensor) -> Tensor:
    """Invert a [B, n] order (indices best first) into ranks (0 = best) per candidate."""
    return torch.argsort(order, dim=-1)


def masked_log_softmax(x: Tensor, mask: Tensor) -> Tensor:
    """Log-softmax over the last dim restricted to ``mask``; padded entries come out as 0."""
    x = x.masked_fill(~mask, torch.finfo(x.dtype).min)
    return torch.log_softmax(x, dim=-1).masked_fill(~mask, 0.0)


def plackett_luce_log_probs(scores: Tensor, order: Tensor, valid_sorted: Tensor) -> Tensor:
    """Log-probabilities of each Plackett-Luce choice along ``order``.

    Step ``k`` picks ``order[:, k]`` from the items still left, ``order[:, k:]``, restricted to
    ``valid_sorted``, which must be a prefix of each row (valid items first). Returns [B, n]:
    ``s[order[k]] - logsumexp_{j >= k, valid} s[order[j]]`` for valid steps, 0 elsewhere.
    """
    floor = torch.finfo(scores.dtype).min
    sorted_scores = scores.gather(-1, order).masked_fill(~valid_sorted, floor)
    remaining = torch.logcumsumexp(sorted_scores.flip(-1), dim=-1).flip(-1)
    return (sorted_scores - remaining).masked_fill(~valid_sorted, 0.0)


def mean_over_queries(per_query: Tensor, has_terms: Tensor) -> Tensor:
    """Mean of ``per_query`` [B] over queries with ``has_terms``; 0 (still in the graph) if there are none."""
    weight = has_terms.to(per_query.dtype)
    return (per_query * weight).sum() / weight.sum().clamp_min(1.0)


class RankingLoss(nn.Module):
    """Base class: common call signature, validation and reduction (mean over queries).

    Subclasses set :attr:`name` (their registry name) and implement :meth:`per_query_loss`.
    """

    name: str = "ranking_loss"

    def forward(
        self,
        student_scores: Tensor,
        teacher_scores: Tensor | None = None,
        teacher_ranks: Tensor | None = None,
        labels: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Return the scalar loss, the mean over queries of :meth:`per_query_loss`."""
        inputs = prepare_inputs(self.name, student_scores, teacher_scores, teacher_ranks, labels, mask)
        per_query, has_terms = self.per_query_loss(inputs)
        return mean_over_queries(per_query, has_terms)

    def per_query_loss(self, inputs: LossInputs) -> tuple[Tensor, Tensor]:
        """Return ([B] float loss per query, [B] bool: the query had anything to score)."""
        raise NotImplementedError
