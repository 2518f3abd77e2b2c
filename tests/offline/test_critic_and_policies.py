import numpy as np
import pytest
import torch
from offline_helpers import toy_store
from toys import ToySteerable

from robot_rl.offline.config import ChunkCriticConfig, ExpoConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.data import build_chunk_data, sample_candidates
from robot_rl.offline.expo import ExpoLearner
from robot_rl.offline.policies import BestOfNPolicy, save_offline_policy
from robot_rl.offline.replay import OfflineBatches
from robot_rl.policies import load_policy


@pytest.fixture
def batches(tmp_path):
    data = build_chunk_data([toy_store(tmp_path / "s.zarr")], ToySteerable(), 0.9)
    cands = sample_candidates(ToySteerable(), data.frame_obs, 4, seed=0, progress=False)
    return OfflineBatches(data, cands)


@pytest.mark.parametrize(
    "backup,conservative", [("best_of_n", "calql"), ("best_of_n", "cql"), ("expectile", "none")]
)
def test_critic_updates_fit_the_targets(batches, backup, conservative):
    torch.manual_seed(0)
    cfg = ChunkCriticConfig(hidden_dims=(32, 32), backup=backup, conservative=conservative)
    critic = ChunkCritic(batches.data.obs_dim, batches.data.chunk_dim, cfg)
    critic.fit_obs_normalization(batches.data.frame_obs)
    batch = batches.batch(torch.arange(len(batches)))
    first = critic.update(batch)
    for _ in range(60):
        last = critic.update(batch)
    assert last["td_loss"] < first["td_loss"]
    assert critic.updates == 61
    if conservative != "none":
        assert "cql_gap" in last
    if backup == "expectile":
        assert "value_loss" in last
    q = critic.q(batch["obs"], batch["action"])
    assert q.shape == (cfg.n_heads, len(batches)) and torch.isfinite(q).all()


def test_calql_does_not_push_base_samples_below_the_monte_carlo_return(batches):
    cfg = ChunkCriticConfig(hidden_dims=(8,), conservative="calql", cql_temperature=1.0)
    critic = ChunkCritic(batches.data.obs_dim, batches.data.chunk_dim, cfg)
    batch = batches.batch(torch.arange(4))
    high = {**batch, "mc_return": torch.full((4,), 100.0)}
    q_data = critic.q(batch["obs"], batch["action"])
    gap = critic._conservative_gap(batch["obs"], batch["candidates"], high["mc_return"], q_data)
    # every base sample's value is lifted to 100, so the push-down term is about 100 + log K
    assert gap.item() / cfg.n_heads > 99


def test_the_cache_must_match_the_data(batches):
    with pytest.raises(ValueError, match="cached base samples have shape"):
        OfflineBatches(batches.data, batches.candidates[:3])


def test_best_of_n_acts_with_the_highest_q_chunk():
    base = ToySteerable(bias=0.0)
    critic = ChunkCritic(4, 2, ChunkCriticConfig(hidden_dims=(8,))).q
    with torch.no_grad():  # Q = sum of the executed actions: prefers the largest chunk
        for head in critic.heads:
            for layer in head:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.zero_()
                    layer.bias.zero_()
            head[0].weight[0, 4:] = 1.0
            head[-1].weight[0, 0] = 1.0
    policy = BestOfNPolicy(base, critic, n=16)
    obs = {"state": np.zeros((3, 2, 2), np.float32)}
    policy.rng = np.random.default_rng(5)
    chunks, scores = policy.candidates(obs)
    assert chunks.shape == (3, 16, 4, 1) and scores.shape == (3, 16)
    policy.rng = np.random.default_rng(5)
    chosen = policy.predict_chunk(obs)
    best = chunks[:, :, :2, 0].sum(-1).argmax(axis=1)
    np.testing.assert_array_equal(chosen, chunks[np.arange(3), best])
    assert policy.act(obs).shape == (3, 2, 1)
    noise = np.zeros((3, 16, 4, 1))
    fixed, _ = policy.candidates(obs, noise)
    np.testing.assert_array_equal(fixed, policy.candidates(obs, noise)[0])


def test_expo_edits_stay_within_the_scale_and_raise_q(batches):
    torch.manual_seed(0)
    cfg = ChunkCriticConfig(hidden_dims=(32, 32), conservative="none")
    critic = ChunkCritic(batches.data.obs_dim, batches.data.chunk_dim, cfg)
    critic.fit_obs_normalization(batches.data.frame_obs)
    learner = ExpoLearner(critic, ExpoConfig(edit_scale=0.2, hidden_dims=(16,), lr=3e-3))
    batch = batches.batch(torch.arange(len(batches)))
    for _ in range(30):
        learner.update(batch)
    edited = learner.edited(batch["obs"], batch["candidates"], deterministic=True)
    assert (edited - batch["candidates"]).abs().max() <= 0.2 + 1e-6
    # under the critic as it now is, the edits score above the base chunks they edit
    b, k, c = edited.shape
    obs = batch["obs"].repeat_interleave(k, 0)
    with torch.no_grad():
        q_edit = critic.q(obs, edited.reshape(b * k, c)).mean()
        q_base = critic.q(obs, batch["candidates"].reshape(b * k, c)).mean()
    assert q_edit > q_base


def test_offline_policies_save_with_their_base_and_reload(tmp_path, batches):
    from tests_offline_base import tiny_diffusion_base

    base, base_dir = tiny_diffusion_base(tmp_path)
    with pytest.raises(ValueError, match="critic scores 4-d chunks.*2 actions of 1"):
        BestOfNPolicy(base, ChunkCritic(4, 4, ChunkCriticConfig(hidden_dims=(8,))).q)
    critic = ChunkCritic(4, 2, ChunkCriticConfig(hidden_dims=(8,))).q
    policy = BestOfNPolicy(base, critic, n=4)
    folder = save_offline_policy(policy, tmp_path / "bon", base_dir)
    again = load_policy(folder)
    assert isinstance(again, BestOfNPolicy) and again.n == 4
    obs = {"state": np.random.default_rng(0).normal(size=(2, 2, 2)).astype(np.float32)}
    noise = np.random.default_rng(1).normal(size=(2, 4, *base.noise_shape))
    np.testing.assert_allclose(again.candidates(obs, noise)[1], policy.candidates(obs, noise)[1])
    assert not list(tmp_path.glob(".*partial"))


def test_best_of_n_can_sample_with_fewer_denoising_steps(tmp_path):
    from tests_offline_base import tiny_diffusion_base

    base, base_dir = tiny_diffusion_base(tmp_path)
    critic = ChunkCritic(4, 2, ChunkCriticConfig(hidden_dims=(8,))).q
    fast = BestOfNPolicy(base, critic, n=4, inference_steps=1)
    assert fast.sampler.config.num_inference_steps == 1 and base.config.num_inference_steps == 3
    obs = {"state": np.zeros((1, 2, 2), np.float32)}
    noise = np.random.default_rng(1).normal(size=(1, 4, *base.noise_shape))
    slow_chunks = BestOfNPolicy(base, critic, n=4).candidates(obs, noise)[0]
    assert not np.allclose(fast.candidates(obs, noise)[0], slow_chunks)
    again = load_policy(save_offline_policy(fast, tmp_path / "fast", base_dir))
    assert again.sampler.config.num_inference_steps == 1
    with pytest.raises(TypeError, match="needs a DiffusionPolicy base"):
        BestOfNPolicy(ToySteerable(), critic, n=2, inference_steps=1)
