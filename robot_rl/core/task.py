"""Tasks as the core sees them: a gymnasium id, the module that registers it, and a scripted
expert named by dotted path. The core never imports ``sim`` itself; a task config names it."""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.core.envs import ActionCheck
from robot_rl.core.policy import Observation


@dataclass(frozen=True)
class ExpertQuality:
    """How imperfect a scripted expert is, so datasets can be made imperfect on purpose."""

    noise_std: float = 0.0
    """std of Gaussian noise added to every normalised action"""
    suboptimal_prob: float = 0.0
    """probability that an episode is run in a suboptimal mode (task-specific: hesitations,
    wrong approach, early release, ...)"""

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.suboptimal_prob <= 1.0:
            raise ValueError(f"suboptimal_prob must be in [0, 1], got {self.suboptimal_prob}")


class ScriptedExpert(abc.ABC):
    """A privileged controller that reads the simulator state and returns normalised actions.

    ``reset()`` at every episode start (after ``env.reset``); ``act(obs)`` each step, where
    ``obs`` is the environment's own (un-stacked) observation."""

    def __init__(self, env: gym.Env, quality: ExpertQuality = ExpertQuality(), seed: int = 0):
        self.env = env
        self.quality = quality
        self.rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def reset(self) -> None: ...

    @abc.abstractmethod
    def act(self, obs: Observation) -> np.ndarray: ...

    def noisy(self, action: np.ndarray) -> np.ndarray:
        """Adds the quality knob's action noise and clips to [-1, 1]."""
        if self.quality.noise_std > 0:
            action = action + self.rng.normal(0.0, self.quality.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class TaskConfig:
    """A task: which gymnasium environment, how to build it, and its scripted expert."""

    name: str
    """short name used in configs and reports, e.g. ``push``"""
    env_id: str
    """gymnasium id, e.g. ``robot_rl/Push-v0``"""
    register_module: str = "sim"
    """module whose import registers ``env_id`` with gymnasium"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments for ``gymnasium.make`` (reward type, cameras, image size, ...)"""
    expert: str | None = None
    """dotted path of the scripted expert class, or None when the task has none"""
    robot: str = "sim"
    """robot name recorded with episodes"""

    def __post_init__(self) -> None:
        if not self.name or not self.env_id:
            raise ValueError(
                f"a task needs a name and an env_id, got {self.name!r}, {self.env_id!r}"
            )


def make_env(task: TaskConfig, **overrides: Any) -> gym.Env:
    """Build one environment of a task, with the action check applied. ``overrides`` update
    the task's ``env_kwargs`` (e.g. ``cameras=("front",)``, ``render_mode="rgb_array"``)."""
    try:
        importlib.import_module(task.register_module)
    except ImportError as err:
        raise ImportError(
            f"task {task.name!r} needs module {task.register_module!r} to register "
            f"{task.env_id!r}: "
            f"{err}. Install the project (`make venv`) or the extra that provides it."
        ) from err
    if task.env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("robot_rl/"))
        raise KeyError(f"task {task.name!r}: unknown env_id {task.env_id!r}; registered: {known}")
    kwargs = {**task.env_kwargs, **overrides}
    return ActionCheck(gym.make(task.env_id, **kwargs))


def make_expert(
    task: TaskConfig, env: gym.Env, quality: ExpertQuality = ExpertQuality(), seed: int = 0
) -> ScriptedExpert:
    """Instantiate the task's scripted expert for ``env``."""
    if task.expert is None:
        raise ValueError(f"task {task.name!r} has no scripted expert; collect demos another way")
    module_name, _, class_name = task.expert.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        raise ImportError(f"task {task.name!r}: expert {task.expert!r} does not exist")
    return cls(env, quality=quality, seed=seed)
