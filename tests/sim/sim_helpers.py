"""Helpers for the sim tests: task configs read from ``configs/task/*.yaml`` (so the config
path is exercised too) and an expert rollout loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from robot_rl.core import keys
from robot_rl.core.task import ExpertQuality, TaskConfig, make_env, make_expert

TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "task"
ROBOSUITE_ID = "robot_rl/RobosuiteLift-v0"
# The "state" Box is unbounded, as in gymnasium's own MuJoCo environments, which warn alike.
INF_BOUNDS_WARNING = "ignore:.*Box observation space (minimum|maximum) value is"


def load_task(name: str) -> TaskConfig:
    """The TaskConfig of ``configs/task/<name>.yaml``."""
    with open(TASK_CONFIG_DIR / f"{name}.yaml") as f:
        return TaskConfig(**yaml.safe_load(f))


def task_names_by_id() -> dict[str, str]:
    """env_id -> config name, for every YAML in ``configs/task``."""
    return {load_task(p.stem).env_id: p.stem for p in sorted(TASK_CONFIG_DIR.glob("*.yaml"))}


def run_expert(
    task: TaskConfig | str,
    episodes: int,
    quality: ExpertQuality | None = None,
    env: gym.Env | None = None,
    seed: int = 0,
    **env_kwargs: Any,
) -> tuple[list[bool], list[dict[str, Any]]]:
    """Roll the task's expert for ``episodes`` (episode i reset with ``seed + i``). Returns
    per-episode success and, per episode, the expert's attributes at its end (goal, mode)."""
    task = load_task(task) if isinstance(task, str) else task
    env = env if env is not None else make_env(task, **env_kwargs)
    expert = make_expert(task, env, quality or ExpertQuality(), seed=seed)
    successes, records = [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        expert.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            assert np.all(np.isfinite(obs[keys.STATE]))
            done = terminated or truncated
        successes.append(bool(info[keys.IS_SUCCESS]))
        records.append({k: v for k, v in vars(expert).items() if k != "env"})
    return successes, records
