"""Queries on weighted particles, checked on hand-made posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ppl import Diagnostics, Posterior, WeightedParticle


def posterior(values, log_weights):
    particles = [
        WeightedParticle(v, w, [], "finished" if w > -math.inf else "dead")
        for v, w in zip(values, log_weights)
    ]
    return Posterior(particles, None, Diagnostics("hand", len(values)))


def test_best_majority_and_weighted_vote_differ_as_they_should():
    post = posterior(["7", "7", "7", "9"], [0.0, 0.0, 0.0, math.log(10)])
    assert post.best() == "9"
    assert post.majority() == "7"
    assert post.weighted_vote() == "9"
    assert post.distribution() == pytest.approx({"9": 10 / 13, "7": 3 / 13})


def test_queries_use_the_answer_key_and_ignore_dead_particles():
    post = posterior(["x=1", "y=1", "z=2", "dead"], [0.0, 0.5, 0.2, -math.inf])
    answer = lambda text: text[-1]  # noqa: E731
    assert post.majority(answer) == "1"
    assert post.distribution(answer)["1"] == pytest.approx(
        (1 + math.exp(0.5)) / (1 + math.exp(0.5) + math.exp(0.2))
    )
    assert "dead" not in post.distribution()
    assert post.expectation(lambda v: 1.0) == pytest.approx(1.0)


def test_sampling_is_proportional_to_weight_and_seeded():
    post = posterior(["a", "b", "c"], [math.log(0.7), math.log(0.3), -math.inf])
    draws = post.sample(5000, seed=1)
    assert draws == post.sample(5000, seed=1)
    assert "c" not in draws
    assert draws.count("a") / 5000 == pytest.approx(0.7, abs=0.03)


def test_weights_are_normalised_in_log_space():
    post = posterior(["a", "b"], [1000.0, 1000.0 + math.log(3)])
    np.testing.assert_allclose(post.weights, [0.25, 0.75])
    assert "Posterior hand" in repr(post)
