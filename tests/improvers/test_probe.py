"""The critic probe branches the simulator at every noise choice of failed episodes."""

import numpy as np
import pytest
import torch
from toys import ToySteerable

from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.probe import _auc, probe_noise_critic
from robot_rl.rl.sac import SACConfig


def _learner():
    cfg = DSRLConfig(reward_type=None, sac=SACConfig(hidden_dims=(8,)))
    learner = DSRL(ToySteerable(), 4, cfg)
    with torch.no_grad():  # a mean noise of 0.85: ToyReach creeps to x ~0.75 and fails
        learner.sac.actor.trunk[-1].weight.zero_()
        learner.sac.actor.trunk[-1].bias.zero_()
        learner.sac.actor.trunk[-1].bias[:4].fill_(float(np.arctanh(0.85 / 1.5)))
    return learner


def test_auc_counts_pairs_and_ties():
    assert _auc(np.array([2.0, 3.0]), np.array([1.0])) == 1.0
    assert _auc(np.array([1.0]), np.array([1.0, 2.0])) == pytest.approx(0.25)


def test_probe_finds_winning_noises_the_failing_policy_passed_over(toy_task):
    learner = _learner()
    groups = probe_noise_critic(learner, toy_task, episodes=4, candidates=16, progress=False)
    result = groups["failed"]
    assert result.episodes == 4 and result.probed_choices >= 4
    assert groups["succeeded"].episodes == 0 and groups["succeeded"].critic_auc is None
    # one chunk of a large N(0, I) noise gets it over the line: some branch wins
    assert 0 < result.choices_with_a_winner <= 1 and 0 < result.candidate_success < 1
    assert result.q_chosen is not None and np.isfinite(result.q_chosen)
    assert result.critic_auc is None or 0 <= result.critic_auc <= 1
    # the policy is left as it was: deterministic setting restored
    assert learner.policy.deterministic is True
    with pytest.raises(ValueError, match="sample"):
        probe_noise_critic(learner, toy_task, sample="uniform")


def test_probe_reports_each_choice_index_and_local_neighbours(toy_task):
    learner = _learner()
    result = probe_noise_critic(learner, toy_task, episodes=3, candidates=6, progress=False)
    rows = result["failed"].by_choice
    assert [r["choice"] for r in rows] == list(range(len(rows)))
    assert sum(r["choices"] for r in rows) == result["failed"].probed_choices
    assert rows[0]["choices"] == 3  # every episode has a first choice
    # neighbours a hair away from a losing noise lose too
    near = probe_noise_critic(
        learner,
        toy_task,
        episodes=2,
        candidates=6,
        sample="local",
        local_scale=1e-4,
        progress=False,
    )["failed"]
    assert near.probed_choices > 0 and near.candidate_success == 0.0
    assert near.by_choice[0]["choices_with_a_winner"] == 0.0
    with pytest.raises(ValueError, match="local_scale"):
        probe_noise_critic(learner, toy_task, sample="local", local_scale=0.0)
