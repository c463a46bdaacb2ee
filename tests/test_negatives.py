"""Hard negatives from a band of first-stage ranks with the teacher-margin false-negative filter
(llmrank.students.negatives, and build_groups' mined groups)."""

from __future__ import annotations

import pytest

from llmrank.data.types import Doc, Query, RankingData
from llmrank.errors import LlmrankError
from llmrank.students.examples import build_groups
from llmrank.students.negatives import check_band, mine_negatives

# first-stage order d1..d8; the teacher reorders them and scores each
REC = {"qid": "q", "key": "k", "candidates": [f"d{i}" for i in range(1, 9)],
       "ranking": ["d3", "d1", "d7", "d2", "d5", "d4", "d8", "d6"],
       "scores": [0.9, 0.8, 0.75, 0.5, 0.4, 0.3, 0.2, 0.1]}


def test_mine_by_hand():
    # positive: the judged d7 (teacher 0.75); band ranks 2..6 = d2 d3 d4 d5 d6 (first-stage order)
    pos, negs, dropped = mine_negatives(REC, {"d7": 1}, 10, (2, 6), margin=0.0)
    assert pos == "d7"
    assert negs == ["d2", "d4", "d5", "d6"] and dropped == 1  # d3 (0.9 >= 0.75) is a likely false negative
    # margin 0.3: drop scores >= 0.45 -> d2 (0.5) and d3 go
    pos, negs, dropped = mine_negatives(REC, {"d7": 1}, 10, (2, 6), margin=0.3)
    assert negs == ["d4", "d5", "d6"] and dropped == 2
    # n caps the negatives, hardest first; exclude removes chosen ones
    assert mine_negatives(REC, {"d7": 1}, 2, (2, 6))[1] == ["d2", "d4"]
    assert mine_negatives(REC, {"d7": 1}, 2, (2, 6), exclude={"d2"})[1] == ["d4", "d5"]
    # no judged positive: the teacher's top (d3, 0.9) is the positive; nothing in the band scores >= 0.9 but d3 itself
    pos, negs, dropped = mine_negatives(REC, {}, 10, (1, 3))
    assert pos == "d3" and negs == ["d1", "d2"] and dropped == 0


@pytest.mark.parametrize("band", [[0, 3], [5, 2], [1], "1-3", [1.0, 2]])
def test_bad_band(band):
    with pytest.raises(LlmrankError, match="band"):
        check_band(band)


def test_mined_groups_keep_top_positive_and_count_drops():
    docs = {f"d{i}": Doc(f"d{i}", f"text {i}") for i in range(1, 9)}
    data = RankingData("t", {"q": Query("q", "query")}, docs, {"q": {"d7": 1}})
    stats: dict = {}
    groups = build_groups(data, {"q": REC}, group_size=5, top_keep=2, negative_band=(2, 6), negative_margin=0.0,
                          stats=stats)
    g = groups[0]
    # teacher's top 2 (d3, d1) + positive d7 + 2 hardest band negatives not chosen (d2, d4), in teacher order
    assert g["docids"] == ["d3", "d1", "d7", "d2", "d4"]
    assert g["labels"] == [0, 0, 1, 0, 0] and g["teacher_scores"] == [0.9, 0.8, 0.75, 0.5, 0.3]
    assert g["teacher_ranks"] == [0, 1, 2, 3, 4]
    assert stats["negatives_dropped"] == 0 and stats["short_groups"] == 0  # d3 is chosen already, not a negative
    # a narrow band leaves a short group
    stats = {}
    g = build_groups(data, {"q": REC}, group_size=6, top_keep=2, negative_band=(8, 8), stats=stats)[0]
    assert g["docids"] == ["d3", "d1", "d7", "d8"] and stats["short_groups"] == 1
    # the plain groups are unchanged without a band
    plain = build_groups(data, {"q": REC}, group_size=5, top_keep=2, seed=0)[0]
    assert plain["docids"][:2] == ["d3", "d1"] and len(plain["docids"]) == 5


def test_recipe_band_is_checked_and_neutral_to_the_stage_hash(tmp_path):
    from llmrank.recipe import load_recipe

    base = "name: t\ndata: {dataset: /tmp}\ndistill: {model: smollm2-135m%s}\n"
    p = tmp_path / "r.yaml"
    p.write_text(base % "")
    h0 = load_recipe(p).section_hash("data", "teacher", "distill")
    p.write_text(base % ", negative_band: [], negative_margin: 0.0")
    assert load_recipe(p).section_hash("data", "teacher", "distill") == h0  # defaults: finished runs stay valid
    p.write_text(base % ", negative_band: [4, 20]")
    assert load_recipe(p).section_hash("data", "teacher", "distill") != h0
    p.write_text(base % ", negative_band: [4]")
    with pytest.raises(LlmrankError, match="distill.negative_band"):
        load_recipe(p)
    p.write_text(base % ", negative_margin: -1")
    with pytest.raises(LlmrankError, match="distill.negative_margin"):
        load_recipe(p)
