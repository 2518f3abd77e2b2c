"""Every registered ``robot_rl/...`` task of ``sim``: build from its YAML config, reset, step,
shapes and dtypes against the spaces, no NaN, ``is_success`` present, determinism of
``reset(seed=...)``, and gymnasium's ``check_env`` (with one camera for the cheap tasks)."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sim_helpers import INF_BOUNDS_WARNING, ROBOSUITE_ID, load_task, task_names_by_id

import sim
from robot_rl.core import keys
from robot_rl.core.task import make_env

CONFIG_NAMES = task_names_by_id()
# One camera per task for the image checks; robosuite's is in test_robosuite_lift.py, since a
# second robosuite build costs seconds.
CAMERA = {
    "robot_rl/Push-v0": "top",
    "robot_rl/Lift-v0": "front",
    "robot_rl/GymReacher-v0": "top",
    "robot_rl/GymPusher-v0": "front",
}
TASK_PARAMS = [
    pytest.param(i, marks=pytest.mark.robosuite) if i == ROBOSUITE_ID else i for i in sim.TASK_IDS
]


def check_observation(env: gym.Env, obs: dict[str, np.ndarray]) -> None:
    space = env.observation_space
    assert set(obs) == set(space.spaces), (set(obs), set(space.spaces))
    for key, value in obs.items():
        assert value.shape == space[key].shape, (key, value.shape, space[key].shape)
        assert value.dtype == space[key].dtype, (key, value.dtype, space[key].dtype)
    assert obs[keys.STATE].dtype == np.float32
    assert np.all(np.isfinite(obs[keys.STATE]))
    assert obs in space


def rollout(env: gym.Env, seed: int, steps: int) -> list[np.ndarray]:
    obs, info = env.reset(seed=seed)
    states = [obs[keys.STATE]]
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, *env.action_space.shape))
    for action in actions.astype(np.float32):
        obs, reward, terminated, truncated, info = env.step(action)
        check_observation(env, obs)
        assert isinstance(info[keys.IS_SUCCESS], bool)
        assert np.isfinite(reward)
        states.append(obs[keys.STATE])
        if terminated or truncated:
            break
    return states


@pytest.mark.filterwarnings(INF_BOUNDS_WARNING)
@pytest.mark.parametrize("env_id", TASK_PARAMS)
def test_registered_task(env_id: str, request: pytest.FixtureRequest) -> None:
    assert env_id in gym.registry
    assert gym.spec(env_id).max_episode_steps <= 100
    assert env_id in CONFIG_NAMES, f"{env_id} has no configs/task/*.yaml"
    task = load_task(CONFIG_NAMES[env_id])
    env = request.getfixturevalue("robosuite_env") if env_id == ROBOSUITE_ID else make_env(task)
    space = env.action_space
    assert space.dtype == np.float32 and np.all(space.low == -1) and np.all(space.high == 1)
    assert env.unwrapped.metadata["render_modes"] == ["rgb_array"]

    obs, info = env.reset(seed=0)
    check_observation(env, obs)
    assert isinstance(info[keys.IS_SUCCESS], bool)
    first = rollout(env, seed=3, steps=5)
    again = rollout(env, seed=3, steps=5)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    other, _ = env.reset(seed=4)
    assert not np.array_equal(other[keys.STATE], first[0]), "reset(seed) ignores the seed"
    check_env(env.unwrapped, skip_render_check=True)

    if env_id in CAMERA:
        check_camera(task, CAMERA[env_id])
    if env_id != ROBOSUITE_ID:
        env.close()


def check_camera(task, camera: str) -> None:
    env = make_env(task, cameras=(camera,), image_size=64, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    image = obs[keys.image_key(camera)]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5.0, "camera image is blank"
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    check_env(env.unwrapped)
    env.close()


def test_every_config_names_a_registered_task() -> None:
    for env_id, name in CONFIG_NAMES.items():
        task = load_task(name)
        assert task.register_module == "sim" and env_id in sim.TASK_IDS, name


def test_import_is_cheap() -> None:
    code = (
        "import sys, sim; "
        "heavy = [m for m in ('robosuite', 'mujoco', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
