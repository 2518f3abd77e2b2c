import numpy as np
import pytest
import torch

from robot_rl.rl.replay import ReplayBuffer, learner_discount
from robot_rl.rl.sac import SAC, SACConfig


def _bandit_batch(n=256, seed=0):
    """One-step problem: reward = -(a - 0.5)^2, terminal, so Q* is known."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    action = torch.rand(n, 2, generator=g) * 2 - 1
    reward = -((action - 0.5) ** 2).sum(-1)
    return {
        "obs": obs,
        "action": action,
        "reward": reward,
        "next_obs": obs,
        "discount": torch.zeros(n),
    }


def test_sac_learns_a_one_step_bandit():
    torch.manual_seed(0)
    sac = SAC(3, 2, SACConfig(hidden_dims=(64, 64), init_alpha=0.01, actor_lr=1e-3, critic_lr=1e-3))
    batch = _bandit_batch()
    first = sac.update(batch)["critic_loss"]
    for _ in range(400):
        sac.update(batch)
    assert sac.update(batch)["critic_loss"] < 0.2 * first
    action = sac.act(batch["obs"][:64], deterministic=True)
    assert action.shape == (64, 2)
    assert torch.allclose(action.mean(0), torch.tensor([0.5, 0.5]), atol=0.2)


def test_sac_rejects_bad_config_and_stops_on_nan():
    with pytest.raises(ValueError, match="n_critics"):
        SACConfig(n_critics=1)
    sac = SAC(3, 2, SACConfig(hidden_dims=(16,)))
    batch = _bandit_batch(8)
    batch["reward"][0] = float("nan")
    before = [p.clone() for p in sac.critic.parameters()]
    with pytest.raises(FloatingPointError, match="critic loss"):
        sac.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, sac.critic.parameters(), strict=False))


def test_replay_wraps_around_and_round_trips():
    buf = ReplayBuffer(obs_dim=2, act_dim=1, capacity=5)
    for i in range(7):
        buf.add([[i, i]], [[i]], [i], [[i, i]], [0.9])
    assert len(buf) == 5 and sorted(buf.reward.tolist()) == [2, 3, 4, 5, 6]
    other = ReplayBuffer(2, 1, 5)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.obs, buf.obs) and other.pos == buf.pos
    with pytest.raises(ValueError, match="NaN"):
        buf.add([[0, float("nan")]], [[0]], [0], [[0, 0]], [1])
    batch = buf.sample(4, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (4, 2) and batch["discount"].shape == (4,)


def test_learner_discount_ends_the_return_at_timeouts_unless_they_bootstrap():
    discount = np.array([0.9, 0.0, 0.81], np.float32)  # mid-episode, terminated, timed out
    timeout = np.array([False, False, True])
    np.testing.assert_allclose(learner_discount(discount, timeout, False), [0.9, 0.0, 0.0])
    np.testing.assert_allclose(learner_discount(discount, timeout, True), discount)
