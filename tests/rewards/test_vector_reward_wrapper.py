import numpy as np
import pytest
from reward_helpers import CAM_ID, StateReward

from robot_rl.core import keys
from robot_rl.core.envs import ChunkedEnv, final_observation, make_vector_env, step_info
from robot_rl.core.reward import RewardWrapper, VectorRewardWrapper
from robot_rl.core.task import TaskConfig, make_env

TASK = TaskConfig("toycam", CAM_ID, register_module="reward_helpers")


def chunk_envs(n=3, terminate=True, chunk=2):
    return make_vector_env(
        [lambda: ChunkedEnv(make_env(TASK, terminate_on_success=terminate), chunk)] * n
    )


def test_model_reward_replaces_task_reward_once_per_vector_step():
    model = StateReward()
    env = VectorRewardWrapper(chunk_envs(), model)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, _, _, info = env.step(np.full((3, 2, 1), 0.5, np.float32))
        reached = final_observation(info, obs)
        np.testing.assert_allclose(reward, reached["state"][:, 0])
        assert "task_reward" in info
    assert model.calls == 3 and model.batches == [3, 3, 3]  # one batched call per step
    assert env.model_frames == 9 and env.model_s > 0


def test_add_mode_and_scale():
    env = VectorRewardWrapper(chunk_envs(2), StateReward(), mode="add", scale=2.0)
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(np.full((2, 2, 1), 0.5, np.float32))
    reached = final_observation(info, obs)
    np.testing.assert_allclose(reward, info["task_reward"] + 2.0 * reached["state"][:, 0])


def test_episode_end_rewards_only_ended_episodes():
    model = StateReward()
    env = VectorRewardWrapper(chunk_envs(2, terminate=False), model, at="episode_end")
    env.reset(seed=0)
    rewards, ended = [], []
    for _ in range(5):  # 10-step episodes, 2-step chunks: all end at the 5th vector step
        _, reward, terminated, truncated, _ = env.step(np.zeros((2, 2, 1), np.float32))
        rewards.append(reward)
        ended.append(terminated | truncated)
    assert not np.any(rewards[:4]) and all(ended[4])
    assert model.calls == 1 and model.batches == [2]


def test_model_detection_ends_and_resets_episodes_the_env_would_not():
    env = VectorRewardWrapper(chunk_envs(2, terminate=False), StateReward(), terminate_above=0.4)
    obs, _ = env.reset(seed=0)
    actions = np.stack([np.full((2, 1), 1.0), np.full((2, 1), -1.0)]).astype(np.float32)
    for _ in range(3):  # env 0 walks right: x >= 0.4 within 3 chunks; env 1 walks left
        obs, reward, terminated, truncated, info = env.step(actions)
        if terminated[0]:
            break
    assert terminated[0] and not terminated[1] and not truncated.any()
    final = final_observation(info, obs)
    assert final["state"][0, 0] >= 0.4  # the frame the model judged
    assert obs["state"][0, 0] <= 0.0  # already the next episode's first frame
    assert step_info(info, keys.CHUNK_STEPS)[0] == 2
    # the step's own info moved to final_info, the reset's is at the top level
    assert step_info(info, keys.IS_SUCCESS, False)[0] == (final["state"][0, 0] >= 0.5)
    assert not info[keys.IS_SUCCESS][0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mode"):
        VectorRewardWrapper(chunk_envs(1), StateReward(), mode="mul")
    with pytest.raises(ValueError, match="chunk_end"):
        VectorRewardWrapper(chunk_envs(1), StateReward(), at="episode_end", terminate_above=1)
    with pytest.raises(KeyError, match="enable the camera"):

        class NeedsCamera(StateReward):
            required_keys = ("image.front",)

        env = RewardWrapper(make_env(TASK), NeedsCamera())
        env.reset(seed=0)
        env.step(np.zeros(1, np.float32))
