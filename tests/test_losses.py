"""Tests for llmrank.losses: hand-computed values, gradients, invariances, masking and registry errors.

Running example (one query, four documents d0..d3):

    student s = [1, 2, 0, -1]
    teacher t = [3, 1, 2, 0]      -> teacher order d0, d2, d1, d3; ranks r = [0, 2, 1, 3]
    labels  y = [0, 2, 1, 0]      -> gold documents d1, d2

Expected values are written out with plain ``math`` so they do not share code with the implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from llmrank.losses import (
    LOSSES,
    CombinedLoss,
    ContrastivePartialRankingLoss,
    GradedBCELoss,
    LabelCrossEntropyLoss,
    ListMLELoss,
    ListNetLoss,
    MarginMSELoss,
    PLDLoss,
    RankNetLoss,
    build_loss,
)

e = math.exp
log = math.log

S = [1.0, 2.0, 0.0, -1.0]
T = [3.0, 1.0, 2.0, 0.0]
R = [0, 2, 1, 3]
Y = [0.0, 2.0, 1.0, 0.0]


def softplus(x: float) -> float:
    return log(1.0 + e(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + e(-x))


def bce(logit: float, target: float) -> float:
    return -(target * log(sigmoid(logit)) + (1.0 - target) * log(1.0 - sigmoid(logit)))


def row(values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([values], dtype=dtype)


def inputs(**overrides: Any) -> dict[str, torch.Tensor]:
    """The running example as loss kwargs (float64)."""
    base = {"teacher_scores": row(T), "teacher_ranks": torch.tensor([R]), "labels": row(Y)}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


# ---- hand-computed values ------------------------------------------------------------------------------


def hand_ranknet() -> float:
    # teacher-preferred pairs (i over j): (0,2) (0,1) (0,3) (2,1) (2,3) (1,3); loss log(1 + exp(-(s_i - s_j)))
    # s_i - s_j:                           1     -1    2     -2    1     3
    return (softplus(-1) + softplus(1) + softplus(-2) + softplus(2) + softplus(-1) + softplus(-3)) / 6


def hand_margin_mse() -> float:
    # teacher top = d0. student margins s0 - s_j (j = 1, 2, 3): 1-2 = -1, 1-0 = 1, 1-(-1) = 2
    #                   teacher margins t0 - t_j:               3-1 = 2,  3-2 = 1, 3-0 = 3
    return ((-1 - 2) ** 2 + (1 - 1) ** 2 + (2 - 3) ** 2) / 3  # = (9 + 0 + 1) / 3


def hand_listnet(temperature: float = 1.0) -> float:
    ts = [x / temperature for x in T]
    ss = [x / temperature for x in S]
    zt = e(ts[0]) + e(ts[1]) + e(ts[2]) + e(ts[3])
    zs = e(ss[0]) + e(ss[1]) + e(ss[2]) + e(ss[3])
    pt = [e(x) / zt for x in ts]
    ps = [e(x) / zs for x in ss]
    return (
        pt[0] * log(pt[0] / ps[0])
        + pt[1] * log(pt[1] / ps[1])
        + pt[2] * log(pt[2] / ps[2])
        + pt[3] * log(pt[3] / ps[3])
    )


def hand_listmle_steps() -> list[float]:
    # teacher order d0, d2, d1, d3 -> student scores in that order 1, 0, 2, -1
    return [
        -(1 - log(e(1) + e(0) + e(2) + e(-1))),
        -(0 - log(e(0) + e(2) + e(-1))),
        -(2 - log(e(2) + e(-1))),
        -(-1 - log(e(-1))),  # = 0
    ]


def hand_listmle() -> float:
    return sum(hand_listmle_steps())


def hand_pld_teacher_weights() -> float:
    # teacher scores in teacher order 3, 2, 1, 0; weight = teacher PL probability of the choice at each step
    w = [e(3) / (e(3) + e(2) + e(1) + e(0)), e(2) / (e(2) + e(1) + e(0)), e(1) / (e(1) + e(0)), 1.0]
    nll = hand_listmle_steps()
    return w[0] * nll[0] + w[1] * nll[1] + w[2] * nll[2] + w[3] * nll[3]


def hand_pld_position_weights() -> float:
    nll = hand_listmle_steps()
    return nll[0] / 1 + nll[1] / 2 + nll[2] / 3 + nll[3] / 4


def hand_pld_gold_first() -> float:
    # gold d1, d2 first in teacher order (d2 before d1), then d0, d3: target d2, d1, d0, d3
    # student in target order 0, 2, 1, -1; teacher in target order 2, 1, 3, 0
    w = [e(2) / (e(2) + e(1) + e(3) + e(0)), e(1) / (e(1) + e(3) + e(0)), e(3) / (e(3) + e(0)), 1.0]
    nll = [
        -(0 - log(e(0) + e(2) + e(1) + e(-1))),
        -(2 - log(e(2) + e(1) + e(-1))),
        -(1 - log(e(1) + e(-1))),
        0.0,
    ]
    return w[0] * nll[0] + w[1] * nll[1] + w[2] * nll[2] + w[3] * nll[3]


def hand_cprd(easy_weight: float = 1.0) -> float:
    # k_hard = 2: hard = teacher top d0, d2 (student 1, 0); easy = d1, d3 (student 2, -1)
    hard = -(1 - log(e(1) + e(0)))  # + last step, log 1 = 0
    easy_sum = e(2) + e(-1)
    easy = (-log(e(1) / (e(1) + easy_sum)) - log(e(0) / (e(0) + easy_sum))) / 2
    return hard + easy_weight * easy


def hand_bce_teacher() -> float:
    return (bce(1, sigmoid(3)) + bce(2, sigmoid(1)) + bce(0, sigmoid(2)) + bce(-1, sigmoid(0))) / 4


def hand_bce_prob() -> float:
    return (bce(1, 0.9) + bce(2, 0.2) + bce(0, 0.6) + bce(-1, 0.1)) / 4


def hand_bce_labels() -> float:
    # labels / max_grade(2) = 0, 1, 0.5, 0
    return (bce(1, 0.0) + bce(2, 1.0) + bce(0, 0.5) + bce(-1, 0.0)) / 4


def hand_label_ce() -> float:
    z = e(1) + e(2) + e(0) + e(-1)
    return -(log(e(2) / z) + log(e(0) / z)) / 2  # positives d1, d2


HAND_CASES: list[tuple[str, Callable[[], torch.nn.Module], dict[str, Any], Callable[[], float]]] = [
    ("ranknet/scores", RankNetLoss, inputs(teacher_ranks=None), hand_ranknet),
    ("ranknet/ranks", RankNetLoss, inputs(teacher_scores=None), hand_ranknet),
    ("margin_mse", MarginMSELoss, inputs(), hand_margin_mse),
    ("listnet", ListNetLoss, inputs(), hand_listnet),
    ("listnet/T=2", lambda: ListNetLoss(temperature=2.0), inputs(), lambda: hand_listnet(2.0)),
    ("listmle/scores", ListMLELoss, inputs(teacher_ranks=None), hand_listmle),
    ("listmle/ranks", ListMLELoss, inputs(teacher_scores=None), hand_listmle),
    ("pld/teacher", PLDLoss, inputs(labels=None), hand_pld_teacher_weights),
    ("pld/positions", PLDLoss, inputs(teacher_scores=None, labels=None), hand_pld_position_weights),
    ("pld/gold_first", PLDLoss, inputs(), hand_pld_gold_first),
    ("cprd", lambda: ContrastivePartialRankingLoss(k_hard=2), inputs(), hand_cprd),
    ("cprd/w=0.5", lambda: ContrastivePartialRankingLoss(k_hard=2, easy_weight=0.5), inputs(), lambda: hand_cprd(0.5)),
    ("bce/teacher", GradedBCELoss, inputs(), hand_bce_teacher),
    (
        "bce/prob",
        lambda: GradedBCELoss(teacher_is_prob=True),
        inputs(teacher_scores=row([0.9, 0.2, 0.6, 0.1])),
        hand_bce_prob,
    ),
    (
        "bce/labels",
        lambda: GradedBCELoss(max_grade=2),
        inputs(teacher_scores=None, teacher_ranks=None),
        hand_bce_labels,
    ),
    ("label_ce", LabelCrossEntropyLoss, inputs(), hand_label_ce),
    (
        "combined",
        lambda: CombinedLoss({"listnet": 1.0, "label_ce": 0.5, "bce_labels": 0.25}, {"bce_labels": {"max_grade": 2}}),
        inputs(),
        lambda: hand_listnet() + 0.5 * hand_label_ce() + 0.25 * hand_bce_labels(),
    ),
]


@pytest.mark.parametrize(("make", "kwargs", "expected"), [c[1:] for c in HAND_CASES], ids=[c[0] for c in HAND_CASES])
def test_matches_hand_computation(
    make: Callable[[], torch.nn.Module], kwargs: dict[str, Any], expected: Callable[[], float]
) -> None:
    value = make()(row(S), **kwargs)
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected(), rel=1e-9, abs=1e-12)


def test_cprd_with_k_hard_covering_everything_is_listmle() -> None:
    assert ContrastivePartialRankingLoss(k_hard=4)(row(S), **inputs()).item() == pytest.approx(hand_listmle())


# ---- per-loss configurations used by the generic tests ---------------------------------------------------

CONFIGS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[str, ...]]] = {
    # name: (factory, inputs it is given)
    "ranknet": (RankNetLoss, ("teacher_scores",)),
    "ranknet_ranks": (RankNetLoss, ("teacher_ranks",)),
    "margin_mse": (MarginMSELoss, ("teacher_scores",)),
    "listnet": (ListNetLoss, ("teacher_scores",)),
    "listmle": (ListMLELoss, ("teacher_ranks",)),
    "pld": (PLDLoss, ("teacher_scores", "labels")),
    "pld_ranks": (PLDLoss, ("teacher_ranks",)),
    "cprd": (lambda: ContrastivePartialRankingLoss(k_hard=2), ("teacher_scores",)),
    "bce": (GradedBCELoss, ("teacher_scores",)),
    "bce_labels": (lambda: GradedBCELoss(max_grade=2), ("labels",)),
    "label_ce": (LabelCrossEntropyLoss, ("labels",)),
    "combined": (lambda: build_loss("combined", weights={"pld": 1.0, "label_ce": 0.5}), ("teacher_scores", "labels")),
}


def batch(queries: list[dict[str, list[float]]], width: int) -> dict[str, torch.Tensor]:
    """Stack queries (dicts with student "s", teacher "t", labels "y") into [B, width] tensors.

    Padding slots hold junk (large scores, teacher rank 0, label 5) and sit in every other slot, then at the
    end, so a loss that looked at them, or assumed padding is trailing, would give a different value.
    """
    rows: dict[str, list[list[float]]] = {"s": [], "t": [], "r": [], "y": [], "m": []}
    for query in queries:
        n = len(query["s"])
        by_teacher = sorted(range(n), key=lambda i: -query["t"][i])
        ranks = [float(by_teacher.index(i)) for i in range(n)]
        real: dict[str, list[float]] = {"s": query["s"], "t": query["t"], "r": ranks, "y": query["y"]}
        row_values: dict[str, list[float]] = {key: [] for key in rows}
        i = 0
        for k in range(width):
            is_real = i < n and (k % 2 == 0 or k - i >= width - n)
            junk = {"s": 50.0 + 7 * k, "t": 99.0 - 3 * k, "r": 0.0, "y": 5.0}
            for key in ("s", "t", "r", "y"):
                row_values[key].append(real[key][i] if is_real else junk[key])
            row_values["m"].append(is_real)
            i += is_real
        for key, values in row_values.items():
            rows[key].append(values)
    return {
        "student": torch.tensor(rows["s"], dtype=torch.float64),
        "teacher_scores": torch.tensor(rows["t"], dtype=torch.float64),
        "teacher_ranks": torch.tensor(rows["r"], dtype=torch.long),
        "labels": torch.tensor(rows["y"], dtype=torch.float64),
        "mask": torch.tensor(rows["m"]),
    }


def call(name: str, data: dict[str, torch.Tensor], student: torch.Tensor | None = None) -> torch.Tensor:
    make, given = CONFIGS[name]
    kwargs = {key: data[key] for key in given}
    return make()(data["student"] if student is None else student, mask=data.get("mask"), **kwargs)


QUERY_A = {"s": S, "t": T, "y": Y}
QUERY_B = {"s": [0.3, -0.7, 1.1], "t": [-1.0, 0.5, 2.0], "y": [1.0, 0.0, 0.0]}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_padding_with_masked_junk_changes_nothing(name: str) -> None:
    plain = call(name, batch([QUERY_A], 4))
    padded = call(name, batch([QUERY_A], 7))
    assert batch([QUERY_A], 7)["mask"].tolist() != [[True] * 4 + [False] * 3]  # junk is interleaved
    assert padded.item() == pytest.approx(plain.item(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_nan_junk_in_padding_is_ignored(name: str) -> None:
    data = batch([QUERY_A], 6)
    pad = ~data["mask"]
    for key in ("student", "teacher_scores", "labels"):
        data[key] = data[key].masked_fill(pad, float("nan"))
    student = data["student"].clone().requires_grad_(True)
    value = call(name, data, student)
    (grad,) = torch.autograd.grad(value, student)
    assert value.item() == pytest.approx(call(name, batch([QUERY_A], 4)).item())
    assert torch.isfinite(grad).all() and (grad[pad] == 0).all()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_batch_is_mean_of_single_queries(name: str) -> None:
    single_a = call(name, batch([QUERY_A], 4))
    single_b = call(name, batch([QUERY_B], 3))
    both = call(name, batch([QUERY_A, QUERY_B], 5))
    assert both.item() == pytest.approx((single_a.item() + single_b.item()) / 2, rel=1e-12)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradcheck_wrt_student_scores(name: str) -> None:
    data = batch([QUERY_A, QUERY_B], 5)
    student = data["student"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: call(name, data, x), (student,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["ranknet", "ranknet_ranks", "listnet", "listmle", "pld", "pld_ranks", "cprd", "margin_mse"]
)
def test_student_in_teacher_order_beats_reversed(name: str) -> None:
    data = batch([QUERY_A, QUERY_B], 4)
    teacher = data["teacher_scores"]
    aligned = call(name, data, teacher.clone())
    reversed_ = call(name, data, -teacher)
    assert aligned.item() < reversed_.item()


def test_margin_mse_is_shift_invariant() -> None:
    loss = MarginMSELoss()
    base = loss(row(S), teacher_scores=row(T))
    assert loss(row(S) + 3.7, teacher_scores=row(T)).item() == pytest.approx(base.item(), rel=1e-12)
    assert loss(row(S), teacher_scores=row(T) - 11.0).item() == pytest.approx(base.item(), rel=1e-12)
    # per-query shifts too
    shifts = torch.tensor([[2.0], [-5.0]], dtype=torch.float64)
    data = batch([QUERY_A, QUERY_B], 4)
    kwargs = {"teacher_scores": data["teacher_scores"], "mask": data["mask"]}
    assert loss(data["student"] + shifts, **kwargs).item() == pytest.approx(loss(data["student"], **kwargs).item())


def test_listnet_is_invariant_to_teacher_shift() -> None:
    loss = ListNetLoss(temperature=1.5)
    base = loss(row(S), teacher_scores=row(T))
    assert loss(row(S), teacher_scores=row(T) + 42.0).item() == pytest.approx(base.item(), rel=1e-12)
    assert loss(row(T), teacher_scores=row(T) - 5.0).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_is_an_alias_of_listnet() -> None:
    assert LOSSES["kl"] is ListNetLoss
    assert isinstance(build_loss("kl", temperature=2.0), ListNetLoss)


def test_pld_weights_carry_no_gradient_from_teacher() -> None:
    student, teacher = row(S).requires_grad_(True), row(T).requires_grad_(True)
    PLDLoss()(student, teacher_scores=teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_build_loss_combined_with_per_term_kwargs() -> None:
    loss = build_loss("combined", weights={"listnet": 1.0, "label_ce": 0.5}, listnet={"temperature": 2.0})
    assert isinstance(loss, CombinedLoss)
    value = loss(row(S), **inputs())
    assert value.item() == pytest.approx(hand_listnet(2.0) + 0.5 * hand_label_ce())


def test_combined_labels_only_term_does_not_see_the_teacher() -> None:
    loss = CombinedLoss({"bce_labels": 1.0}, {"bce_labels": {"max_grade": 2}})
    assert loss(row(S), **inputs()).item() == pytest.approx(hand_bce_labels())


def test_unknown_loss_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'lambdarank'.*listnet.*ranknet"):
        build_loss("lambdarank")
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("combined", weights={"nope": 1.0})
    with pytest.raises(ValueError, match="listnet: bad arguments"):
        build_loss("listnet", temprature=2.0)
    with pytest.raises(ValueError, match="not terms"):
        build_loss("combined", weights={"listnet": 1.0}, listmle={})


@pytest.mark.parametrize(
    ("loss", "kwargs", "message"),
    [
        (ListNetLoss(), {"teacher_ranks": torch.tensor([R])}, "listnet: needs teacher_scores"),
        (MarginMSELoss(), {"teacher_ranks": torch.tensor([R])}, "margin_mse: needs teacher_scores"),
        (RankNetLoss(), {"labels": row(Y)}, "ranknet: needs teacher_scores or teacher_ranks"),
        (ListMLELoss(), {}, "listmle: needs teacher_scores or teacher_ranks"),
        (PLDLoss(), {"labels": row(Y)}, "pld: needs teacher_scores or teacher_ranks"),
        (ContrastivePartialRankingLoss(), {}, "cprd: needs teacher_scores or teacher_ranks"),
        (GradedBCELoss(), {"teacher_ranks": torch.tensor([R])}, "bce: needs teacher_scores or labels"),
        (LabelCrossEntropyLoss(), {"teacher_scores": row(T)}, "label_ce: needs labels"),
        (GradedBCELoss(teacher_is_prob=True), {"teacher_scores": row(T)}, "outside \\[0, 1\\]"),
        (ListNetLoss(), {"teacher_scores": row(T[:3])}, "teacher_scores must have the shape"),
    ],
)
def test_missing_or_bad_input_raises_clear_value_error(loss: torch.nn.Module, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loss(row(S), **kwargs)


def test_queries_without_terms_are_skipped() -> None:
    # the second query has no positive label: label_ce is the first query's loss alone
    labels = torch.tensor([Y, [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([S, [5.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    assert LabelCrossEntropyLoss()(student, labels=labels).item() == pytest.approx(hand_label_ce())
