"""Chunk transitions for the chunk critic, read from one or more episode stores.

Every stored frame t starts one transition that executes the data's chunk a_t .. a_{t+h-1}
(h = the base policy's executed steps ``Ta``), built by :class:`ChunkTransitionSampler`::

    frame      t     t+1  ...  t+h-1 | t+h
    obs       [o(t-To+1) .. o(t)]    |                history at t  -> frame t
    chunk      a_t   a_t+1 ... a_t+h-1
    reward     r_t + g r_t+1 + ... + g^(h-1) r_t+h-1
    next_obs                         [.. o(t+h)]      history at t+h -> frame t+h

The observation histories are kept once per frame (``frame_obs``) and a transition points at
its two frames, so the base-policy samples cached per frame serve both the conservative term
(samples at s) and the best-of-N backup (samples at s'). Checks run before anything is
trained: rewards present for the chosen reward, the chunk no longer than every episode, one
action (and state) size across stores and matching the base policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.core import keys as K
from robot_rl.core.policy import SteerableChunkPolicy
from robot_rl.core.reward import RewardModel
from robot_rl.data import ChunkTransitionSampler, EpisodeStore, StoreError


@dataclass
class ChunkData:
    """Chunk transitions as tensors. F frames, T transitions (T == F offline), O = To * D
    flattened state history, C = h * A flattened executed chunk."""

    frame_obs: torch.Tensor  # [F, O]
    frame: torch.Tensor  # int64 [T], the transition's observation
    next_frame: torch.Tensor  # int64 [T], the observation after the chunk
    action: torch.Tensor  # [T, C], the data's executed chunk
    reward: torch.Tensor  # [T], discounted chunk reward
    discount: torch.Tensor  # [T], gamma^n_steps * (1 - terminated)
    mc_return: torch.Tensor  # [T], discounted return from frame t to the episode's end
    episode_success: torch.Tensor  # bool [T], the transition's episode succeeded
    # Per-step arrays (state, action) and episode ends, for window samplers (fine-tuning).
    steps: dict[str, np.ndarray]
    episode_ends: np.ndarray

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.frame_obs.shape[1])

    @property
    def chunk_dim(self) -> int:
        return int(self.action.shape[1])


def load_stores(paths: Sequence[str | Path]) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """Concatenate the stores' per-step arrays; returns (arrays, episode_ends, sources) where
    ``sources[i]`` names the store of episode i. Raises naming the store whose action or state
    size differs from the first store's, or a store without episodes."""
    arrays: dict[str, list[np.ndarray]] = {}
    ends: list[np.ndarray] = []
    sources: list[str] = []
    first: tuple[str, dict] | None = None
    offset = 0
    for path in paths:
        store = EpisodeStore.open(path)
        try:
            if store.n_episodes == 0:
                raise StoreError(f"{path}: the store has no episodes; collect some first")
            for key in (K.STATE, K.ACTION):
                if key not in store.keys:
                    raise StoreError(f"{path}: no {key!r} (keys: {list(store.keys)})")
            schema = {k: tuple(store.schema[k].shape) for k in (K.STATE, K.ACTION)}
            if first is None:
                first = (str(path), schema)
            for key, shape in schema.items():
                if shape != first[1][key]:
                    raise StoreError(
                        f"{path}: {key!r} has shape {shape} per step but {first[0]} has "
                        f"{first[1][key]}: episodes of mixed {key} dimension cannot be learnt "
                        "from together; convert them to one layout or drop one store"
                    )
            keys = [k for k in (K.STATE, K.ACTION, K.REWARD, K.IS_SUCCESS, K.TERMINATED)]
            for key in keys:
                if key in store.keys:
                    arrays.setdefault(key, []).append(store.read(key))
                else:
                    arrays.setdefault(key, []).append(None)  # type: ignore[arg-type]
            ends.append(store.episode_ends + offset)
            offset += store.n_frames
            sources += [str(path)] * store.n_episodes
        finally:
            store.close()
    merged = {}
    for key, parts in arrays.items():
        missing = [str(p) for p, a in zip(paths, parts, strict=True) if a is None]
        if missing:
            merged[key] = None
            merged[f"{key}__missing"] = missing  # type: ignore[assignment]
        else:
            merged[key] = np.concatenate(parts)
    return merged, np.concatenate(ends).astype(np.int64), sources


