"""Ranking rewards (llmrank.training.rewards) on crafted completions with hand-computed rewards."""

import math

import pytest

from llmrank.errors import LlmrankError
from llmrank.training.rewards import (
    REWARDS,
    _ndcg,
    build_reward,
    build_rewards,
    format_reward,
    length_reward,
    listwise_ndcg_reward,
    relevance_reward,
    setwise_reward,
)

L2_3 = math.log2(3)
L2_5 = math.log2(5)
IDCG = 2 + 1 / L2_3  # grades [0, 1, 0, 2]: ideal order 4, 2


def one(fn, completion, **kw):
    return fn(["p"], [completion], **{k: [v] for k, v in kw.items() if k in ("label", "teacher_label", "labels", "teacher_order")},
              **{k: v for k, v in kw.items() if k not in ("label", "teacher_label", "labels", "teacher_order")})[0]


# (completion, label, teacher_label, format, relevance)
VERDICTS = [
    ("The document reports the trial's outcome.\nVerdict: yes", 1, None, 1.0, 1.0),       # valid, right
    ("The document reports the trial's outcome.\nVerdict: yes", 0, None, 1.0, 0.0),       # valid, wrong
    ("Unrelated topic.\nVerdict: no", 0, None, 1.0, 1.0),                                  # valid no
    ("Verdict: no", 2, None, 1.0, 0.0),                                                    # grade 2 >= 1 is relevant
    ("Reason.\nVerdict: yes no", 1, None, 0.0, 0.0),                                       # adversarial: both
    ("Reason.\nVerdict: yes\nVerdict: no", 0, None, 1.0, 1.0),                             # the last line counts
    ("It is relevant. Verdict: yes", 1, None, 0.0, 0.0),                                   # not on its own line
    ("Reason.\n**Verdict:** Yes.", 1, None, 1.0, 1.0),                                     # markdown tolerated
    ("Reason.\nverdict: NO", 0, None, 1.0, 1.0),                                           # case
    ("", 1, None, 0.0, 0.0),                                                               # empty
    ("The document is about the effect of", 0, None, 0.0, 0.0),                            # truncated
    ("Reason.\nVerdict: yes\nActually it is not relevant.", 1, None, 0.0, 0.0),            # answer then prose
    ("Reason.\nVerdict: maybe", 1, None, 0.0, 0.0),                                        # malformed word
    ("Reason.\nVerdict:", 1, None, 0.0, 0.0),                                              # cut before the word
    ("Reason.\nyes", 1, None, 0.0, 0.0),                                                   # bare word, no key
    ("Reason.\nVerdict: yes", None, 1, 1.0, 1.0),                                          # teacher's verdict
    ("Reason.\nVerdict: yes", None, 0, 1.0, 0.0),                                          # teacher says no
    ("Reason.\nVerdict: no", 0, 1, 1.0, 1.0),                                              # qrels beat the teacher
    ([{"role": "assistant", "content": "Reason.\nVerdict: yes"}], 1, None, 1.0, 1.0),      # chat completion
    ("Reason.\nVerdict: yes", None, None, 1.0, None),                                      # no target: None
]


@pytest.mark.parametrize("completion,label,teacher,fmt,rel", VERDICTS)
def test_verdict_rewards(completion, label, teacher, fmt, rel):
    assert one(format_reward, completion) == fmt
    assert one(relevance_reward, completion, label=label, teacher_label=teacher) == rel


GRADES = [  # (completion, label, format, graded relevance)
    ("Partly on topic.\nScore: 2", 3, 1.0, 1 - 1 / 3),
    ("Partly on topic.\nScore: 3/3", 3, 1.0, 1.0),
    ("Off topic.\nGrade: 0", 3, 1.0, 0.0),
    ("Score: 5", 1, 0.0, 0.0),                   # outside 0..3
    ("Reason.\nVerdict: yes", 1, 0.0, 0.0),      # a yes/no answer is not a grade
    ("Reason.\nScore: 2 or 3", 2, 0.0, 0.0),     # adversarial: two grades
]


