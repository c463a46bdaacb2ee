"""Metrics against values computed by hand, with trec_eval conventions (linear gains, log2 discount)."""

from __future__ import annotations

from math import log2

import pytest

from llmrank.data import Candidates
from llmrank.errors import LlmrankError
from llmrank.eval.metrics import evaluate, parse_metric

# Graded judgements (0-3). d3 is judged non-relevant; d4 is relevant but never retrieved.
QRELS = {
    "q1": {"d1": 3, "d2": 1, "d3": 0, "d4": 2},
    "q2": {"d5": 1, "d6": 2},
    "q3": {"d7": 2, "d8": 1},
}
# Lists in ranking order with decreasing scores.
RUN = Candidates({
    "q1": [("d2", 9.0), ("d3", 8.0), ("d1", 7.0), ("d9", 6.0)],
    "q2": [("d10", 5.0), ("d6", 4.0), ("d11", 3.0), ("d5", 2.0)],
    "q3": [("d12", 3.0), ("d13", 2.0), ("d14", 1.0)],
})


def dcg(gains):
    return sum(g / log2(rank + 1) for rank, g in enumerate(gains, 1))


# nDCG@10 by hand: gains of the retrieved docs in rank order over the ideal ordering of all judgements
NDCG_Q1 = dcg([1, 0, 3, 0]) / dcg([3, 2, 1])  # (1 + 3/2) / (3 + 2/log2(3) + 1/2)
NDCG_Q2 = dcg([0, 2, 0, 1]) / dcg([2, 1])  # (2/log2(3) + 1/log2(5)) / (2 + 1/log2(3))
NDCG_Q3 = 0.0


