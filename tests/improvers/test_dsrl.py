import json

import numpy as np
import pytest
import torch
from toys import ToySteerable

from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import train_dsrl
from robot_rl.improvers.steered import SteeredPolicy, save_steered, steered_with_base
from robot_rl.rl.networks import TanhGaussianActor
from robot_rl.rl.sac import SACConfig

OBS_DIM = 2 * 2  # To=2 history of the toy's 2-d state


def _cfg(variant, **kw):
    sac = SACConfig(hidden_dims=(32, 32), batch_size=32)
    base = dict(
        variant=variant,
        reward_type=None,
        env_steps=240,
        warmup_env_steps=60,
        n_envs=2,
        eval_every=120,
        eval_episodes=4,
        sac=sac,
    )
    return DSRLConfig(**{**base, **kw})


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="noise_bound must be > 0"):
        DSRLConfig(noise_bound=0.0)
    with pytest.raises(ValueError, match="variant"):
        DSRLConfig(variant="ppo")
    with pytest.raises(ValueError, match="na_bootstrap"):
        DSRLConfig(variant="na", na_bootstrap="value")


@pytest.mark.parametrize(("bootstrap", "denoised_batches"), [("action", 2), ("noise", 1)])
def test_na_bootstraps_from_the_action_or_the_distilled_noise_critic(bootstrap, denoised_batches):
    base = ToySteerable()
    calls = []
    predict = base.predict_chunk
    base.predict_chunk = lambda obs, noise=None: calls.append(len(noise)) or predict(obs, noise)
    learner = DSRL(base, OBS_DIM, _cfg("na", na_bootstrap=bootstrap, distill_batch=8))
    n = 16
    batch = {
        "obs": torch.randn(n, OBS_DIM),
        "next_obs": torch.randn(n, OBS_DIM),
        "reward": torch.zeros(n),
        "discount": torch.full((n,), 0.9),
        "action": torch.rand(n, learner.noise_dim + learner.chunk_dim) * 2 - 1,
    }
    metrics = learner.update(batch)
    # the distillation always denoises its 8 noises; the 'action' target also the next chunks
    assert sorted(calls) == sorted([8, n][:denoised_batches])
    assert np.isfinite(metrics["action_critic_loss"]) and np.isfinite(metrics["critic_loss"])


def test_steering_needs_a_steerable_base():

    class NotSteerable:
        pass

    with pytest.raises(TypeError, match="not steerable"):
        SteeredPolicy(NotSteerable(), TanhGaussianActor(4, 4, (8,)), 1.5)


def test_steered_policy_respects_bound_and_is_deterministic_given_latent():
    actor = TanhGaussianActor(OBS_DIM, 4, (16,))
    with torch.no_grad():
        actor.trunk[-1].bias.fill_(50.0)  # saturate: the bound must still hold
    policy = SteeredPolicy(ToySteerable(), actor, noise_bound=1.5)
    obs = {"state": np.zeros((3, 2, 2), np.float32)}
    with torch.no_grad():
        actor.trunk[-1].bias[4:].fill_(0.0)  # log-std: a wide policy, so samples differ
        actor.trunk[-1].bias[:4].fill_(0.0)
    assert not np.array_equal(policy.base_noise(obs), policy.base_noise(obs))  # z ~ N(0, I)
    policy.deterministic = True
    np.testing.assert_array_equal(policy.base_noise(obs), policy.base_noise(obs))
    with torch.no_grad():
        actor.trunk[-1].bias.fill_(50.0)
    w = policy.base_noise(obs)
    assert w.shape == (3, 4, 1) and np.all(np.abs(w) <= 1.5 + 1e-6)
    z = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(policy.predict_chunk(obs, z), policy.predict_chunk(obs, z))
    assert policy.act(obs).shape == (3, 2, 1)


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_dsrl_runs_updates_and_checkpoints(variant, toy_task, tmp_path):
    learner = DSRL(ToySteerable(), OBS_DIM, _cfg(variant))
    history = train_dsrl(learner, toy_task, out=tmp_path, progress=False, base_success=0.0)
    assert history.env_steps[-1] >= 240 and history.updates > 0
    assert len(history.success) == 2
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["env_steps"] == history.env_steps
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert any((tmp_path / "tb").iterdir())


