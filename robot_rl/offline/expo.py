"""EXPO-style extraction: a light Gaussian edit policy on top of the base's chunks, trained to
raise Q, and used both for acting (best of base and edited chunks) and in the TD backup.

One joint update (K base samples cached per observation)::

    s'-candidates  {a'_k} U {edit(s', a'_k)}          -> critic.update (best-of-2K backup)
    edit policy    max  Q(s, edit(s, a_k)) - alpha log pi(edit | s, a_k)   over base samples at s
"""

from __future__ import annotations

import torch

from robot_rl.offline.config import ExpoConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.policies import EditPolicy


class ExpoLearner:
    """Owns the edit policy and its optimiser; updates it together with the critic."""

    def __init__(self, critic: ChunkCritic, cfg: ExpoConfig, seed: int = 0):
        self.critic, self.cfg = critic, cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.edit = EditPolicy(
                critic.obs_dim, critic.chunk_dim, cfg.hidden_dims, cfg.edit_scale
            )
        self.edit.actor.obs_norm.shift[: critic.obs_dim] = critic.q.obs_norm.shift
        self.edit.actor.obs_norm.scale[: critic.obs_dim] = critic.q.obs_norm.scale
        self.opt = torch.optim.Adam(self.edit.parameters(), lr=cfg.lr)
        self.updates = 0

    def edited(self, obs: torch.Tensor, chunks: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """obs ``[B, O]``, chunks ``[B, K, C]`` -> edited chunks ``[B, K, C]`` (no gradient)."""
        b, k, c = chunks.shape
        with torch.no_grad():
            out, _ = self.edit(obs.repeat_interleave(k, 0), chunks.reshape(b * k, c), deterministic)
        return out.reshape(b, k, c)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        next_edits = self.edited(batch["next_obs"], batch["next_candidates"], deterministic=True)
        augmented = {
            **batch,
            "next_candidates": torch.cat([batch["next_candidates"], next_edits], dim=1),
        }
        metrics = self.critic.update(augmented)
        metrics.update(self._update_edit(batch["obs"], batch["candidates"]))
        self.updates += 1
        return metrics

    def _update_edit(self, obs: torch.Tensor, candidates: torch.Tensor) -> dict[str, float]:
        candidates = candidates[:, : self.cfg.samples]
        b, k, c = candidates.shape
        flat_obs = obs.repeat_interleave(k, 0)
        edited, log_prob = self.edit(flat_obs, candidates.reshape(b * k, c))
        q = self.critic.q(flat_obs, edited).mean(dim=0)
        loss = (self.cfg.alpha * log_prob - q).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.critic.q.zero_grad(set_to_none=True)  # the actor's backward also reached the heads
        return {"edit_loss": loss.item(), "edit_q": q.mean().item()}