def test_ndcg_at_10_by_hand():
    assert NDCG_Q1 == pytest.approx((1 + 3 / 2) / (3 + 2 / log2(3) + 1 / 2))
    scores = evaluate(RUN, QRELS, ["ndcg@10"])
    assert scores["ndcg@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2 + NDCG_Q3) / 3, abs=1e-9)


def test_ndcg_cutoff_applies():
    # at @2, q2's d5 (rank 4) no longer counts; q1's d1 (rank 3) no longer counts
    q1 = dcg([1, 0]) / dcg([3, 2])
    q2 = dcg([0, 2]) / dcg([2, 1])
    assert evaluate(RUN, QRELS, ["ndcg@2"])["ndcg@2"] == pytest.approx((q1 + q2) / 3, abs=1e-9)


def test_mrr_and_recall_by_hand():
    scores = evaluate(RUN, QRELS, ["mrr@10", "recall@3", "recall@100"])
    # first relevant (grade >= 1): q1 rank 1, q2 rank 2, q3 none
    assert scores["mrr@10"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    # q1: {d1, d2, d4}, top-3 holds d2, d1; q2: {d5, d6}, top-3 holds d6; q3: nothing
    assert scores["recall@3"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores["recall@100"] == pytest.approx((2 / 3 + 2 / 2 + 0) / 3)


def test_mrr_cutoff_applies():
    # @1: only q1 has a relevant doc at rank 1
    assert evaluate(RUN, QRELS, ["mrr@1"])["mrr@1"] == pytest.approx(1 / 3)


def test_rel_threshold_changes_binary_measures_not_ndcg():
    names = ["ndcg@10", "mrr@10", "recall@3"]
    one = evaluate(RUN, QRELS, names, rel_threshold=1)
    two = evaluate(RUN, QRELS, names, rel_threshold=2)
    assert two["ndcg@10"] == pytest.approx(one["ndcg@10"])
    # grade >= 2: q1 {d1, d4}, first at rank 3; q2 {d6} at rank 2; q3 {d7} absent
    assert two["mrr@10"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert two["recall@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert two["mrr@10"] != pytest.approx(one["mrr@10"])
    assert two["recall@3"] != pytest.approx(one["recall@3"])


def test_map_and_precision_by_hand():
    scores = evaluate(RUN, QRELS, ["map", "p@2"])
    # AP: q1 relevant at ranks 1, 3 of R=3 -> (1 + 2/3) / 3; q2 at ranks 2, 4 of R=2 -> (1/2 + 2/4) / 2
    assert scores["map"] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 2 + 2 / 4) / 2 + 0) / 3)
    assert scores["p@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_per_query():
    out = evaluate(RUN, QRELS, ["ndcg@10", "mrr@10"], per_query=True)
    assert set(out) == {"ndcg@10", "mrr@10"}
    assert set(out["ndcg@10"]) == {"q1", "q2", "q3"}
    assert out["ndcg@10"]["q1"] == pytest.approx(NDCG_Q1)
    assert out["ndcg@10"]["q2"] == pytest.approx(NDCG_Q2)
    assert out["ndcg@10"]["q3"] == 0.0
    assert out["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 0.5, "q3": 0.0})


def test_per_query_with_two_names_for_one_measure():
    out = evaluate(RUN, QRELS, ["mrr@10", "rr@10"], per_query=True)
    assert out["mrr@10"] == out["rr@10"] == pytest.approx({"q1": 1.0, "q2": 0.5, "q3": 0.0})


def test_keys_are_the_names_as_given():
    scores = evaluate(RUN, QRELS, ["NDCG@10", "MRR@10", "Recall@3"])
    assert list(scores) == ["NDCG@10", "MRR@10", "Recall@3"]
    assert scores["NDCG@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2) / 3)


def test_list_order_wins_over_scores():
    # a reranked list whose scores don't decrease is scored in its list order, not by score
    reranked = Candidates({"q1": [("d1", 0.1), ("d4", 0.2), ("d2", 0.9)]})
    expected = dcg([3, 2, 1]) / dcg([3, 2, 1])
    assert evaluate(reranked, QRELS, ["ndcg@10"])["ndcg@10"] == pytest.approx(expected)
    by_score = Candidates({"q1": [("d2", 0.9), ("d4", 0.2), ("d1", 0.1)]})
    assert evaluate(by_score, QRELS, ["ndcg@10"])["ndcg@10"] < expected


def test_mean_is_over_the_runs_queries():
    # qrels queries the run lacks are not averaged in (trec_eval without -c)
    only_q1 = Candidates({"q1": RUN["q1"]})
    assert evaluate(only_q1, QRELS, ["ndcg@10"])["ndcg@10"] == pytest.approx(NDCG_Q1)


def test_unknown_metric_names_known_ones():
    with pytest.raises(LlmrankError) as e:
        evaluate(RUN, QRELS, ["bleu@4"])
    msg = str(e.value)
    assert "bleu@4" in msg
    for known in ("ndcg@k", "mrr@k", "recall@k", "map"):
        assert known in msg
    with pytest.raises(LlmrankError, match="unknown metric"):
        parse_metric("ndcg_cut_10")


@pytest.mark.parametrize("name", ["recall", "p", "ndcg@0", "r-prec@10"])
def test_metric_names_that_cannot_be_computed_are_user_errors(name):
    # uncut recall/precision and a zero cutoff crash pytrec_eval (an assertion or an abort)
    with pytest.raises(LlmrankError, match=name):
        evaluate(RUN, QRELS, [name])


def test_parse_metric_forms():
    assert str(parse_metric("ndcg@10")) == "nDCG@10"
    assert str(parse_metric("mrr@10", rel_threshold=2)) == "RR(rel=2)@10"
    assert str(parse_metric("ndcg@10", rel_threshold=2)) == "nDCG@10"
    assert str(parse_metric("map@100")) == "AP@100"
    assert str(parse_metric(" R-Prec ")) == "Rprec"


def test_run_with_unknown_queries():
    with pytest.raises(LlmrankError, match="do not judge.*first: q99"):
        evaluate(Candidates({"q1": RUN["q1"], "q99": [("d1", 1.0)]}), QRELS, ["ndcg@10"])
    with pytest.raises(LlmrankError, match="none of the run's 1 queries"):
        evaluate(Candidates({"x": [("d1", 1.0)]}), QRELS, ["ndcg@10"])
