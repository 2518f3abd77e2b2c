"""Environment wrappers shared by every learner: action checks, observation history, chunk
execution, and vectorisation.

Every environment kind (a MuJoCo task, robosuite, a real robot behind its safety layer, a world
model's imagination) is a ``gymnasium.Env`` following the contracts in ``keys.py``; these
wrappers are the only path by which policies and improvers act on one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from robot_rl.core import keys


class ActionCheck(gym.ActionWrapper):
    """Rejects actions of the wrong shape or with NaN/inf before they reach the environment,
    and clips finite actions to the normalised range [-1, 1]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(f"expected a Box action space, got {env.action_space}")

    def action(self, action: Any) -> np.ndarray:
        return check_action(action, self.action_space.shape)


def check_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a normalised action; errors name the shape or the bad entries."""
    action = np.asarray(action, dtype=np.float32)
    if action.shape != tuple(shape):
        raise ValueError(f"action has shape {action.shape}, the environment expects {tuple(shape)}")
    bad = ~np.isfinite(action)
    if bad.any():
        raise ValueError(
            f"action contains NaN or inf at indices {np.argwhere(bad).tolist()}: "
            f"{action.tolist()}; "
            "check the policy's output (normalisation statistics with zero std are a common cause)"
        )
    return np.clip(action, -1.0, 1.0)


class ObservationHistory(gym.ObservationWrapper):
    """Stacks the last ``n_obs_steps`` observations: each key ``[...]`` becomes ``[To, ...]``.
    At reset the first observation is repeated, matching the store's window padding."""

    def __init__(self, env: gym.Env, n_obs_steps: int):
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        super().__init__(env)
        self.n_obs_steps = n_obs_steps
        if not isinstance(env.observation_space, spaces.Dict):
            raise TypeError(f"expected a Dict observation space, got {env.observation_space}")
        self.observation_space = spaces.Dict(
            {k: _stack_space(s, n_obs_steps) for k, s in env.observation_space.spaces.items()}
        )
        self._frames: deque[dict[str, np.ndarray]] = deque(maxlen=n_obs_steps)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        for _ in range(self.n_obs_steps):
            self._frames.append(obs)
        return self._stacked(), info

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._frames.append(observation)
        return self._stacked()

    def _stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([f[k] for f in self._frames]) for k in self._frames[0]}