def test_inputs_are_standardised_from_warmup_states_and_saved_with_the_actor(toy_task, tmp_path):
    learner = DSRL(ToySteerable(), OBS_DIM, _cfg("na", env_steps=120))
    train_dsrl(learner, toy_task, out=tmp_path, progress=False, base_success=0.0)
    norms = [
        learner.sac.actor.obs_norm,
        learner.sac.critic.obs_norm,
        learner.action_critic.obs_norm,
    ]
    shift = norms[0].shift.clone()
    assert not torch.equal(shift, torch.zeros(OBS_DIM))  # fitted, not the identity
    for norm in norms[1:]:
        torch.testing.assert_close(norm.shift, shift)
    save_steered(learner.policy, tmp_path / "steered", tmp_path / "base")
    actor = TanhGaussianActor(OBS_DIM, learner.noise_dim, (32, 32))
    actor.load_state_dict(learner.sac.actor.state_dict())
    torch.testing.assert_close(actor.obs_norm.scale, learner.sac.actor.obs_norm.scale)
    header = json.loads((tmp_path / "steered" / "config.json").read_text())
    assert header["config"]["deterministic"] is True  # the default: act with the actor's mean


def test_dsrl_resumes_from_checkpoint(toy_task, tmp_path):
    first = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=120))
    before = train_dsrl(first, toy_task, out=tmp_path, progress=False, base_success=0.0)
    resumed = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=240))
    # the resumed learner starts from the saved weights, not from its own initialisation
    saved = {k: v.clone() for k, v in first.sac.actor.state_dict().items()}
    history = train_dsrl(resumed, toy_task, out=tmp_path, progress=False)
    assert history.env_steps[:1] == before.env_steps  # earlier evaluation kept
    assert len(history.env_steps) == 2 and history.env_steps[1] >= 240
    assert history.base_success == 0.0  # not re-measured
    assert resumed.sac.updates > first.sac.updates
    assert any(not torch.equal(saved[k], v) for k, v in resumed.sac.actor.state_dict().items())


def test_nan_from_the_critic_stops_training_and_keeps_the_last_checkpoint(toy_task, tmp_path):
    learner = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=120))
    train_dsrl(learner, toy_task, out=tmp_path, progress=False, base_success=0.0)
    checkpoint = (tmp_path / "checkpoint" / "state.safetensors").read_bytes()
    broken = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=240))
    with torch.no_grad():
        broken.sac.critic.heads[0][0].weight.fill_(float("nan"))
    broken.sac.load_state_dict = lambda *a, **k: None  # keep the NaN weights after resume
    with pytest.raises(FloatingPointError, match="critic loss"):
        train_dsrl(broken, toy_task, out=tmp_path, progress=False)
    assert (tmp_path / "checkpoint" / "state.safetensors").read_bytes() == checkpoint


def test_training_transitions_come_from_a_given_env_and_evaluation_from_the_task(toy_task):
    from robot_rl.core.envs import make_vector_env
    from robot_rl.core.reward import RewardModel, RewardWrapper
    from robot_rl.eval.rollout import make_policy_env

    class Constant(RewardModel):
        def __call__(self, obs):
            return np.full(self.check_obs(obs), 7.0, dtype=np.float32)

    learner = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=120))
    built = []

    def train_env(n):
        built.append(n)
        make = lambda: make_policy_env(toy_task, learner.base, gamma=learner.cfg.gamma)  # noqa: E731
        return make_vector_env([lambda: RewardWrapper(make(), Constant())] * n)

    seen = []
    update = learner.update
    learner.update = lambda batch: seen.append(batch["reward"]) or update(batch)
    history = train_dsrl(learner, toy_task, progress=False, base_success=0.0, train_env=train_env)
    assert built == [2] and history.updates > 0
    assert len(history.success) == 1  # the evaluation ran on the task itself
    # every stored chunk reward is the model's, never the task's own
    assert torch.all(torch.cat(seen) == 7.0)
    with pytest.raises(ValueError, match="exactly the number"):
        train_dsrl(
            learner, toy_task, progress=False, base_success=0.0, train_env=lambda n: train_env(1)
        )


