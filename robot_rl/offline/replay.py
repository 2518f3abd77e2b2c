"""Batches for the chunk critic: from the stored data (frames + cached base samples) and from
online rollouts (a ring buffer that keeps each transition's base samples beside it)."""

from __future__ import annotations

import torch

from robot_rl.offline.data import ChunkData

BATCH_KEYS = (
    "obs",
    "action",
    "reward",
    "discount",
    "next_obs",
    "candidates",
    "next_candidates",
    "mc_return",
)


class OfflineBatches:
    """Uniform batches of the stored transitions with their frames' cached base samples."""

    def __init__(self, data: ChunkData, candidates: torch.Tensor):
        if candidates.shape[:1] != data.frame_obs.shape[:1] or candidates.shape[2] != (
            data.chunk_dim
        ):
            raise ValueError(
                f"cached base samples have shape {tuple(candidates.shape)}, expected "
                f"[{data.frame_obs.shape[0]}, K, {data.chunk_dim}] for this data: the cache "
                "belongs to another store or base; delete it to resample"
            )
        self.data, self.candidates = data, candidates

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.data
        frame, next_frame = d.frame[idx], d.next_frame[idx]
        return {
            "obs": d.frame_obs[frame],
            "action": d.action[idx],
            "reward": d.reward[idx],
            "discount": d.discount[idx],
            "next_obs": d.frame_obs[next_frame],
            "candidates": self.candidates[frame],
            "next_candidates": self.candidates[next_frame],
            "mc_return": d.mc_return[idx],
        }

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.batch(torch.randint(0, len(self), (batch_size,), generator=generator))


class OnlineBatches:
    """A ring buffer of online chunk transitions. The Monte-Carlo return of an online
    transition is unknown when it is added; it is stored as 0, which leaves Cal-QL's bound
    inactive for it (values are only clipped below at 0 under sparse rewards)."""

    def __init__(self, obs_dim: int, chunk_dim: int, k: int, capacity: int):
        if capacity < 1:
            raise ValueError(f"online replay capacity must be >= 1, got {capacity}")
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.tensors = {
            "obs": torch.zeros(capacity, obs_dim),
            "action": torch.zeros(capacity, chunk_dim),
            "reward": torch.zeros(capacity),
            "discount": torch.zeros(capacity),
            "next_obs": torch.zeros(capacity, obs_dim),
            "candidates": torch.zeros(capacity, k, chunk_dim),
            "next_candidates": torch.zeros(capacity, k, chunk_dim),
            "mc_return": torch.zeros(capacity),
        }

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: torch.Tensor) -> None:
        missing = sorted(set(BATCH_KEYS) - set(batch) - {"mc_return"})
        if missing:
            raise KeyError(f"online transition lacks {missing}")
        n = batch["obs"].shape[0]
        if not all(torch.isfinite(torch.as_tensor(v)).all() for v in batch.values()):
            raise ValueError("online replay: refusing a transition with NaN/inf")
        idx = (self.pos + torch.arange(n)) % self.capacity
        for key, store in self.tensors.items():
            if key in batch:
                store[idx] = torch.as_tensor(batch[key], dtype=torch.float32).reshape(
                    store[idx].shape
                )
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.size == 0:
            raise ValueError("online replay: cannot sample from an empty buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return {k: v[idx] for k, v in self.tensors.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {k: v[: self.size] for k, v in self.tensors.items()}
        out["pos"] = torch.tensor(self.pos)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        n = state["obs"].shape[0]
        for key, store in self.tensors.items():
            store[:n] = state[key]
        self.size, self.pos = n, int(state["pos"])


def concat_batches(*batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in BATCH_KEYS}
