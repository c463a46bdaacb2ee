"""Hard negatives mined from a band of first-stage ranks, with the teacher as false-negative filter (as
sentence-transformers' ``mine_hard_negatives`` does with a cross-encoder: RocketQA's denoising).

For one teacher record: the **positive** is the judged-relevant candidate the teacher ranks highest (the
generated query's source document, or a qrels positive), else the teacher's top candidate. The
**negatives** are the candidates whose first-stage rank (1-based, the record's ``candidates`` order) lies in
``[lo, hi]``, hardest (best first-stage rank) first, minus the judged-relevant ones; a negative is **dropped
as a likely false negative** when the teacher scores it at or above ``positive score - margin`` (``margin``
0: those the teacher puts at or above the positive). The margin is on the teacher's own score scale
(a probability for pointwise LLM teachers, 1/(60 + rank) sums for RRF fusion).
"""

from __future__ import annotations

from llmrank.errors import LlmrankError


def check_band(band) -> tuple[int, int]:
    """``[lo, hi]`` as a pair of 1-based ranks, ``1 <= lo <= hi``; anything else is an error saying so."""
    if (not isinstance(band, (list, tuple)) or len(band) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in band)):
        raise LlmrankError(f"a negative band is two first-stage ranks [from, to], got {band!r}")
    lo, hi = band
    if not 1 <= lo <= hi:
        raise LlmrankError(f"a negative band [from, to] needs 1 <= from <= to, got {list(band)}")
    return lo, hi


def mine_negatives(rec: dict, judged: dict[str, float], n: int, band: tuple[int, int], margin: float = 0.0,
                   exclude: set[str] | None = None) -> tuple[str, list[str], int]:
    """``(positive, negatives, dropped)`` for one teacher record: up to ``n`` negatives from the band (see the
    module docstring), never one of ``exclude``; ``dropped`` counts the band's candidates the filter removed."""
    lo, hi = check_band(band)
    ranking = rec["ranking"]
    scores = rec.get("scores") or [float(len(ranking) - i) for i in range(len(ranking))]
    teacher = dict(zip(ranking, (float(s) for s in scores)))
    first_stage = rec.get("candidates") or ranking
    relevant = [d for d in ranking if judged.get(d, 0) > 0]
    positive = relevant[0] if relevant else ranking[0]
    bar = teacher[positive] - margin
    exclude = set(exclude or ()) | {positive}
    negatives, dropped = [], 0
    for r, d in enumerate(first_stage, 1):
        if r < lo or r > hi or d in exclude or judged.get(d, 0) > 0 or d not in teacher:
            continue
        if teacher[d] >= bar:
            dropped += 1
            continue
        if len(negatives) < n:
            negatives.append(d)
    return positive, negatives, dropped