@pytest.mark.parametrize("completion,label,fmt,rel", GRADES)
def test_graded_rewards(completion, label, fmt, rel):
    assert one(format_reward, completion, output="grade") == fmt
    assert one(relevance_reward, completion, label=label, graded=True) == pytest.approx(rel)


SET_LABELS = [0, 0, 1, 0]
SETWISE = [  # (completion, tags, pick reward, format reward); the one relevant passage is C
    ("<think>C answers the question.</think><answer>C</answer>", True, 1.0, 1.0),
    ("<answer>[C]</answer>", True, 1.0, 1.0),
    ("<answer>Passage C</answer>", True, 1.0, 1.0),
    ("<answer>A</answer>", True, 0.0, 1.0),                  # valid but not relevant
    ("<answer>E</answer>", True, 0.0, 0.0),                  # only A-D shown
    ("<answer>C</answer> or maybe A", True, 0.0, 0.0),       # text after the tags
    ("I pick C", True, 0.0, 0.0),                            # answer outside the tags
    ("<answer>C, A</answer>", True, 0.0, 0.0),               # two labels
    ("<answer>A</answer><answer>C</answer>", True, 0.0, 0.0),  # two answers
    ("<answer>C", True, 0.0, 0.0),                           # truncated
    ("", True, 0.0, 0.0),                                    # empty
    ("Because of the dose.\nC", False, 1.0, 1.0),            # without tags: the last line
]


@pytest.mark.parametrize("completion,tags,want,fmt", SETWISE)
def test_setwise_reward(completion, tags, want, fmt):
    assert one(setwise_reward, completion, labels=SET_LABELS, tags=tags) == want
    assert one(format_reward, completion, labels=SET_LABELS, output="setwise", tags=tags) == fmt


LIST_LABELS = [0, 1, 0, 2]
INPUT_NDCG = (1 / L2_3 + 2 / L2_5) / IDCG
LISTWISE = [  # (completion, options, reward)
    ("[4] > [2] > [1] > [3]", {}, 1.0),
    ("[2] > [4] > [1] > [3]", {}, (1 + 2 / L2_3) / IDCG),
    ("[1] > [2] > [3] > [4]", {}, INPUT_NDCG),
    ("[4] > [4] > [2] > [1]", {}, 1.0 - 1.0),                          # duplicate: repaired to 4 2 1 3, penalised
    ("[2] > [1]", {}, (1 + 2 / L2_5) / IDCG - 1.0),                    # missing 3, 4: appended
    ("[4] > [2] > [1] > [3] > [5]", {}, 0.0),                          # out of range
    ("[4] > [2] > [1] > [", {}, 0.0),                                  # truncated
    ("", {}, INPUT_NDCG - 1.0),                                        # empty: input order, penalised
    ("[4] > [2] > [1] > [3]", {"gain_over_input": True}, 1.0 - INPUT_NDCG),
    ("[4] > [2] > [1] > [3]", {"penalty": 0.25}, 1.0),
    ("[2] > [1]", {"penalty": 0.25}, (1 + 2 / L2_5) / IDCG - 0.25),
    ("<think>4 states it.</think><answer>[4] > [2] > [1] > [3]</answer>", {"tags": True}, 1.0),
    ("<answer>[1] > [2] > [3] > [4]</answer> no: [4] > [2] > [1] > [3]", {"tags": True}, INPUT_NDCG - 1.0),
    ("Ranking: [4] > [2] > [1] > [3]", {}, 0.0),                       # words on the answer line
    ("4, 2, 1, 3", {}, 0.0),                                           # no brackets: readable, not the format
]


@pytest.mark.parametrize("completion,opts,want", LISTWISE)
def test_listwise_reward(completion, opts, want):
    assert one(listwise_ndcg_reward, completion, labels=LIST_LABELS, **opts) == pytest.approx(want)


