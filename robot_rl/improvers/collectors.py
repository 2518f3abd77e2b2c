"""Where online improvers get their experience. A collector steps environments with the
learner's acting policy and hands back chunk transitions; the learner never sees how.

* :class:`VectorCollector`: a gymnasium vector environment in this process (synchronous, or
  asynchronous with one process per environment), one batched policy call per vector step.
* :class:`robot_rl.distributed.RayCollector`: Ray rollout workers, each owning a
  :class:`VectorCollector` and a copy of the acting policy, streaming to the learner.

Both return :class:`Transitions` and time what they do, so a run can say where its time went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Protocol

import gymnasium as gym
import numpy as np

from robot_rl.core import keys
from robot_rl.core.envs import final_observation, step_info, time_limit_timeouts
from robot_rl.improvers.steered import actor_input


class Actor(Protocol):
    """What a collector needs of a learner: batched acting on flat states (followed by the
    episode clock when the learner has ``reads_clock``)."""

    def act(self, state: np.ndarray, explore: bool, warmup: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(stored_action [B, D], executed_chunk [B, Ta, A])`` for flat states ``[B, O]``."""
        ...


@dataclass
class Transitions:
    """A batch of chunk transitions, one row each; ``done`` marks the last chunk of an episode
    (terminated or truncated), ``timeout`` one that ran out the task's time limit (truncated,
    not terminated, by an environment whose truncation is that limit) and ``env_id`` the
    sub-environment that produced the row. ``discount`` is ``gamma^steps * (1 - terminated)``;
    whether a timeout also ends the return is the learner's choice."""

    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_state: np.ndarray
    discount: np.ndarray
    steps: np.ndarray
    done: np.ndarray
    success: np.ndarray
    env_id: np.ndarray
    timeout: np.ndarray

    def __len__(self) -> int:
        return len(self.reward)

    @property
    def env_steps(self) -> int:
        return int(self.steps.sum())

    def rows(self, index) -> Transitions:
        return Transitions(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        if not parts:
            raise ValueError("no transitions to concatenate")
        names = [f.name for f in fields(parts[0])]
        return Transitions(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


class VectorCollector:
    """Steps a vector environment whose ``step`` takes whole chunks (see
    :func:`robot_rl.eval.rollout.make_policy_env`) with one batched ``actor.act`` per step.

    ``timings`` accumulates seconds spent choosing chunks (``inference_s``: the actor and the
    base's denoising) and stepping the environments (``env_s``: physics, rendering, rewards).
    Timeouts are as :func:`robot_rl.core.envs.time_limit_timeouts` tells them."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int = 0):
        self.env, self.seed = env, seed
        self.num_envs = env.num_envs
        self._obs: dict[str, np.ndarray] | None = None
        self.timings = {"inference_s": 0.0, "env_s": 0.0}

    def collect(
        self, actor: Actor, warmup: bool, vector_steps: int = 1, gamma: float = 0.99
    ) -> Transitions:
        """``vector_steps`` steps of every environment; ``num_envs * vector_steps`` rows."""
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.seed)
        parts = []
        clock = getattr(actor, "reads_clock", False)
        for _ in range(vector_steps):
            state = actor_input(self._obs, clock)
            t0 = time.perf_counter()
            action, chunk = actor.act(state, explore=True, warmup=warmup)
            t1 = time.perf_counter()
            self._obs, reward, terminated, truncated, info = self.env.step(chunk)
            self.timings["inference_s"] += t1 - t0
            self.timings["env_s"] += time.perf_counter() - t1
            steps = step_info(info, keys.CHUNK_STEPS).astype(np.int64)
            parts.append(
                Transitions(
                    state=state,
                    action=action.astype(np.float32),
                    reward=np.asarray(reward, np.float32),
                    next_state=actor_input(final_observation(info, self._obs), clock),
                    discount=(gamma**steps * (1.0 - terminated)).astype(np.float32),
                    steps=steps,
                    done=np.logical_or(terminated, truncated),
                    success=step_info(info, keys.IS_SUCCESS, False).astype(bool),
                    env_id=np.arange(self.num_envs),
                    timeout=time_limit_timeouts(self.env, terminated, truncated),
                )
            )
        return Transitions.concat(parts)

    def close(self) -> None:
        self.env.close()
