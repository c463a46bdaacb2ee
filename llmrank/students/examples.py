"""From a teacher run (or the qrels as an oracle teacher) to training groups, what a student kind that learns
from ranked lists (the pointwise scorer; an encoder) is distilled from.

A *group* is one query with ``group_size`` of its candidates, the teacher's scores and ranks for them and
the judged labels where they exist; the distillation losses compare the student's scores on the whole
group with the teacher's. Groups always contain the teacher's best documents and a seeded sample of the
rest (hard negatives from the first stage, or from several retrievers merged upstream).
"""

from __future__ import annotations

import random

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError


def build_groups(data: RankingData, teacher: dict[str, dict], group_size: int = 8, top_keep: int | None = None,
                 seed: int = 0, max_groups: int | None = None, negative_band: tuple[int, int] | None = None,
                 negative_margin: float = 0.0, stats: dict | None = None) -> list[dict]:
    """One group per teacher record: the teacher's ``top_keep`` best (default half the group) plus a
    seeded sample of its other candidates, kept in teacher order.

    With ``negative_band`` ``(lo, hi)`` the rest of the group is mined instead (llmrank.students.negatives):
    the judged positive joins the teacher's best, and the negatives are the hardest candidates of first-stage
    ranks ``lo..hi`` that the teacher scores below ``positive - negative_margin``; ``stats`` (a dict) then
    receives ``negatives_dropped`` (the filter's count) and ``short_groups``.

    Each group: ``qid, query, docs (texts), docids, teacher_scores, teacher_ranks, labels``.

    A teacher run whose records carry per-window identifier log-probabilities (the ``first`` method's
    ``extra.windows``) gives groups per window instead: :func:`window_groups`.
    """
    if negative_band is not None:
        return _mined_groups(data, teacher, group_size, top_keep, max_groups, negative_band, negative_margin,
                             stats if stats is not None else {})
    if teacher and all((rec.get("extra") or {}).get("windows") for rec in teacher.values()):
        return window_groups(data, teacher, group_size, top_keep, seed, max_groups)
    rng = random.Random(seed)
    top_keep = group_size // 2 if top_keep is None else top_keep
    groups = []
    for qid, rec in teacher.items():
        _check_query(data, qid)
        ranking = rec["ranking"]
        if len(ranking) < 2:
            continue
        scores = _scores(rec)
        keep = _top_and_sample(rng, len(ranking), group_size, top_keep)
        groups.append(_group(data, qid, [ranking[i] for i in keep], [float(scores[i]) for i in keep]))
        if max_groups and len(groups) >= max_groups:
            break
    if not groups:
        raise LlmrankError("no training groups: the teacher run has no query with two or more ranked documents")
    return groups


def window_groups(data: RankingData, teacher: dict[str, dict], group_size: int = 8, top_keep: int | None = None,
                  seed: int = 0, max_groups: int | None = None) -> list[dict]:
    """One group per window of a FIRST teacher record (``extra.windows``: the documents a window showed and
    the log-probability of each one's identifier): the window's ``top_keep`` most probable documents plus a
    seeded sample of the rest, ``teacher_scores`` the identifier log-probabilities. Softmax over a subset of
    log-probabilities is the window's distribution renormalised to that subset, so ListNet / KL on these
    groups distils the teacher's soft preferences exactly, not an order. Documents whose identifier the
    backend could not see (``None``) are left out; a window with fewer than two seen documents gives none.
    """
    rng = random.Random(seed)
    top_keep = group_size // 2 if top_keep is None else top_keep
    groups = []
    for qid, rec in teacher.items():
        _check_query(data, qid)
        for w, win in enumerate(rec["extra"]["windows"]):
            docids, lps = win.get("docids"), win.get("logprobs")
            if not isinstance(docids, list) or not isinstance(lps, list) or len(docids) != len(lps):
                raise LlmrankError(f"teacher record for query '{qid}': window {w} needs 'docids' and 'logprobs' "
                                   "lists of one length")
            seen = sorted(((float(v), d) for d, v in zip(docids, lps) if v is not None), key=lambda x: -x[0])
            if len(seen) < 2:
                continue
            keep = _top_and_sample(rng, len(seen), group_size, top_keep)
            groups.append(_group(data, qid, [seen[i][1] for i in keep], [seen[i][0] for i in keep]))
            if max_groups and len(groups) >= max_groups:
                return groups
    if not groups:
        raise LlmrankError("no training groups: no FIRST window has two or more documents with a seen identifier")
    return groups