def test_shorter_chunks_are_executed_and_saved_with_the_steered_policy(toy_task, tmp_path):
    base = ToySteerable()
    learner = DSRL(base, OBS_DIM, _cfg("na", env_steps=120, n_action_steps=1))
    assert learner.chunk_dim == base.action_dim and learner.policy.n_action_steps == 1
    obs = np.zeros((3, OBS_DIM), np.float32)
    assert learner.base_chunk(obs, np.zeros((3, learner.noise_dim), np.float32)).shape == (3, 1, 1)
    train_dsrl(learner, toy_task, out=tmp_path, progress=False, base_success=0.0)
    assert learner.sac.updates > 0
    save_steered(learner.policy, tmp_path / "steered", tmp_path / "base")
    header = json.loads((tmp_path / "steered" / "config.json").read_text())
    assert header["config"]["n_action_steps"] == 1
    with pytest.raises(ValueError, match="horizon"):
        DSRL(base, OBS_DIM, _cfg("sac", n_action_steps=base.horizon + 1))
    with pytest.raises(ValueError, match="n_action_steps must be >= 1"):
        _cfg("sac", n_action_steps=0)


def test_progress_reward_type_is_checked_and_trains(toy_task):
    with pytest.raises(ValueError, match="reward_type must be"):
        _cfg("sac", reward_type="shaped")
    learner = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=120, reward_type="progress"))
    seen = []
    update = learner.update
    learner.update = lambda batch: seen.append(batch["reward"]) or update(batch)
    history = train_dsrl(learner, toy_task, progress=False, base_success=0.0)
    assert history.updates > 0
    # the shaped toy pays for moving back as well as forth; sparse rewards are never negative
    assert (torch.cat(seen) < 0).any()


def test_the_clock_reaches_the_learner_and_stays_with_the_steered_policy(toy_task, tmp_path):
    learner = DSRL(ToySteerable(), OBS_DIM, _cfg("sac", env_steps=120, clock=True))
    assert learner.obs_dim == OBS_DIM + 1 and learner.policy.reads_clock
    seen = []
    update = learner.update
    learner.update = lambda batch: seen.append(batch) or update(batch)
    train_dsrl(learner, toy_task, progress=False, base_success=0.0)
    # the last input column is the clock: steps / 12 (the toy's budget), both in obs and next_obs
    for key in ("obs", "next_obs"):
        clock = torch.cat([b[key][:, -1] for b in seen])
        assert clock.min() >= 0.0 and clock.max() <= 1.0 and len(clock.unique()) > 2
        np.testing.assert_allclose((clock * 12).numpy(), (clock * 12).round().numpy(), atol=1e-5)
    # the base still reads the state history alone
    inputs = np.zeros((3, OBS_DIM + 1), np.float32)
    assert learner.base_chunk(inputs, np.zeros((3, learner.noise_dim), np.float32)).shape[0] == 3
    save_steered(learner.policy, tmp_path / "steered", tmp_path / "base")
    header = json.loads((tmp_path / "steered" / "config.json").read_text())
    assert header["config"]["reads_clock"] is True
    steered = steered_with_base(tmp_path / "steered", header["config"], learner.base)
    assert steered.reads_clock
    with pytest.raises(KeyError, match="episode clock"):
        steered.predict_chunk({"state": np.zeros((1, 2, 2), np.float32)})
    # steering it again passes the clock through to it, and only with the clock on
    with pytest.raises(ValueError, match="clock=true"):
        DSRL(steered, OBS_DIM, _cfg("sac"))
    again = DSRL(steered, OBS_DIM, _cfg("sac", clock=True))
    inputs[:, -1] = 0.5
    assert again.base_chunk(inputs, np.zeros((3, again.noise_dim), np.float32)).shape[0] == 3