def step_rewards(
    arrays: dict, episode_ends: np.ndarray, reward: str, model: RewardModel | None
) -> np.ndarray:
    """Per-step rewards ``[N]`` for the chosen reward; names the stores lacking the key."""
    if reward == "sparse":
        if arrays.get(K.IS_SUCCESS) is None:
            raise StoreError(
                f"reward='sparse' needs per-step 'is_success', missing in "
                f"{arrays.get(K.IS_SUCCESS + '__missing')}; use reward='dense' (stored rewards) "
                "or reward='model' with a reward model (e.g. a success classifier)"
            )
        return arrays[K.IS_SUCCESS].astype(np.float32)
    if reward == "dense":
        if arrays.get(K.REWARD) is None:
            raise StoreError(
                f"reward='dense' needs per-step 'reward', missing in "
                f"{arrays.get(K.REWARD + '__missing')}; use reward='sparse' (needs is_success) "
                "or relabel with reward='model' and a reward model"
            )
        return arrays[K.REWARD].astype(np.float32)
    if model is None:
        raise ValueError("reward='model' needs a RewardModel instance")
    return relabel(arrays, episode_ends, model)


def relabel(
    arrays: dict, episode_ends: np.ndarray, model: RewardModel, block: int = 4096
) -> np.ndarray:
    """Rewards from a reward model: step t's reward is the model's on the observation the step
    reached, o(t+1); the store keeps no observation after an episode's last action, so its last
    step is scored on its last stored observation (an approximation)."""
    missing = [k for k in model.required_keys if arrays.get(k) is None]
    if missing:
        raise StoreError(
            f"{type(model).__name__} reads {missing}, which the stores do not hold "
            f"(they hold {sorted(k for k, v in arrays.items() if v is not None)})"
        )
    n = len(arrays[K.STATE])
    last = np.repeat(episode_ends - 1, np.diff(episode_ends, prepend=0))
    reached = np.minimum(np.arange(n) + 1, last)
    needed = model.required_keys or (K.STATE,)
    out = np.empty(n, np.float32)
    for start in range(0, n, block):
        idx = reached[start : start + block]
        out[start : start + block] = model({k: arrays[k][idx] for k in needed})
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{type(model).__name__} returned NaN/inf rewards on stored frames")
    return out


def build_chunk_data(
    paths: Sequence[str | Path],
    base: SteerableChunkPolicy,
    gamma: float,
    reward: str = "sparse",
    reward_model: RewardModel | None = None,
    bootstrap_timeouts: bool = False,
) -> ChunkData:
    """Load, check and turn the stores into chunk transitions for ``base``'s chunk size.
    A chunk that reaches the last frame of an episode ends the return there (discount 0)
    whether or not the episode terminated, unless ``bootstrap_timeouts``."""
    arrays, ends, sources = load_stores(paths)
    check_against_base(arrays, ends, sources, base)
    rewards = step_rewards(arrays, ends, reward, reward_model)
    terminated = arrays.get(K.TERMINATED)
    if terminated is None:  # stores from time-limited tasks: every episode ends by time
        terminated = np.zeros(len(rewards), bool)
    h, to = base.n_action_steps, base.n_obs_steps
    source = {K.STATE: arrays[K.STATE], K.ACTION: arrays[K.ACTION]}
    source.update({K.REWARD: rewards, K.TERMINATED: terminated})
    sampler = ChunkTransitionSampler(source, [K.STATE], to, h, gamma, episode_ends=ends)
    t = np.arange(len(sampler))
    batch = sampler.batch(t)
    n_frames = len(t)
    last = np.repeat(ends - 1, np.diff(ends, prepend=0))
    success = (
        arrays[K.IS_SUCCESS].astype(bool)
        if arrays.get(K.IS_SUCCESS) is not None
        else rewards > 0  # without success flags, any reward marks a "good" episode
    )
    episode_success = np.repeat(
        np.logical_or.reduceat(success, np.concatenate([[0], ends[:-1]])),
        np.diff(ends, prepend=0),
    )
    ends_return = batch["done"]
    if not bootstrap_timeouts:
        ends_return = ends_return | (t + batch["n_steps"] - 1 >= last)
    discount = gamma ** batch["n_steps"] * (1.0 - ends_return)
    return ChunkData(
        frame_obs=torch.from_numpy(batch["obs"][K.STATE].reshape(n_frames, -1).astype(np.float32)),
        frame=torch.from_numpy(t),
        next_frame=torch.from_numpy(np.minimum(t + batch["n_steps"], last)),
        action=torch.from_numpy(batch["action"].reshape(n_frames, -1).astype(np.float32)),
        reward=torch.from_numpy(batch["reward"]),
        discount=torch.from_numpy(discount.astype(np.float32)),
        mc_return=torch.from_numpy(_returns(rewards, ends, gamma)),
        episode_success=torch.from_numpy(episode_success),
        steps={K.STATE: arrays[K.STATE], K.ACTION: arrays[K.ACTION]},
        episode_ends=ends,
    )


