import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from toys import ConstantPolicy, ToySteerable, toy_task_config

from robot_rl import config
from robot_rl.core import keys
from robot_rl.core.envs import final_observation, step_info, time_limit_timeouts
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import train_dsrl
from robot_rl.rl.sac import SACConfig
from world_models.imagination import (
    ImaginationEnv,
    ImaginationEnvFactory,
    StartStates,
    evaluate_in_model,
)


@pytest.fixture
def starts(toy_store):
    return StartStates.from_store(toy_store, n_obs_steps=2)


def test_start_states_hold_the_policy_history(starts, toy_store):
    assert starts.history.shape[1:] == (2, 2)
    first = starts.history[starts.initial]
    np.testing.assert_array_equal(first[:, 0], first[:, 1])  # padded by repeating the start
    later = starts.history[~starts.initial]
    assert not np.allclose(later[:, 0], later[:, 1])  # real previous frames


def test_horizon_zero_is_rejected(toy_model, starts):
    model = toy_model[0]
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        ImaginationEnv(model, starts, 2, n_action_steps=2, horizon=0)


def test_steps_whole_chunks_with_same_step_autoreset(toy_model, starts):
    model = toy_model[0]
    env = ImaginationEnv(model, starts, 3, n_action_steps=2, horizon=3, penalty=0.5, seed=1)
    obs, _ = env.reset(seed=1)
    assert obs[keys.STATE].shape == (3, 2, 2)
    ended = False
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(np.ones((3, 2, 1), np.float32))
        steps = step_info(info, keys.CHUNK_STEPS)
        assert np.all((steps >= 1) & (steps <= 2)) and np.isfinite(reward).all()
        assert obs[keys.STATE].shape == (3, 2, 2) and np.isfinite(obs[keys.STATE]).all()
        if (terminated | truncated).any():
            ended = True
            nxt = final_observation(info, obs)
            i = int(np.flatnonzero(terminated | truncated)[0])
            assert not np.array_equal(nxt[keys.STATE][i], obs[keys.STATE][i])
    assert ended and env.episodes >= 1  # horizon 3 with 2-step chunks ends by the 2nd chunk
    # imagined episodes start mid-episode: their horizon cuts are not the task's time limit,
    # so a collector never reports them as timeouts (learners bootstrap through them)
    cut = np.ones(3, bool)
    assert not time_limit_timeouts(env, terminated=~cut, truncated=cut).any()
    with pytest.raises(ValueError, match="action chunk|shape"):
        env.step(np.ones((3, 3, 1), np.float32))


def test_uncertainty_penalty_lowers_the_reward(toy_model, starts):
    model = toy_model[0]
    chunk = np.zeros((4, 2, 1), np.float32)
    rewards = []
    for penalty in (0.0, 10.0):
        env = ImaginationEnv(model, starts, 4, 2, horizon=20, penalty=penalty, seed=3)
        env.reset(seed=3)
        rewards.append(env.step(chunk)[1])
    assert (rewards[1] < rewards[0]).all()


def test_diverging_model_is_truncated_and_counted_never_nan(toy_model, starts):
    model = toy_model[0]
    broken = type(model)(model.cfg)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.dynamics[-1].bias[1].fill_(float("nan"))  # member 1 predicts NaN
        broken.dynamics[-1].bias[0].fill_(1e6)  # member 0 flies off
    env = ImaginationEnv(broken, starts, 4, 2, horizon=10, member="mean")
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.zeros((4, 2, 1), np.float32))
    assert truncated.all() and info["diverged"].all() and env.diverged == 4
    assert np.isfinite(reward).all()
    assert np.isfinite(final_observation(info, obs)[keys.STATE]).all()
    assert np.isfinite(obs[keys.STATE]).all()


def test_model_believes_a_good_policy_succeeds_more(toy_model, starts):
    model = toy_model[0]
    good = evaluate_in_model(ConstantPolicy(1.0), model, starts, 16, horizon=12, n_envs=4)
    bad = evaluate_in_model(ConstantPolicy(-1.0), model, starts, 16, horizon=12, n_envs=4)
    assert good["success_rate"] > bad["success_rate"]
    assert good["episodes"] == 16


