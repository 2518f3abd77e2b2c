"""Reward models and the wrapper that puts one in place of (or beside) an environment's reward.

A reward model maps a batch of observations ``{key: [B, ...]}`` (images and/or state) to
rewards ``[B]`` float32. CLIP/VLM rewards and learned success classifiers implement it.
"""

from __future__ import annotations

import abc
from typing import Literal

import gymnasium as gym
import numpy as np

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
