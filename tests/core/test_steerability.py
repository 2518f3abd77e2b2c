"""Steerability measurements: fixed-noise outcomes, coverage, the held-out selector."""

import numpy as np
import pytest
from toys import ToySteerable, toy_task_config

from robot_rl.eval.steerability import (
    FixedNoiseOutcomes,
    fixed_noise_outcomes,
    perturbation_agreement,
    run_fixed_noises,
    selector_success,
)


def test_fixed_noises_win_or_lose_by_their_noise_on_every_start():
    # ToyReach moves by 0.25 * tanh(noise - 0.6) per step: +1.5 everywhere reaches x >= 1 in
    # 12 steps from any start, -1 walks away
    noises = np.stack([np.full((4, 1), 1.5), np.full((4, 1), -1.0)]).astype(np.float32)
    outcomes = fixed_noise_outcomes(ToySteerable(), toy_task_config(), noises, 5, 0, False)
    assert outcomes.success.shape == (5, 2) and outcomes.states.shape == (5, 4)
    assert outcomes.success[:, 0].all() and not outcomes.success[:, 1].any()
    assert outcomes.coverage == 1.0 and outcomes.greedy_cover(3) == [1.0, 1.0]
    assert len(np.unique(outcomes.states[:, 0])) == 5  # five different starts
    with pytest.raises(ValueError, match="one each"):
        run_fixed_noises(ToySteerable(), toy_task_config(), noises, [{"seed": 0}])
    # ToyReach ignores the start_perturbation option: the roughness check refuses to report 1
    with pytest.raises(ValueError, match="ignores reset"):
        perturbation_agreement(ToySteerable(), toy_task_config(), noises, 1, 0, 0.01, 0.1, 2, False)


def test_greedy_cover_adds_the_noise_that_wins_most_new_starts():
    success = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    outcomes = FixedNoiseOutcomes(success, np.zeros((5, 1), np.float32))
    assert outcomes.coverage == 0.8
    assert outcomes.greedy_cover(3) == [0.4, 0.8, 0.8]  # noise 0 or 2 first, then the other


def test_selector_learns_which_noise_wins_where():
    # noise k wins exactly where the start's first coordinate falls in the k-th quarter
    rng = np.random.default_rng(0)
    states = rng.uniform(0, 1, size=(500, 3)).astype(np.float32)
    success = np.eye(4, dtype=bool)[np.minimum((states[:, 0] * 4).astype(int), 3)]
    outcomes = FixedNoiseOutcomes(success, states)
    rows = selector_success(outcomes, [10, 400], test_starts=100, steps=300, hidden=64)
    assert [r["labelled_episodes"] for r in rows] == [40, 1600]
    assert rows[1]["success"] >= 0.9 and rows[1]["success"] > rows[0]["success"]
    with pytest.raises(ValueError, match="held-out starts"):
        selector_success(outcomes, [450], test_starts=100)
