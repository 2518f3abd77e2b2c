"""robot_rl/GymReacher-v0 and robot_rl/GymPusher-v0: action rescaling, success predicates,
sparse rewards, and the Reacher expert."""

from __future__ import annotations

import numpy as np
from sim_helpers import load_task, run_expert

from robot_rl.core import keys
from robot_rl.core.task import ExpertQuality, make_env
from sim.adapters.gymnasium_mujoco import PUSHER_SUCCESS_DIST, REACHER_SUCCESS_DIST


def test_actions_are_rescaled_to_the_inner_box() -> None:
    env = make_env(load_task("gym_pusher"))  # Pusher-v5 torques live in [-2, 2]
    env.reset(seed=0)
    action = np.linspace(-1.0, 1.0, 7, dtype=np.float32)
    env.step(action)
    np.testing.assert_allclose(env.unwrapped.inner.data.ctrl, 2.0 * action, atol=1e-6)


def test_pusher_success_is_object_at_goal_in_the_table_plane() -> None:
    env = make_env(load_task("gym_pusher"), terminate_on_success=False)
    env.reset(seed=0)
    inner = env.unwrapped.inner
    _, _, _, _, info = env.step(np.zeros(7, dtype=np.float32))
    assert not info[keys.IS_SUCCESS]
    data = inner.data
    shift = data.body("goal").xpos[:2] - data.body("object").xpos[:2]
    shift[0] += 0.6 * PUSHER_SUCCESS_DIST
    data.joint("obj_slidex").qpos[0] += shift[0]
    data.joint("obj_slidey").qpos[0] += shift[1]
    data.joint("obj_slidex").qvel[0] = data.joint("obj_slidey").qvel[0] = 0.0
    _, reward, terminated, _, info = env.step(np.zeros(7, dtype=np.float32))
    assert info[keys.IS_SUCCESS] and not terminated
    assert np.isfinite(reward)


def test_reacher_expert_reaches_and_sparse_reward_is_success() -> None:
    successes, _ = run_expert("gym_reacher", episodes=10)
    assert np.mean(successes) >= 0.9, successes
    env = make_env(load_task("gym_reacher"), reward_type="sparse")
    inner = env.unwrapped.inner
    obs, _ = env.reset(seed=5)
    for _ in range(10):
        obs, reward, terminated, _, info = env.step(env.action_space.sample())
        tip, target = inner.data.body("fingertip").xpos, inner.data.body("target").xpos
        gap = np.linalg.norm((tip - target)[:2])
        assert info[keys.IS_SUCCESS] == (gap < REACHER_SUCCESS_DIST)
        assert reward == float(info[keys.IS_SUCCESS])
        if terminated:
            break


def test_reacher_quality_knob_lowers_success() -> None:
    clean, _ = run_expert("gym_reacher", episodes=10)
    poor, _ = run_expert("gym_reacher", episodes=10, quality=ExpertQuality(0.2, 1.0))
    assert np.mean(poor) <= np.mean(clean) - 0.3, (np.mean(clean), np.mean(poor))
