"""pass@k against hand-computed cases and brute force; votes from the same samples."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from ppl.app.metrics import Sample, aggregate, majority_vote, pass_at_k, problem_metrics, weighted_vote

INF = math.inf


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (6, 2, 3, 0.8),  # 1 - C(4,3)/C(6,3) = 1 - 4/20
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (5, 4, 2, 1.0),  # n - c < k: every 2-subset holds a right one
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_subset_average():
    for n in range(1, 8):
        for c in range(n + 1):
            right = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(right, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    n, c, k = 1000, 13, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("args", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_bad_input(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)


def test_votes_from_the_same_samples():
    samples = [
        Sample("7", 2.0, False),
        Sample("8", 0.0, True),
        Sample("8", 0.0, True),
        Sample("9", 1.5, False),
        Sample("8", -INF, True),  # dead: never votes, counts in n as wrong
    ]
    assert majority_vote(samples).answer == "8"
    # total weights: 7 -> e^2 = 7.39, 8 -> 2, 9 -> e^1.5 = 4.48
    assert weighted_vote(samples).answer == "7"
    m = problem_metrics(samples, ks=(1, 2, 5, 8))
    assert (m["best"], m["majority"], m["weighted_vote"]) == (False, True, False)
    assert (m["n"], m["c"], m["covered"]) == (5, 2, True)
    assert m["pass@1"] == pytest.approx(0.4)
    assert m["pass@2"] == pytest.approx(1 - 3 / 10)
    assert m["pass@5"] == 1.0 and "pass@8" not in m


def test_weighted_vote_sums_weights_and_answers_compare_as_json():
    samples = [Sample([1, 2], 0.0, True), Sample("x", math.log(1.5), False), Sample([1, 2], 0.0, True)]
    assert weighted_vote(samples).answer == [1, 2]  # 2 > 1.5
    assert majority_vote([Sample("a", 0, True), Sample("b", 0, False)]).answer == "a"  # first on ties


def test_all_dead_and_no_answer():
    dead = [Sample("1", -INF, True), Sample(None, 0.0, False)]
    m = problem_metrics(dead, ks=(1,))
    assert (m["best"], m["majority"], m["weighted_vote"], m["covered"], m["pass@1"]) == (
        False,
        False,
        False,
        False,
        0.0,
    )
    with pytest.raises(ValueError):
        problem_metrics([])


def test_aggregate():
    a = problem_metrics([Sample("1", 0, True), Sample("2", 0, False)], ks=(1, 2))
    b = problem_metrics([Sample("3", 0, False), Sample("3", 0, False)], ks=(1, 2))
    total = aggregate([a, b])
    assert total == {
        "problems": 2,
        "accuracy": 0.5,
        "majority": 0.5,
        "weighted_vote": 0.5,
        "coverage": 0.5,
        "pass@1": 0.25,
        "pass@2": 0.5,
    }
    with pytest.raises(ValueError):
        aggregate([])
