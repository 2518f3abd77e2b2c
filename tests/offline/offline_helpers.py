"""Tiny stores and learners for the chunked offline RL tests, on the toy task's shapes
(state [2], action [1]; ToySteerable: horizon 4, executes 2, history 2)."""

from __future__ import annotations

import numpy as np

from robot_rl.data import EpisodeStore
from robot_rl.offline.config import ChunkCriticConfig, ChunkedOfflineConfig


def toy_episode(length: int, success: bool, action_dim: int = 1, rng=None, rewards=True):
    rng = rng or np.random.default_rng(length)
    x = np.cumsum(rng.uniform(0, 0.2, length)).astype(np.float32)
    episode = {
        "state": np.stack([x, np.arange(length, dtype=np.float32) / 20], axis=1),
        "action": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
        "is_success": np.zeros(length, bool),
        "terminated": np.zeros(length, bool),
    }
    if success:
        episode["is_success"][-1] = episode["terminated"][-1] = True
    if rewards:
        episode["reward"] = episode["is_success"].astype(np.float32) + 0.01
    return episode


def toy_store(path, lengths=(6, 9, 5, 12), successes=(True, False, True, False), **kw):
    store = EpisodeStore.create(path, task="toy", fps=10, source="test", robot="sim")
    rng = np.random.default_rng(0)
    for length, success in zip(lengths, successes, strict=True):
        store.append_episode(toy_episode(length, success, rng=rng, **kw))
    store.close()
    return path


def tiny_config(store, **overrides) -> ChunkedOfflineConfig:
    critic = ChunkCriticConfig(hidden_dims=(16, 16), samples=3, batch_size=16, updates=20)
    base = dict(
        store=[str(store)],
        critic=critic,
        eval_episodes=2,
        eval_every=10,
        checkpoint_every=10,
    )
    return ChunkedOfflineConfig(**{**base, **overrides})
