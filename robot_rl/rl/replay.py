"""A preallocated replay buffer of flat transitions, kept as torch tensors.

Each transition is (obs ``[O]``, action ``[A]``, reward, next_obs ``[O]``, discount), where
``discount = gamma ** steps_taken * (1 - terminated)`` already folds in chunk length and
termination, so chunk-level and step-level learners share one TD target.
:func:`learner_discount` also ends the return at a time limit, unless the learner bootstraps
through timeouts.
"""

from __future__ import annotations

import numpy as np
import torch


def learner_discount(
    discount: np.ndarray, timeout: np.ndarray, bootstrap_timeouts: bool
) -> np.ndarray:
    """The discount a critic's target uses: the collector's ``gamma^k * (1 - terminated)``,
    and 0 where an episode ran out its time limit (``timeout``) unless timeouts bootstrap."""
    if bootstrap_timeouts:
        return np.asarray(discount, np.float32)
    return np.where(timeout, 0.0, discount).astype(np.float32)


class ReplayBuffer:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: str = "cpu"):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self.obs = torch.zeros(capacity, obs_dim)
        self.action = torch.zeros(capacity, act_dim)
        self.reward = torch.zeros(capacity)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.discount = torch.zeros(capacity)
        self.size = self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, discount) -> None:
        """Adds a batch of transitions (numpy or torch, leading dimension B)."""
        data = [
            torch.as_tensor(np.asarray(x), dtype=torch.float32)
            for x in (obs, action, reward, next_obs, discount)
        ]
        n = data[0].shape[0]
        if not all(torch.isfinite(x).all() for x in data):
            raise ValueError(
                "replay: refusing a transition with NaN/inf (check rewards and observations)"
            )
        idx = (self.pos + torch.arange(n)) % self.capacity
        for store, x in zip(
            (self.obs, self.action, self.reward, self.next_obs, self.discount), data, strict=False
        ):
            store[idx] = x.reshape(store[idx].shape)
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if self.size == 0:
            raise ValueError("replay: cannot sample from an empty buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        batch = {
            "obs": self.obs[idx],
            "action": self.action[idx],
            "reward": self.reward[idx],
            "next_obs": self.next_obs[idx],
            "discount": self.discount[idx],
        }
        return {k: v.to(self.device) for k, v in batch.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        n = self.size
        return {
            "obs": self.obs[:n],
            "action": self.action[:n],
            "reward": self.reward[:n],
            "next_obs": self.next_obs[:n],
            "discount": self.discount[:n],
            "pos": torch.tensor(self.pos),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        n = state["obs"].shape[0]
        if n > self.capacity:
            raise ValueError(
                f"replay: saved buffer has {n} transitions, capacity is {self.capacity}"
            )
        for key in ("obs", "action", "reward", "next_obs", "discount"):
            getattr(self, key)[:n] = state[key]
        self.size, self.pos = n, int(state["pos"])
