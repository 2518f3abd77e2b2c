import gymnasium as gym
import numpy as np
import pytest
from toys import ConstantPolicy

from robot_rl.core import keys
from robot_rl.core.envs import (
    ChunkedEnv,
    EpisodeClock,
    ObservationHistory,
    ProgressReward,
    final_observation,
    make_vector_env,
    step_info,
)
from robot_rl.core.policy import check_noise
from robot_rl.core.task import make_env


def test_action_check_rejects_bad_actions(toy_task):
    env = make_env(toy_task)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="NaN or inf at indices"):
        env.step(np.array([np.nan], np.float32))
    # a huge finite action is clipped to the normalised range, not passed through
    x0 = env.unwrapped.x
    env.step(np.array([50.0], np.float32))
    assert env.unwrapped.x == pytest.approx(x0 + 0.25)


def test_observation_history_repeats_first_frame_then_slides(toy_task):
    env = ObservationHistory(make_env(toy_task), n_obs_steps=3)
    obs, _ = env.reset(seed=1)
    assert obs["state"].shape == (3, 2)
    assert np.all(obs["state"] == obs["state"][0])
    obs2, *_ = env.step(np.array([1.0], np.float32))
    np.testing.assert_array_equal(obs2["state"][:2], obs["state"][1:])
    assert obs2["state"][2, 0] == pytest.approx(obs["state"][2, 0] + 0.25)
    assert env.observation_space["state"].shape == (3, 2)


def test_episode_clock_counts_the_share_of_the_step_budget_and_restarts(toy_task):
    env = ObservationHistory(EpisodeClock(make_env(toy_task)), n_obs_steps=2)  # budget 12
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[keys.EPISODE_CLOCK], [[0.0], [0.0]])
    for _ in range(3):
        obs, *_ = env.step(np.array([-1.0], np.float32))  # away from the goal: never ends
    np.testing.assert_allclose(obs[keys.EPISODE_CLOCK][:, 0], [2 / 12, 3 / 12])
    assert env.observation_space[keys.EPISODE_CLOCK].shape == (2, 1)
    obs, _ = env.reset(seed=1)
    assert np.all(obs[keys.EPISODE_CLOCK] == 0.0)
    with pytest.raises(ValueError, match="pass max_steps"):
        EpisodeClock(make_env(toy_task).unwrapped)
    with pytest.raises(ValueError, match="already has"):
        EpisodeClock(EpisodeClock(make_env(toy_task)))


def test_chunked_env_discounts_and_stops_early(toy_task):
    env = ChunkedEnv(make_env(toy_task), n_action_steps=8, gamma=0.5)
    env.reset(seed=0)
    env.unwrapped.x = 0.0
    obs, reward, terminated, truncated, info = env.step(np.ones((8, 1), np.float32))
    # x reaches 1.0 after 4 steps: reward 1 at step index 3, discounted by 0.5**3
    assert terminated and not truncated
    assert info[keys.CHUNK_STEPS] == 4
    assert reward == pytest.approx(0.125)
    np.testing.assert_array_equal(info[keys.CHUNK_REWARDS], [0, 0, 0, 1, 0, 0, 0, 0])
    assert info[keys.IS_SUCCESS]
    with pytest.raises(ValueError, match="action chunk has shape"):
        env.step(np.ones((3, 1), np.float32))


def test_chunked_env_rejects_bad_settings(toy_task):
    with pytest.raises(ValueError, match="n_action_steps"):
        ChunkedEnv(make_env(toy_task), n_action_steps=0)
    with pytest.raises(ValueError, match="gamma"):
        ChunkedEnv(make_env(toy_task), n_action_steps=2, gamma=0.0)


def test_vector_step_info_reads_final_info_of_ended_episodes(toy_task):
    env = make_vector_env([lambda: ChunkedEnv(make_env(toy_task), n_action_steps=4)] * 2)
    obs, _ = env.reset(seed=0)
    env.unwrapped.envs[0].unwrapped.x = 0.9  # ends within this chunk
    env.unwrapped.envs[1].unwrapped.x = -0.9
    obs, _, terminated, _, info = env.step(np.ones((2, 4, 1), np.float32))
    assert terminated.tolist() == [True, False]
    steps = step_info(info, keys.CHUNK_STEPS)
    success = step_info(info, keys.IS_SUCCESS, False)
    assert steps.tolist() == [1, 4] and success.tolist() == [True, False]
    last = final_observation(info, obs)
    assert last["state"][0, 0] == pytest.approx(1.15)  # the real last obs, not the reset one
    assert obs["state"][0, 0] != pytest.approx(1.15)
    env.close()


def test_check_noise_names_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        check_noise(np.zeros((2, 3)), 2, (4, 1))
    with pytest.raises(ValueError, match="NaN"):
        check_noise(np.full((1, 4, 1), np.nan), 1, (4, 1))
    assert check_noise(np.zeros((1, 4, 1)), 1, (4, 1)).dtype == np.float32


def test_constant_policy_act_slices_the_chunk():
    policy = ConstantPolicy(0.5, horizon=6, n_action_steps=2)
    chunk = policy.act({"state": np.zeros((3, 2, 2), np.float32)})
    assert chunk.shape == (3, 2, 1)


class _ShapedLine(gym.Env):
    """x moves by the action; shaped reward 0.5 * x below the goal at x >= 1, 1.0 on it."""

    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-5, 5, (1,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.x = 0.0
        return {"state": np.array([self.x], np.float32)}, {"is_success": False}

    def step(self, action):
        self.x += float(action[0])
        success = self.x >= 1.0
        shaped = 1.0 if success else 0.5 * self.x
        return (
            {"state": np.array([self.x], np.float32)},
            shaped,
            success,
            False,
            {"is_success": success},
        )


def test_progress_reward_pays_the_change_of_the_shaped_reward_plus_success():
    env = ProgressReward(_ShapedLine())
    env.reset()
    steps = [env.step(np.array([a], np.float32)) for a in (0.4, 0.0, -0.2, 0.8)]
    rewards = [s[1] for s in steps]
    # first step: no earlier shaped value to compare with; then hover 0, retreat costs
    np.testing.assert_allclose(rewards[:3], [0.0, 0.0, -0.1])
    assert steps[3][2] and rewards[3] == pytest.approx(1.0 + (1.0 - 0.1))  # success + progress
    assert steps[2][4]["task_reward"] == pytest.approx(0.1)
    env.reset()  # a new episode forgets the last shaped value
    assert env.step(np.array([0.2], np.float32))[1] == 0.0
