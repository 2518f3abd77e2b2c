"""Reward models and the wrapper that puts one in place of (or beside) an environment's reward.

A reward model maps a batch of observations ``{key: [B, ...]}`` (images and/or state) to
rewards ``[B]`` float32. CLIP/VLM rewards and learned success classifiers implement it
(``robot_rl.rewards``).

Two wrappers put a model's reward into an environment: :class:`RewardWrapper` per step on one
environment, and :class:`VectorRewardWrapper` on a vector of chunk environments, evaluating
the model once per vector step on the batch of frames reached (at chunk ends, or only where an
episode ended), which keeps a CNN's or CLIP's cost per env step small::

    vector step: n chunk envs each run Ta env steps -> reached frames [n, ...]
                 -> one model call on the batch -> reward [n] (replaces / adds to the task's)
                 -> optionally terminate (and reset) where reward >= terminate_above
"""

from __future__ import annotations

import abc
import time
from typing import Literal

import gymnasium as gym
import numpy as np

from robot_rl.core import keys
from robot_rl.core.envs import final_observation
from robot_rl.core.policy import Observation, batch_size


class RewardModel(abc.ABC):
    """Observations in, one reward per observation out."""

    #: observation keys the model reads, e.g. ``("image.front",)``
    required_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def __call__(self, obs: Observation) -> np.ndarray:
        """obs ``{key: [B, ...]}`` -> rewards ``[B]`` float32."""

    def check_obs(self, obs: Observation) -> int:
        missing = [k for k in self.required_keys if k not in obs]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs observation keys {missing}, got {sorted(obs)}; "
                "enable the camera/state in the task config"
            )
        return batch_size(obs)


class RewardWrapper(gym.Wrapper):
    """Replaces (``mode="replace"``) or adds to (``mode="add"``) the environment's reward with a
    reward model's, evaluated on the observation reached by each step. The task's own reward
    stays available in ``info["task_reward"]``."""

    def __init__(
        self,
        env: gym.Env,
        model: RewardModel,
        mode: Literal["replace", "add"] = "replace",
        scale: float = 1.0,
    ):
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        super().__init__(env)
        self.model, self.mode, self.scale = model, mode, scale

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        model_reward = float(self.model(batch)[0]) * self.scale
        info = dict(info)
        info["task_reward"] = reward
        reward = model_reward if self.mode == "replace" else reward + model_reward
        return obs, reward, terminated, truncated, info


class VectorRewardWrapper(gym.vector.VectorWrapper):
    """A reward model's reward on a vector of (chunk) environments, one batched model call per
    vector step on the observations reached (the true last ones where an episode ended).

    ``at="chunk_end"`` rewards every transition with the model's value on the frame reached;
    ``"episode_end"`` only transitions that end an episode (the others get 0; the model then
    runs on those frames only). ``mode`` replaces or adds to the environment's reward (kept in
    ``info["task_reward"]``). With ``terminate_above`` set, a sub-environment whose model
    reward reaches it is terminated and reset at once, as a success detector on a real robot
    ends the episode; build the environments without their own success termination so that
    the learner never sees the task's success. The vector env must use same-step autoreset
    (``make_vector_env``)."""

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        model: RewardModel,
        mode: Literal["replace", "add"] = "replace",
        at: Literal["chunk_end", "episode_end"] = "chunk_end",
        scale: float = 1.0,
        terminate_above: float | None = None,
    ):
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        if at not in ("chunk_end", "episode_end"):
            raise ValueError(f"at must be 'chunk_end' or 'episode_end', got {at!r}")
        if terminate_above is not None and at == "episode_end":
            raise ValueError(
                "terminate_above needs at='chunk_end' (a model at episode ends cannot end episodes)"
            )
        super().__init__(env)
        self.model, self.mode, self.at, self.scale = model, mode, at, scale
        self.terminate_above = terminate_above
        self.model_s = 0.0
        """seconds spent in the model"""
        self.model_frames = 0
        """frames the model evaluated"""

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        reached = final_observation(info, obs)
        rows = np.arange(self.num_envs)
        if self.at == "episode_end":
            rows = np.flatnonzero(np.logical_or(terminated, truncated))
        values = np.zeros(self.num_envs, dtype=np.float32)
        if len(rows):
            start = time.perf_counter()
            values[rows] = self.model({k: np.asarray(v)[rows] for k, v in reached.items()})
            self.model_s += time.perf_counter() - start
            self.model_frames += len(rows)
        values *= self.scale
        info = dict(info)
        info["task_reward"] = np.asarray(reward)
        reward = values if self.mode == "replace" else np.asarray(reward) + values
        if self.terminate_above is not None:
            detected = (values >= self.terminate_above * self.scale) & ~(terminated | truncated)
            terminated = np.logical_or(terminated, values >= self.terminate_above * self.scale)
            if detected.any():
                obs, info = self._end_episodes(detected, obs, info)
        return obs, reward, terminated, truncated, info

    def _end_episodes(self, ended: np.ndarray, obs, info: dict):
        """Same-step autoreset by hand for the sub-environments the model ended: their step's
        observation and info move to ``final_obs`` / ``final_info``, then they are reset."""
        n = self.num_envs
        final_obs = info.get(keys.FINAL_OBS)
        final_obs = np.array([None] * n, dtype=object) if final_obs is None else final_obs.copy()
        obs_mask = np.asarray(info.get("_" + keys.FINAL_OBS, np.zeros(n, bool))).copy()
        final_info = dict(info.get(keys.FINAL_INFO) or {})
        step_keys = [k for k in info if not k.startswith(("final_", "_final_", "_"))]
        for i in np.flatnonzero(ended):
            final_obs[i] = {k: np.array(v[i]) for k, v in obs.items()}
        for key in step_keys:
            value = np.asarray(info[key])
            if value.shape[:1] != (n,):
                continue
            old = final_info.get(key)
            merged = np.zeros_like(value) if old is None else np.asarray(old).copy()
            merged[ended] = value[ended]
            final_info[key] = merged
            mask = np.asarray(final_info.get("_" + key, np.zeros(n, bool))).copy()
            final_info["_" + key] = mask | ended
        obs_mask |= ended
        info_mask = np.asarray(info.get("_" + keys.FINAL_INFO, np.zeros(n, bool))) | ended
        new_obs, reset_info = self.env.reset(options={"reset_mask": ended.copy()})
        info.update(
            {
                keys.FINAL_OBS: final_obs,
                "_" + keys.FINAL_OBS: obs_mask,
                keys.FINAL_INFO: final_info,
                "_" + keys.FINAL_INFO: info_mask,
            }
        )
        for key, value in reset_info.items():
            if key.startswith("_") or key not in info:
                continue
            current = np.asarray(info[key]).copy()
            current[ended] = np.asarray(value)[ended]
            info[key] = current
        return new_obs, info