def check_against_base(
    arrays: dict, ends: np.ndarray, sources: list[str], base: SteerableChunkPolicy
) -> None:
    """The base must write the stores' actions and read their state, and the chunk it
    executes must fit in at least one episode. Raises naming the store and the sizes."""
    if not isinstance(base, SteerableChunkPolicy):
        raise TypeError(
            f"{type(base).__name__} is not steerable: best-of-N and the critic's backup sample "
            "chunks from the base with given noise; use a diffusion or flow policy"
        )
    config = getattr(base, "config", None)
    reads = sorted(getattr(config, "obs_shapes", {K.STATE: None}))
    if reads != [K.STATE]:
        raise ValueError(
            f"the base policy reads {reads}; chunked offline RL caches base samples per stored "
            "frame from 'state' only, so it needs a state-based base policy"
        )
    action_dim = arrays[K.ACTION].shape[1]
    if base.action_dim != action_dim:
        raise ValueError(
            f"the stores hold {action_dim}-d actions ({sources[0]}), the base policy writes "
            f"{base.action_dim}-d: was the base trained on another task?"
        )
    state_shape = tuple(config.obs_shapes[K.STATE]) if config is not None else None
    if state_shape is not None and tuple(arrays[K.STATE].shape[1:]) != state_shape:
        raise ValueError(
            f"the stores hold state of shape {arrays[K.STATE].shape[1:]} ({sources[0]}), the "
            f"base policy reads {state_shape}"
        )
    lengths = np.diff(ends, prepend=0)
    h = base.n_action_steps
    if h > lengths.max():
        longest = int(np.argmax(lengths))
        raise ValueError(
            f"the chunk ({h} executed steps of the base) is longer than every episode: the "
            f"longest is episode {longest} of {sources[longest]} with {lengths[longest]} steps; "
            f"use a base with n_action_steps <= {lengths.max()} or longer episodes"
        )


def _returns(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return from every step to its episode's end (no bootstrap)."""
    out = np.zeros(len(rewards), np.float64)
    start = 0
    for end in ends:
        running = 0.0
        for i in range(end - 1, start - 1, -1):
            running = rewards[i] + gamma * running
            out[i] = running
        start = end
    return out.astype(np.float32)


@torch.no_grad()
def sample_candidates(
    base: SteerableChunkPolicy,
    frame_obs: torch.Tensor,
    n: int,
    seed: int,
    batch: int = 4096,
    progress: bool = True,
) -> torch.Tensor:
    """``n`` executed chunks of the base per frame, ``[F, n, C]``: N(0, I) noise seeded by
    ``seed``, batched through the base (chunks ``batch`` at a time)."""
    rng = np.random.default_rng(seed)
    f = frame_obs.shape[0]
    to, h = base.n_obs_steps, base.n_action_steps
    out = torch.empty(f, n, h * base.action_dim)
    per_call = max(1, batch // n)
    bar = tqdm(total=f, desc="base samples", disable=not progress, unit="obs")
    for start in range(0, f, per_call):
        obs = frame_obs[start : start + per_call].numpy()
        b = obs.shape[0]
        state = np.repeat(obs.reshape(b, to, -1), n, axis=0)
        noise = rng.standard_normal((b * n, *base.noise_shape)).astype(np.float32)
        chunks = base.predict_chunk({K.STATE: state}, noise)[:, :h]
        out[start : start + b] = torch.from_numpy(np.ascontiguousarray(chunks)).reshape(b, n, -1)
        bar.update(b)
    bar.close()
    return out
