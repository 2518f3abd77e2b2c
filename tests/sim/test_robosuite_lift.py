"""robot_rl/RobosuiteLift-v0: the expert lifts, sparse reward is success, camera images come
upright, and a missing robosuite fails with the extra to install. Kept to two env builds."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from sim_helpers import load_task, run_expert

from robot_rl.core import keys
from robot_rl.core.task import make_env

pytestmark = pytest.mark.robosuite


def test_expert_lifts_with_sparse_reward(robosuite_env: gym.Env) -> None:
    task = load_task("robosuite_lift")
    successes, _ = run_expert(task, episodes=2, env=robosuite_env)
    assert all(successes), successes

    robosuite_env.unwrapped.reward_type = "sparse"
    try:
        obs, _ = robosuite_env.reset(seed=7)
        for _ in range(5):
            obs, reward, _, _, info = robosuite_env.step(robosuite_env.action_space.sample())
            assert reward == float(info[keys.IS_SUCCESS])
    finally:
        robosuite_env.unwrapped.reward_type = "dense"


def test_camera_images_are_upright() -> None:
    pytest.importorskip("robosuite")
    env = make_env(load_task("robosuite_lift"), cameras=("agentview",), image_size=64)
    obs, _ = env.reset(seed=0)
    image = obs["image.agentview"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5.0, "camera image is blank"
    # agentview looks over the gripper at the white table: upright, the table fills the bottom
    # rows and the darker gripper and floor the top ones; robosuite's raw frame is the reverse.
    top, bottom = image[:16].mean(), image[-16:].mean()
    assert bottom > top + 30, (top, bottom)
    env.close()


def test_missing_robosuite_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.adapters.robosuite_lift import import_robosuite

    monkeypatch.setitem(sys.modules, "robosuite", None)
    with pytest.raises(ImportError, match=r"pip install 'robot-rl\[robosuite\]'"):
        import_robosuite()