def test_listwise_against_teacher_order():
    # teacher order [3] > [1] > [2]: gains passage1=2, passage2=1, passage3=3
    assert one(listwise_ndcg_reward, "[3] > [1] > [2]", teacher_order=[2, 0, 1]) == pytest.approx(1.0)
    want = (2 + 1 / L2_3 + 3 / 2) / (3 + 2 / L2_3 + 1 / 2)
    assert one(listwise_ndcg_reward, "[1] > [2] > [3]", teacher_order=[2, 0, 1]) == pytest.approx(want)
    assert one(format_reward, "[3] > [1] > [2]", teacher_order=[2, 0, 1], output="permutation") == 1.0
    assert one(format_reward, "[3] > [3] > [2]", teacher_order=[2, 0, 1], output="permutation") == 0.0


def test_ndcg_equals_ir_measures():
    import ir_measures

    gains = [0, 1, 0, 2, 3, 0, 1, 0, 0, 0, 0, 2]
    order = [5, 0, 3, 11, 1, 2, 4, 6, 7, 8, 9, 10]
    qrels = [ir_measures.Qrel("q", f"d{i}", g) for i, g in enumerate(gains)]
    run = [ir_measures.ScoredDoc("q", f"d{i}", float(len(order) - r)) for r, i in enumerate(order)]
    want = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
    assert _ndcg(order, gains, 10) == pytest.approx(want)


LENGTH = [  # (completion, reward) with min 10, max 60 words
    ("five words in this explanation\nVerdict: yes", 0.5),
    (" ".join(["w"] * 30) + "\nVerdict: no", 1.0),
    (" ".join(["w"] * 90) + "\nVerdict: no", 0.5),
    (" ".join(["w"] * 130) + "\nVerdict: no", 0.0),
    ("Verdict: yes", 0.0),
    ("", 0.0),
    ("<think>" + " ".join(["w"] * 20) + "</think><answer>C</answer>", 1.0),
]


@pytest.mark.parametrize("completion,want", LENGTH)
def test_length_reward(completion, want):
    assert one(length_reward, completion, tags=completion.startswith("<think>")) == pytest.approx(want)


def test_batch_of_completions_and_columns():
    """trl's call: several completions, the dataset's columns repeated, plus trl's own keyword arguments."""
    out = relevance_reward(["p"] * 3, ["a\nVerdict: yes", "b\nVerdict: no", "c\nVerdict: yes"],
                           label=[1, 1, None], teacher_label=[None, None, 0], completion_ids=[[1], [2], [3]],
                           trainer_state=None, log_extra=None, log_metric=None, qid=["q", "q", "q"])
    assert out == [1.0, 0.0, 0.0]


def test_registry_and_options():
    assert set(REWARDS) == {"format", "relevance", "setwise", "listwise_ndcg", "length"}
    with pytest.raises(LlmrankError, match="did you mean 'relevance'"):
        build_reward("relevence")
    with pytest.raises(LlmrankError, match="did you mean 'penalty'"):
        build_reward("listwise_ndcg", penalti=1)
    with pytest.raises(LlmrankError, match="unknown output 'verdicts'"):
        build_reward("format", output="verdicts")(["p"], ["x"])
    f = build_reward("listwise_ndcg", penalty=0.25)
    assert f.__name__ == "listwise_ndcg"
    assert f(["p"], ["[2] > [1]"], labels=[LIST_LABELS])[0] == pytest.approx((1 + 2 / L2_5) / IDCG - 0.25)
    funcs, weights = build_rewards([{"name": "format", "weight": 0.2}, {"name": "relevance"}])
    assert [f.__name__ for f in funcs] == ["format", "relevance"] and weights == [0.2, 1.0]
    with pytest.raises(LlmrankError, match="no rewards"):
        build_rewards([])
    with pytest.raises(LlmrankError, match="column 'label' has 2 values for 1"):
        relevance_reward(["p"], ["Verdict: yes"], label=[1, 0])
