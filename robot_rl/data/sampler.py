"""Training windows from episodes: observation history + action chunk, padded at the edges.

Shapes (B batch, To = ``n_obs_steps``, H = ``horizon``, A action dim)::

    obs[key]       [B, To, ...]   frames t-To+1 .. t
    action         [B, H, A]      actions t .. t+H-1
    action_is_pad  [B, H]         True where t+k ran past the episode's last frame

Timeline of the window at t = 1 of a 4-frame episode (frames 0..3), To = 3, H = 5::

    frame       -1    0    1    2    3  |  4    5
    obs        [o0]  o0   o1            |              o(-1) is o0 repeated (start pad)
    action                a1   a2   a3  | [a3] [a3]    past the end: a3 repeated, pad=True
    is_pad                F    F    F   |  T    T

Every frame of every episode starts a window (diffusion_policy's convention), so a store of N
frames gives N windows. The arrays are loaded into memory once; a batch is a few vectorised
fancy-indexing operations, with no Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.schema import StoreError
from robot_rl.data.store import EpisodeStore

EpisodeSource = EpisodeStore | Mapping[str, np.ndarray]
"""A store, or in-memory ``{key: [N, ...]}`` arrays (then ``episode_ends`` is required)."""


def load_episodes(
    source: EpisodeSource,
    keys: Sequence[str],
    episodes: Sequence[int] | np.ndarray | None = None,
    episode_ends: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The frames of ``episodes`` (all by default, in the given order) for ``keys``.

    Returns ``({key: [N', ...]}, ends int64 [E'])`` where ``ends`` are the exclusive
    cumulative ends of the selected episodes inside the returned arrays.
    """
    if isinstance(source, EpisodeStore):
        if episode_ends is not None:
            raise ValueError("episode_ends is read from the store; pass it only with arrays")
        available, all_ends = source.keys, source.episode_ends
        name = str(source.path)
    else:
        if episode_ends is None:
            raise ValueError("in-memory arrays need episode_ends (int [E], exclusive ends)")
        available, all_ends, name = tuple(source), np.asarray(episode_ends, np.int64), "arrays"
    missing = [key for key in keys if key not in available]
    if missing:
        raise StoreError(f"{name} has no {missing}; available keys: {sorted(available)}")
    n_all = len(all_ends)
    selected = np.arange(n_all) if episodes is None else np.asarray(episodes, np.int64).ravel()
    if len(selected) == 0:
        raise ValueError(f"no episodes selected from {name}; pass at least one episode index")
    if selected.min() < -n_all or selected.max() >= n_all:
        raise IndexError(f"episode indices {selected.tolist()[:8]}... out of range for {n_all}")
    selected = selected % n_all
    lengths = np.diff(all_ends, prepend=0)[selected]
    if isinstance(source, EpisodeStore):
        data = {key: source.read(key, selected) for key in keys}
    else:
        data = _select_in_memory(source, keys, all_ends, selected)
    return data, np.cumsum(lengths).astype(np.int64)


def _select_in_memory(
    source: Mapping[str, np.ndarray], keys: Sequence[str], ends: np.ndarray, selected: np.ndarray
) -> dict[str, np.ndarray]:
    if len(ends) == 0 or ends[0] <= 0 or np.any(np.diff(ends) <= 0):
        raise ValueError(f"episode_ends {ends.tolist()[:8]} must be strictly increasing from >= 1")
    arrays = {key: np.asarray(source[key]) for key in keys}
    for key, array in arrays.items():
        if len(array) != ends[-1]:
            raise ValueError(f"{key!r} has {len(array)} frames but episode_ends ends at {ends[-1]}")
    if np.array_equal(selected, np.arange(len(ends))):
        return arrays
    starts = ends - np.diff(ends, prepend=0)
    frames = np.concatenate([np.arange(starts[i], ends[i]) for i in selected])
    return {key: array[frames] for key, array in arrays.items()}


class _EpisodeWindows:
    """Shared machinery: loaded frames, per-frame episode bounds, observation histories."""

    def __init__(
        self,
        source: EpisodeSource,
        obs_keys: Sequence[str],
        extra_keys: Sequence[str],
        n_obs_steps: int,
        episodes: Sequence[int] | np.ndarray | None,
        episode_ends: np.ndarray | None,
    ) -> None:
        if isinstance(obs_keys, str) or not obs_keys:
            raise ValueError(f"obs_keys={obs_keys!r}; give a non-empty list such as ['state']")
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps={n_obs_steps}; the history holds at least one frame")
        self.obs_keys = tuple(obs_keys)
        self.n_obs_steps = int(n_obs_steps)
        keys = list(dict.fromkeys([*self.obs_keys, *extra_keys]))
        self._data, self.episode_ends = load_episodes(source, keys, episodes, episode_ends)
        lengths = np.diff(self.episode_ends, prepend=0)
        self.episode_lengths = lengths
        # Per frame: the first and last frame of its episode (both inclusive).
        self._first = np.repeat(self.episode_ends - lengths, lengths)
        self._last = np.repeat(self.episode_ends - 1, lengths)
        self._obs_offsets = np.arange(1 - self.n_obs_steps, 1)

    def __len__(self) -> int:
        """Number of windows (= frames of the selected episodes)."""
        return len(self._first)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    def _history(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Frames t-To+1 .. t per key, the episode's first frame repeated before its start."""
        index = np.maximum(t[:, None] + self._obs_offsets, self._first[t][:, None])
        return {key: self._data[key][index] for key in self.obs_keys}

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """``batch_size`` windows drawn uniformly with replacement; deterministic given rng."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng is {type(rng).__name__}; pass np.random.default_rng(seed)")
        return self.batch(rng.integers(0, len(self), size=batch_size))

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, Any]]:
        """Every window once, in order (episode by episode); the last batch may be smaller."""
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(len(self), start + batch_size)))


class WindowSampler(_EpisodeWindows):
    """(observation history, action chunk) windows for policy training; see module docstring.

    ``episodes`` picks a subset (train/val split, successes only: ``np.flatnonzero(
    store.episode_success)``); indices refer to the store's episodes.
    """

    def __init__(
        self,
        source: EpisodeSource,
        obs_keys: Sequence[str],
        n_obs_steps: int,
        horizon: int,
        *,
        episodes: Sequence[int] | np.ndarray | None = None,
        episode_ends: np.ndarray | None = None,
        action_key: str = K.ACTION,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon={horizon}; the action chunk holds at least one step")
        super().__init__(source, obs_keys, [action_key], n_obs_steps, episodes, episode_ends)
        self.horizon = int(horizon)
        self._action = self._data[action_key]
        self._steps = np.arange(self.horizon)

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """Windows starting at frames ``index`` ``[B]`` (of the loaded episodes).

        Returns ``{"obs": {key: [B, To, ...]}, "action": [B, H, A], "action_is_pad": [B, H]}``.
        """
        t = np.asarray(index, dtype=np.int64)
        steps = t[:, None] + self._steps
        last = self._last[t][:, None]
        return {
            "obs": self._history(t),
            "action": self._action[np.minimum(steps, last)],
            "action_is_pad": steps > last,
        }
