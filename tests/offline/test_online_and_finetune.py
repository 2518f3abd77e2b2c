import numpy as np
import pytest
import torch
from offline_helpers import toy_store
from tests_offline_base import tiny_diffusion_base
from toys import ToySteerable

from robot_rl.offline.config import ChunkCriticConfig, OnlineConfig, QWeightedConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.data import build_chunk_data, sample_candidates
from robot_rl.offline.online import train_online
from robot_rl.offline.policies import BestOfNPolicy
from robot_rl.offline.qweighted import advantage_weights, q_weighted_finetune
from robot_rl.offline.replay import OfflineBatches


def _offline(tmp_path, base):
    data = build_chunk_data([toy_store(tmp_path / "s.zarr")], base, 0.9)
    cands = sample_candidates(base, data.frame_obs, 3, seed=0, progress=False)
    critic = ChunkCritic(
        data.obs_dim, data.chunk_dim, ChunkCriticConfig(hidden_dims=(16,), batch_size=8)
    )
    critic.fit_obs_normalization(data.frame_obs)
    return data, cands, critic


@pytest.mark.parametrize("mode", ["retain", "wsrl"])
def test_online_fine_tuning_collects_updates_evaluates_and_resumes(tmp_path, toy_task, mode):
    base = ToySteerable()
    data, cands, critic = _offline(tmp_path, base)
    policy = BestOfNPolicy(base, critic.q, n=4)
    cfg = OnlineConfig(
        env_steps=24, mode=mode, warmup_env_steps=8, n_envs=2, utd_ratio=1, eval_every=12
    )
    kwargs = dict(reward=None, eval_episodes=2, out=tmp_path / "run", progress=False)
    history = train_online(critic, policy, OfflineBatches(data, cands), toy_task, cfg, 3, **kwargs)
    assert history.env_steps[-1] >= 24 and len(history.success) == 2
    assert history.updates > 0 and critic.updates == history.updates
    assert (tmp_path / "run" / "online_checkpoint" / "state.safetensors").is_file()
    # resuming a finished run does no more work and keeps the history
    longer = OnlineConfig(**{**cfg.__dict__, "env_steps": 30})
    again = train_online(critic, policy, OfflineBatches(data, cands), toy_task, longer, 3, **kwargs)
    assert again.env_steps[:2] == history.env_steps and again.env_steps[-1] >= 30


def test_q_weighted_fine_tuning_moves_the_denoiser_and_keeps_the_base(tmp_path):
    base, _ = tiny_diffusion_base(tmp_path)
    data, cands, critic = _offline(tmp_path, base)
    cfg = QWeightedConfig(steps=3, batch_size=8, temperature=0.1, max_weight=5.0)
    weights, adv = advantage_weights(critic, data, cands, cfg)
    assert weights.shape == (len(data),) and weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert weights.max() <= 5.0 / np.exp(adv / 0.1).clip(max=5.0).mean() + 1e-4
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned, history = q_weighted_finetune(base, data, weights, cfg, progress=False)
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the copy was trained
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # base untouched
    obs = {"state": np.zeros((2, 2, 2), np.float32)}
    assert tuned.predict_chunk(obs).shape == (2, 4, 1)


def test_q_weighted_needs_a_diffusion_base(tmp_path):
    data, cands, critic = _offline(tmp_path, ToySteerable())
    with pytest.raises(TypeError, match="leave q_weighted out"):
        q_weighted_finetune(ToySteerable(), data, np.ones(len(data)), QWeightedConfig())
