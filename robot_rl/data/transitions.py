"""Chunk-level transitions for offline RL (Q-chunking, CO-RFT) from stored episodes.

A transition starts at every frame t and executes the chunk a_t .. a_{t+h-1}::

    frame        t    t+1  ...  t+h-1 | t+h
    obs        [o(t-To+1) .. o(t)]    |              history at t (start-padded)
    action       a_t  a_t+1 ... a_t+h-1
    reward       r_t + g r_t+1 + ... + g^(h-1) r_t+h-1   (valid steps only)
    next_obs                          [.. o(t+h)]    history at t+h

The chunk is cut short (``n_steps < h``) at the episode's last frame or at the first frame
with ``terminated`` (the chunk wrapper's early stop). Then ``next_obs`` is the history at
the episode's last frame (the observation after the final action is not stored), the
missing actions repeat the last valid one with ``action_is_pad`` True, and
``done = terminated within the chunk``. A learner's target is
``reward + gamma**n_steps * (1 - done) * Q(next_obs)``; for a time-limit cut the bootstrap
from the last stored frame is an approximation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.sampler import EpisodeSource, _EpisodeWindows
from robot_rl.data.schema import StoreError
from robot_rl.data.store import EpisodeStore


class ChunkTransitionSampler(_EpisodeWindows):
    """Samples ``(obs, action chunk, discounted chunk reward, next_obs, done, n_steps)``.

    Batch shapes (B batch, To history, h chunk, A action dim)::

        obs[key], next_obs[key]  [B, To, ...]
        action                   [B, h, A]      action_is_pad  bool [B, h]
        reward                   float32 [B]    sum_{i < n_steps} gamma^i r_{t+i}
        done                     bool [B]       terminated within the chunk
        n_steps                  int64 [B]      valid steps, 1 <= n_steps <= h
    """

    def __init__(
        self,
        source: EpisodeSource,
        obs_keys: Sequence[str],
        n_obs_steps: int,
        chunk_size: int,
        gamma: float,
        *,
        episodes: Sequence[int] | np.ndarray | None = None,
        episode_ends: np.ndarray | None = None,
        action_key: str = K.ACTION,
        reward_key: str = K.REWARD,
        terminated_key: str = K.TERMINATED,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size}; a chunk holds at least one step")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma}; the discount must lie in (0, 1]")
        _require_keys(source, (reward_key, terminated_key))
        extra = [action_key, reward_key, terminated_key]
        super().__init__(source, obs_keys, extra, n_obs_steps, episodes, episode_ends)
        longest = int(self.episode_lengths.max())
        if chunk_size > longest:
            raise ValueError(
                f"chunk_size={chunk_size} is longer than every selected episode (longest: "
                f"{longest} frames), so no chunk could run in full; use chunk_size <= {longest}"
            )
        self.chunk_size = int(chunk_size)
        self.gamma = float(gamma)
        self._action = self._data[action_key]
        self._reward = self._data[reward_key].astype(np.float64)
        self._terminated = self._data[terminated_key].astype(bool)
        self._steps = np.arange(self.chunk_size)
        self._discounts = self.gamma ** self._steps.astype(np.float64)

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """Transitions starting at frames ``index`` ``[B]`` (of the loaded episodes)."""
        t = np.asarray(index, dtype=np.int64)
        last = self._last[t]
        steps = t[:, None] + self._steps
        in_episode = steps <= last[:, None]
        clipped = np.minimum(steps, last[:, None])
        terminal = self._terminated[clipped] & in_episode
        # Steps strictly after the first terminal one are not executed (early stop).
        after_terminal = (np.cumsum(terminal, axis=1) - terminal) > 0
        valid = in_episode & ~after_terminal
        n_steps = valid.sum(axis=1)
        reward = (self._reward[clipped] * self._discounts * valid).sum(axis=1)
        return {
            "obs": self._history(t),
            "action": self._action[np.minimum(steps, (t + n_steps - 1)[:, None])],
            "action_is_pad": ~valid,
            "reward": reward.astype(np.float32),
            "next_obs": self._history(np.minimum(t + n_steps, last)),
            "done": terminal.any(axis=1),
            "n_steps": n_steps.astype(np.int64),
        }


def _require_keys(source: EpisodeSource, needed: Sequence[str]) -> None:
    """Offline RL needs rewards and termination flags; say so before loading anything."""
    available = source.keys if isinstance(source, EpisodeStore) else tuple(source)
    missing = [key for key in needed if key not in available]
    if missing:
        name = str(source.path) if isinstance(source, EpisodeStore) else "the arrays"
        raise StoreError(
            f"{name} has no {missing} (keys: {sorted(available)}); chunk transitions need "
            "per-step 'reward' and 'terminated' (all False if episodes only end by time "
            "limit): relabel the episodes with a reward model, or collect them with rewards"
        )
