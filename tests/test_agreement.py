"""Student–teacher agreement against values computed by hand."""

from __future__ import annotations

from math import log2

import pytest

from llmrank.data import Candidates
from llmrank.errors import LlmrankError
from llmrank.eval.agreement import agreement, kendall_tau, teacher_qrels

TEACHER = Candidates({
    "q1": [("a", 0.9), ("b", 0.8), ("c", 0.7)],
    "q2": [("x", 3.0), ("y", 2.0), ("z", 1.0), ("w", 0.0)],
})
# q1: a and b swapped; q2: exactly reversed
STUDENT = Candidates({
    "q1": [("b", 5.0), ("a", 4.0), ("c", 1.0)],
    "q2": [("w", 9.0), ("z", 8.0), ("y", 7.0), ("x", 6.0)],
})


def test_teacher_qrels_grades_by_position():
    assert teacher_qrels(TEACHER, depth=3) == {"q1": {"a": 3, "b": 2, "c": 1}, "q2": {"x": 3, "y": 2, "z": 1, "w": 0}}


def test_kendall_tau_by_hand():
    taus = kendall_tau(STUDENT, TEACHER)
    # q1: pairs (a,b) discordant, (a,c) and (b,c) concordant -> (2 - 1) / 3; q2 reversed -> -1
    assert taus["q1"] == pytest.approx(1 / 3)
    assert taus["q2"] == pytest.approx(-1.0)
    assert kendall_tau(TEACHER, TEACHER) == {"q1": pytest.approx(1.0), "q2": pytest.approx(1.0)}


def test_agreement_ndcg_against_teacher_by_hand():
    got = agreement(STUDENT, TEACHER, k=10, depth=3)
    # linear gains, log2(rank + 1) discount (trec_eval): q1 student gains [2, 3, 1], ideal [3, 2, 1]
    q1 = (2 + 3 / log2(3) + 1 / 2) / (3 + 2 / log2(3) + 1 / 2)
    # q2 student gains [0, 1, 2, 3] over ideal [3, 2, 1]
    q2 = (1 / log2(3) + 2 / 2 + 3 / log2(5)) / (3 + 2 / log2(3) + 1 / 2)
    assert got["ndcg@10_vs_teacher"] == pytest.approx((q1 + q2) / 2, abs=1e-9)
    assert got["kendall_tau"] == pytest.approx((1 / 3 - 1) / 2)
    assert got["queries"] == 2
    same = agreement(TEACHER, TEACHER)
    assert same["ndcg@10_vs_teacher"] == pytest.approx(1.0) and same["kendall_tau"] == pytest.approx(1.0)


def test_agreement_needs_shared_queries():
    with pytest.raises(LlmrankError, match="share no query"):
        agreement(Candidates({"q9": [("a", 1.0), ("b", 0.0)]}), TEACHER)
    with pytest.raises(LlmrankError, match="depth"):
        teacher_qrels(TEACHER, depth=0)
