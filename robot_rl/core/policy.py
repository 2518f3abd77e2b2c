"""Chunk policies: observations in, action chunks out.

Shapes (B batch, To observation history, H predicted chunk, Ta executed steps, A action dim)::

    obs: {key: [B, To, ...]}  ->  predict_chunk  ->  chunk [B, H, A], float32 in [-1, 1]
                                  act            ->  chunk[:, :Ta]

Timeline of one decision (To=2, H=8, Ta=4)::

    obs       |o(t-1)|o(t)|
    predicted        |a(t) a(t+1) a(t+2) a(t+3) a(t+4) ... a(t+7)|
    executed         |a(t) a(t+1) a(t+2) a(t+3)|  -> next decision at t+4

A *steerable* chunk policy also takes the latent noise it denoises, ``noise: [B, *noise_shape]``,
and is deterministic given it (DDIM with eta=0, or a flow ODE). Latent-noise steering (DSRL)
needs nothing else from a policy.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

Observation = Mapping[str, np.ndarray]


class ChunkPolicy(abc.ABC):
    """A policy that returns action chunks for a batch of observation histories."""

    action_dim: int
    horizon: int  # H, steps predicted per call
    n_action_steps: int  # Ta <= H, steps executed per call
    n_obs_steps: int  # To, observation history the policy reads
    # True: it also reads obs["episode_clock"], which make_policy_env then adds (EpisodeClock)
    reads_clock: bool = False

    @abc.abstractmethod
    def predict_chunk(self, obs: Observation) -> np.ndarray:
        """obs ``{key: [B, To, ...]}`` -> chunk ``[B, H, A]`` float32 in [-1, 1]."""

    def act(self, obs: Observation) -> np.ndarray:
        """The executed part of the chunk, ``[B, Ta, A]``."""
        return self.predict_chunk(obs)[:, : self.n_action_steps]

    def reset(self) -> None:  # noqa: B027 - optional hook for stateful policies
        """Called at episode starts; stateless policies ignore it."""


class SteerableChunkPolicy(ChunkPolicy):
    """A chunk policy that is a deterministic function of (observation, initial noise)."""

    noise_shape: tuple[int, ...]

    @abc.abstractmethod
    def predict_chunk(self, obs: Observation, noise: np.ndarray | None = None) -> np.ndarray:
        """obs ``{key: [B, To, ...]}``, noise ``[B, *noise_shape]`` or None (drawn from N(0, I))
        -> chunk ``[B, H, A]``. The same (obs, noise) always gives the same chunk."""

    def act(self, obs: Observation, noise: np.ndarray | None = None) -> np.ndarray:
        return self.predict_chunk(obs, noise)[:, : self.n_action_steps]


def batch_size(obs: Observation) -> int:
    """The batch size of an observation batch, checking every key agrees."""
    sizes = {key: np.shape(value)[0] for key, value in obs.items()}
    if not sizes:
        raise ValueError("empty observation: expected at least one key such as 'state'")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"observation keys disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def check_noise(noise: np.ndarray, batch: int, noise_shape: tuple[int, ...]) -> np.ndarray:
    """Validate steering noise ``[B, *noise_shape]``; names the bad shape or value."""
    noise = np.asarray(noise, dtype=np.float32)
    expected = (batch, *noise_shape)
    if noise.shape != expected:
        raise ValueError(f"noise has shape {noise.shape}, the policy expects {expected}")
    if not np.all(np.isfinite(noise)):
        raise ValueError("noise contains NaN or inf; steering noise must be finite")
    return noise
