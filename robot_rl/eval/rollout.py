"""Run a chunk policy for N episodes on vectorised environments.

Each sub-environment runs a fixed quota of episodes (``ceil(N / n_envs)``, the last ones fewer),
so short episodes are not over-counted the way "first N to finish" would count them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.envs import (
    ChunkedEnv,
    EpisodeClock,
    ObservationHistory,
    make_vector_env,
    step_info,
)
from robot_rl.core.policy import ChunkPolicy
from robot_rl.core.task import TaskConfig, make_env
from robot_rl.eval.stats import wilson_interval


@dataclass
class EvalResult:
    """Outcome of an evaluation; ``success_ci95`` is the 95% Wilson interval."""

    episodes: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_return: float
    mean_length: float
    env_steps: int
    wall_s: float
    successes: list[bool] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        for key in ("successes", "returns", "lengths"):
            out.pop(key)
        out["success_ci95"] = list(self.success_ci95)
        return out


def make_policy_env(
    task: TaskConfig,
    policy: ChunkPolicy,
    gamma: float = 1.0,
    reward: Callable[[gym.Env], gym.Env] | None = None,
    **env_overrides,
):
    """One environment as a chunk policy sees it: history of To observations, Ta-step chunks.
    ``reward`` wraps the per-step environment first (e.g. :class:`ProgressReward`). A policy
    with ``reads_clock`` also gets the episode clock (:class:`EpisodeClock`)."""
    env = make_env(task, **env_overrides)
    if reward is not None:
        env = reward(env)
    if getattr(policy, "reads_clock", False):
        env = EpisodeClock(env)
    return ChunkedEnv(ObservationHistory(env, policy.n_obs_steps), policy.n_action_steps, gamma)


def stack_observations(obs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Single environments' observations -> one batch ``{key: [B, ...]}``."""
    return {key: np.stack([o[key] for o in obs]) for key in obs[0]}


def run_to_end(
    envs: list[gym.Env],
    obs: list[dict[str, np.ndarray]],
    live: list[int],
    act: Callable[[dict[str, np.ndarray], list[int]], np.ndarray],
    success: np.ndarray,
) -> None:
    """Steps the chunk environments ``envs[i]``, ``i`` in ``live``, until each episode ends,
    with one batched call ``act(observations of the live ones, live)`` -> chunks per step.
    Updates ``obs`` in place and ors each chunk's success into ``success[i]``. For episodes
    that start from different places (branched simulators, chosen resets), where a vector
    environment's autoreset would get in the way."""
    while live:
        chunks = act(stack_observations([obs[i] for i in live]), live)
        still = []
        for i, chunk in zip(live, chunks, strict=True):
            obs[i], _, terminated, truncated, info = envs[i].step(chunk)
            success[i] |= bool(info.get(keys.IS_SUCCESS, False))
            if not (terminated or truncated):
                still.append(i)
        live = still


def evaluate(
    policy: ChunkPolicy,
    task: TaskConfig,
    episodes: int = 100,
    n_envs: int = 16,
    seed: int = 10_000,
    progress: bool = True,
    **env_overrides,
) -> EvalResult:
    """Success rate, return and length of ``policy`` over ``episodes`` episodes of ``task``."""
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes}, {n_envs}")
    n_envs = min(n_envs, episodes)
    quota = _quotas(episodes, n_envs)
    env = make_vector_env([lambda: make_policy_env(task, policy, **env_overrides)] * n_envs)
    start = time.perf_counter()
    successes: list[bool] = []
    returns: list[float] = []
    lengths: list[int] = []
    try:
        obs, _ = env.reset(seed=seed)
        policy.reset()
        ep_return = np.zeros(n_envs)
        ep_length = np.zeros(n_envs, dtype=np.int64)
        ep_success = np.zeros(n_envs, dtype=bool)
        done_count = np.zeros(n_envs, dtype=np.int64)
        env_steps = 0
        bar = tqdm(total=episodes, desc=f"eval {task.name}", disable=not progress, leave=False)
        while (done_count < quota).any():
            chunk = policy.act(obs)
            obs, reward, terminated, truncated, info = env.step(chunk)
            steps = step_info(info, keys.CHUNK_STEPS).astype(np.int64)
            env_steps += int(steps[done_count < quota].sum())
            ep_return += reward
            ep_length += steps
            ep_success |= step_info(info, keys.IS_SUCCESS, False).astype(bool)
            for i in np.flatnonzero(terminated | truncated):
                if done_count[i] < quota[i]:
                    successes.append(bool(ep_success[i]))
                    returns.append(float(ep_return[i]))
                    lengths.append(int(ep_length[i]))
                    done_count[i] += 1
                    bar.update(1)
                ep_return[i], ep_length[i], ep_success[i] = 0.0, 0, False
        bar.close()
    finally:
        env.close()
    wins = int(sum(successes))
    return EvalResult(
        episodes=len(successes),
        success_rate=wins / len(successes),
        success_ci95=wilson_interval(wins, len(successes)),
        mean_return=float(np.mean(returns)),
        mean_length=float(np.mean(lengths)),
        env_steps=env_steps,
        wall_s=time.perf_counter() - start,
        successes=successes,
        returns=returns,
        lengths=lengths,
    )


def _quotas(episodes: int, n_envs: int) -> np.ndarray:
    base = math.ceil(episodes / n_envs)
    quota = np.full(n_envs, base, dtype=np.int64)
    quota[: base * n_envs - episodes] -= 1  # drop the surplus from the first envs
    return quota