class EpisodeClock(gym.Wrapper):
    """Adds ``obs[keys.EPISODE_CLOCK]``: the share of the episode's step budget used so far,
    ``[steps / max_steps]`` in [0, 1]. A learner whose return ends at the time limit needs it
    to be Markov: without it a state ten steps before the limit and the same state at the
    start look alike, though only one of them has time left to succeed.

    ``max_steps`` defaults to the registered ``max_episode_steps`` of the environment."""

    def __init__(self, env: gym.Env, max_steps: int | None = None):
        super().__init__(env)
        spec = getattr(env, "spec", None)
        max_steps = max_steps or (spec.max_episode_steps if spec is not None else None)
        if not max_steps or max_steps < 1:
            raise ValueError(
                f"EpisodeClock needs the episode's step budget: {env} has no max_episode_steps "
                "in its spec; pass max_steps"
            )
        if not isinstance(env.observation_space, spaces.Dict):
            raise TypeError(f"expected a Dict observation space, got {env.observation_space}")
        if keys.EPISODE_CLOCK in env.observation_space.spaces:
            raise ValueError(f"the observation already has {keys.EPISODE_CLOCK!r}")
        self.max_steps, self._steps = int(max_steps), 0
        self.observation_space = spaces.Dict(
            {
                **env.observation_space.spaces,
                keys.EPISODE_CLOCK: spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._steps = 0
        return self._with_clock(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        return self._with_clock(obs), reward, terminated, truncated, info

    def _with_clock(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clock = min(self._steps / self.max_steps, 1.0)
        return {**obs, keys.EPISODE_CLOCK: np.array([clock], np.float32)}


def _stack_space(space: spaces.Space, n: int) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise TypeError(f"observation history supports Box spaces only, got {space}")
    low = np.broadcast_to(space.low, space.shape)
    high = np.broadcast_to(space.high, space.shape)
    return spaces.Box(np.stack([low] * n), np.stack([high] * n), dtype=space.dtype)


class ProgressReward(gym.Wrapper):
    """Success bonus plus progress: ``r = 1[success] + d(s') - d(s)``, where ``d`` is the
    task's shaped (dense) reward, a function of the state, used as a potential.

    Moving the object towards the goal earns, moving it away costs, hovering earns nothing, so
    an episode sums to ``1[success] + d(s_T) - d(s_1)`` and finishing always dominates (a
    shaped reward paid every step can pay more for hovering near the goal than for reaching
    it when success ends the episode). Wrap an environment made with ``reward_type="dense"``;
    the shaped reward stays in ``info["task_reward"]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._last: float | None = None

    def reset(self, **kwargs):
        self._last = None
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, shaped, terminated, truncated, info = self.env.step(action)
        shaped = float(shaped)
        progress = 0.0 if self._last is None else shaped - self._last
        self._last = shaped
        info = {**info, "task_reward": shaped}
        reward = float(bool(info.get(keys.IS_SUCCESS, False))) + progress
        return obs, reward, terminated, truncated, info


class ChunkedEnv(gym.Wrapper):
    """Executes a whole action chunk ``[Ta, A]`` per step, stopping early at termination or
    truncation. Returns the chunk's discounted reward ``sum_i gamma^i r_i``; the info carries
    ``chunk_steps`` (steps taken), ``chunk_rewards`` (per step, zero-padded to Ta) and
    ``is_success`` (true if any step of the chunk succeeded). Chunk-level learners (DSRL,
    Q-chunking) and evaluation share this one execution path."""

    def __init__(self, env: gym.Env, n_action_steps: int, gamma: float = 0.99):
        super().__init__(env)
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.n_action_steps = n_action_steps
        self.gamma = gamma
        inner = env.action_space
        self.action_space = spaces.Box(
            np.stack([inner.low] * n_action_steps),
            np.stack([inner.high] * n_action_steps),
            dtype=np.float32,
        )

    def step(self, chunk: np.ndarray):
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.shape != self.action_space.shape:
            raise ValueError(
                f"action chunk has shape {chunk.shape}, expected {self.action_space.shape} "
                "(n_action_steps, action_dim)"
            )
        total, discount, success = 0.0, 1.0, False
        rewards = np.zeros(self.n_action_steps, dtype=np.float32)
        obs, terminated, truncated, info, steps = None, False, False, {}, 0
        for action in chunk:
            obs, reward, terminated, truncated, info = self.env.step(action)
            rewards[steps] = reward
            total += discount * float(reward)
            discount *= self.gamma
            steps += 1
            success = success or bool(info.get(keys.IS_SUCCESS, False))
            if terminated or truncated:
                break
        info = dict(info)
        info[keys.CHUNK_STEPS] = steps
        info[keys.CHUNK_REWARDS] = rewards
        info[keys.IS_SUCCESS] = success
        return obs, total, terminated, truncated, info


def make_vector_env(
    env_fns: Sequence[Callable[[], gym.Env]], asynchronous: bool = False
) -> VectorEnv:
    """Vectorise environments with same-step autoreset: when a sub-environment ends, the
    returned observation is already the next episode's first one, and the last observation
    and info of the ended episode are in ``info["final_obs"]`` / ``info["final_info"]``."""
    if asynchronous:
        return gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
    return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)


def step_info(info: dict, key: str, default: Any = 0) -> np.ndarray:
    """Per-sub-environment value of ``info[key]`` for the step just taken by a same-step
    autoreset vector env: for sub-environments whose episode ended, the step's info lives in
    ``info["final_info"]`` (the top level then holds the new episode's reset info)."""
    values = np.asarray(info.get(key, np.full(len(info.get("_" + key, [])), default)))
    final = info.get(keys.FINAL_INFO)
    if final is None or key not in final:
        return values
    ended = np.asarray(info["_" + keys.FINAL_INFO], dtype=bool)
    values = values.copy() if values.size else np.full(ended.shape, default)
    values[ended] = np.asarray(final[key])[ended]
    return values


def final_observation(info: dict, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The observation each sub-environment reached at this step: the true last observation
    for ended episodes (from ``info["final_obs"]``), the current one for the others. This is
    the ``next_obs`` of a transition."""
    if keys.FINAL_OBS not in info:
        return obs
    ended = np.flatnonzero(info["_" + keys.FINAL_OBS])
    out = {k: v.copy() for k, v in obs.items()}
    for i in ended:
        for k, v in info[keys.FINAL_OBS][i].items():
            out[k][i] = v
    return out


def time_limit_timeouts(
    env: gym.vector.VectorEnv, terminated: np.ndarray, truncated: np.ndarray
) -> np.ndarray:
    """Which sub-environments ran out the task's time limit at this step: truncated, not
    terminated. A vector environment whose truncations are not that limit (a world model's
    imagination cuts rollouts that start mid-episode) says so with a false
    ``truncation_is_time_limit`` attribute; its truncations are then never timeouts."""
    if not getattr(env, "truncation_is_time_limit", True):
        return np.zeros_like(np.asarray(truncated), dtype=bool)
    return np.asarray(truncated, dtype=bool) & ~np.asarray(terminated, dtype=bool)