def test_dsrl_trains_inside_the_model_and_evaluates_on_the_task(toy_model, tmp_path):
    _, _, out = toy_model
    task = toy_task_config()
    base = ToySteerable()
    job = config.load_job("improve", config.ImproveJob, ["env=imagination", "env.horizon=6"])
    factory = instantiate(
        job.env, task=task, policy=base, world_model={"path": str(out / "model")}, gamma=0.99
    )
    assert isinstance(factory, ImaginationEnvFactory)
    cfg = DSRLConfig(
        reward_type=None,
        env_steps=96,
        warmup_env_steps=32,
        n_envs=2,
        eval_every=96,
        eval_episodes=2,
        sac=SACConfig(hidden_dims=(16, 16), batch_size=8, utd_ratio=1),
    )
    learner = DSRL(base, 4, cfg)
    history = train_dsrl(learner, task, progress=False, base_success=0.0, train_env=factory)
    (env,) = factory.built
    assert env.env_steps == history.env_steps[-1]  # every training step was imagined
    assert history.env_steps[-1] >= 96 and len(history.success) == 1


def test_factory_refuses_a_model_of_another_task(toy_model):
    _, _, out = toy_model
    with pytest.raises(ValueError, match="trained on task 'toy', not 'push'"):
        ImaginationEnvFactory("push", ToySteerable(), str(out / "model"))
    with pytest.raises(ValueError, match="needs a trained world model"):
        ImaginationEnvFactory("toy", ToySteerable(), {"path": None})


def test_success_needs_every_member_under_the_all_rule(toy_model, starts):
    model = toy_model[0]
    env = ImaginationEnv(model, starts, 16, 1, horizon=20, success_rule="all", seed=5)
    obs, _ = env.reset(seed=5)
    state = torch.from_numpy(obs[keys.STATE][:, -1])
    action = torch.ones(16, 1)
    _, _, _, _, info = env.step(np.ones((16, 1, 1), np.float32))
    with torch.no_grad():
        members = model.next(state, action)
        _, logits, _ = model.outcome(state.expand(3, 16, 2), action.expand(3, 16, 1), members)
    by_hand = (logits > model.success_threshold).all(dim=0).numpy()
    np.testing.assert_array_equal(step_info(info, keys.IS_SUCCESS, False), by_hand)
    assert by_hand.any() and not by_hand.all()  # from x in [-0.2, 1): some starts succeed
    with pytest.raises(ValueError, match="success_rule"):
        ImaginationEnv(model, starts, 2, 2, success_rule="any")


def test_residual_noise_spreads_imagined_states(toy_model, starts):
    model = toy_model[0]
    assert (model.residual_std > 0).all()  # fitted on the training steps
    chunk = np.full((8, 2, 1), 0.5, np.float32)
    finals = {}
    for scale in (0.0, 1.0):
        env = ImaginationEnv(model, starts, 8, 2, horizon=20, noise_scale=scale, seed=2)
        obs, _ = env.reset(seed=2)
        obs[keys.STATE][:] = obs[keys.STATE][:1]  # every environment from the same start
        env._history[:] = obs[keys.STATE]
        finals[scale] = env.step(chunk)[0][keys.STATE][:, -1]
    assert np.allclose(finals[0.0], finals[0.0][:1])  # the mean world: identical
    assert finals[1.0][:, 0].std() > 0  # with the model's noise: a spread
    with pytest.raises(ValueError, match="noise_scale"):
        ImaginationEnv(model, starts, 2, 2, noise_scale=-1.0)


def test_factory_refuses_start_states_of_another_task(toy_model, tmp_path):
    from robot_rl.data import EpisodeStore

    _, _, out = toy_model
    other = tmp_path / "other.zarr"
    with EpisodeStore.create(other, task="lift", fps=10, source="test", robot="sim") as store:
        store.append_episode({"state": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError, match="holds task 'lift', the world model .* of 'toy'"):
        ImaginationEnvFactory("toy", ToySteerable(), str(out / "model"), store=str(other))
