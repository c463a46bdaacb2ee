"""Heapsort comparison counts: every pair asked at most once, ties to the first-stage order."""

from __future__ import annotations

import random

from llmrank.rerankers.pairwise import heap_top_k


def _ours(n, k, better):
    asked: list[tuple[int, int]] = []

    def best_of(group):
        best = 0
        for t in range(1, len(group)):
            a, b = group[t], group[best]
            if (min(a, b), max(a, b)) not in asked:
                asked.append((min(a, b), max(a, b)))
            if better(a, b):
                best = t
        return best

    return heap_top_k(n, k, 2, best_of), len(asked)


def _textbook(n, k, gt):
    """A plain max-heap heapsort that asks every comparison it makes (no memory of pairs)."""
    arr, calls = list(range(n)), [0]

    def greater(a, b):
        calls[0] += 1
        return gt(a, b)

    def heapify(size, i):
        largest, left, right = i, 2 * i + 1, 2 * i + 2
        if left < size and greater(arr[left], arr[i]):
            largest = left
        if right < size and greater(arr[right], arr[largest]):
            largest = right
        if largest != i:
            arr[i], arr[largest] = arr[largest], arr[i]
            heapify(size, largest)

    for i in range(n // 2, -1, -1):
        heapify(n, i)
    for ranked, i in enumerate(range(n - 1, 0, -1), 1):
        arr[i], arr[0] = arr[0], arr[i]
        if ranked == k:
            break
        heapify(i, 0)
    return arr[::-1][:k], calls[0]


def test_consistent_judge_asks_fewer_pairs_than_a_textbook_heap():
    rng = random.Random(0)
    ours_total = ref_total = 0
    for _ in range(50):
        rel = [rng.random() for _ in range(20)]
        top, ours = _ours(20, 10, lambda i, j: rel[i] > rel[j])
        ref_top, ref = _textbook(20, 10, lambda i, j: rel[i] > rel[j])
        assert top == ref_top == sorted(range(20), key=lambda i: -rel[i])[:10]
        assert ours <= ref
        ours_total, ref_total = ours_total + ours, ref_total + ref
    assert ours_total < ref_total


def test_all_ties_keep_the_first_stage_order():
    """A judge that can never tell (ties go to the earlier position): the first-stage order, 68 pairs; a heap
    that reads a tie as "not better" asks 37 and puts the last document second."""
    top, asked = _ours(20, 10, lambda i, j: i < j)
    assert top == list(range(10)) and asked == 68
    ref_top, calls = _textbook(20, 10, lambda i, j: False)
    assert calls == 37 and ref_top[:2] == [0, 19]