def _mined_groups(data: RankingData, teacher: dict[str, dict], group_size: int, top_keep: int | None,
                  max_groups: int | None, band: tuple[int, int], margin: float, stats: dict) -> list[dict]:
    from llmrank.students.negatives import check_band, mine_negatives

    band = check_band(list(band))
    top_keep = group_size // 2 if top_keep is None else top_keep
    groups, dropped, short = [], 0, 0
    for qid, rec in teacher.items():
        _check_query(data, qid)
        ranking = rec["ranking"]
        if len(ranking) < 2:
            continue
        scores = _scores(rec)
        judged = (data.qrels or {}).get(qid, {})
        top = ranking[: min(top_keep, len(ranking))]
        positive, _, _ = mine_negatives(rec, judged, 0, band, margin)
        keep = list(dict.fromkeys(top + [positive]))
        positive, negs, n_drop = mine_negatives(rec, judged, group_size - len(keep), band, margin, set(keep))
        dropped += n_drop
        chosen = set(keep) | set(negs)
        if len(chosen) < group_size:
            short += 1
        order = [i for i, d in enumerate(ranking) if d in chosen]  # teacher order
        groups.append(_group(data, qid, [ranking[i] for i in order], [float(scores[i]) for i in order]))
        if max_groups and len(groups) >= max_groups:
            break
    if not groups:
        raise LlmrankError("no training groups: the teacher run has no query with two or more ranked documents")
    stats.update({"negatives_dropped": dropped, "short_groups": short, "groups": len(groups),
                  "band": list(band), "margin": margin})
    return groups


# -- what the three group builders share ---------------------------------------------------------------------

def _check_query(data: RankingData, qid: str) -> None:
    if qid not in data.queries:
        raise LlmrankError(f"teacher record for query '{qid}' has no query text in {data.source}")


def _scores(rec: dict) -> list:
    """A record's teacher scores; an order alone scores n, n-1, …, 1."""
    ranking = rec["ranking"]
    return rec.get("scores") or [float(len(ranking) - i) for i in range(len(ranking))]


def _top_and_sample(rng: random.Random, n: int, group_size: int, top_keep: int) -> list[int]:
    """Positions ``0..top_keep-1`` of ``n`` ranked documents plus a seeded sample of the rest, up to
    ``group_size``, in teacher order."""
    keep = list(range(min(top_keep, n)))
    rest = list(range(len(keep), n))
    return keep + sorted(rng.sample(rest, min(group_size - len(keep), len(rest))))


def _group(data: RankingData, qid: str, docids: list[str], teacher_scores: list[float]) -> dict:
    """One training group: ``docids`` in teacher order with their teacher scores, texts and judged labels; a
    document the data lacks is an error naming it."""
    missing = [d for d in docids if d not in data.docs]
    if missing:
        raise LlmrankError(f"teacher record for query '{qid}' names document '{missing[0]}' not in {data.source}")
    judged = (data.qrels or {}).get(qid, {})
    return {
        "qid": qid,
        "query": data.queries[qid].text,
        "docids": docids,
        "docs": [data.docs[d].contents for d in docids],
        "teacher_scores": teacher_scores,
        "teacher_ranks": list(range(len(docids))),
        "labels": [float(judged.get(d, 0)) for d in docids],
    }
