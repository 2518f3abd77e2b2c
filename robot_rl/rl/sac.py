"""Soft actor-critic, readable top to bottom: twin (or ensemble) LayerNorm critics with a
min backup, a tanh-Gaussian actor, automatic entropy tuning, and an update-to-data ratio.

It acts in [-1, 1]^A. DSRL uses it with the diffusion policy's latent noise as the action; on
its own it is the action-space baseline.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from robot_rl.rl.networks import CriticEnsemble, TanhGaussianActor
from robot_rl.threads import learner_threads


@dataclass
class SACConfig:
    """Hyper-parameters of SAC."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """widths of the actor's and critics' hidden layers"""
    n_critics: int = 2
    """critic heads; the TD target takes the minimum over them"""
    layer_norm: bool = True
    """LayerNorm in every hidden layer"""
    actor_lr: float = 3e-4
    """actor learning rate"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    alpha_lr: float = 3e-4
    """entropy temperature learning rate"""
    init_alpha: float = 0.1
    """initial entropy temperature"""
    target_entropy_scale: float = 0.5
    """target entropy = -scale * action_dim"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    batch_size: int = 256
    """transitions per update"""
    utd_ratio: int = 1
    """critic updates per environment transition collected"""
    actor_every: int = 1
    """actor/temperature update every this many critic updates"""
    device: str = "cpu"
    """torch device"""

    def __post_init__(self) -> None:
        if self.n_critics < 2:
            raise ValueError(f"n_critics must be >= 2 for the min backup, got {self.n_critics}")
        if self.utd_ratio < 1 or self.batch_size < 1 or self.actor_every < 1:
            raise ValueError("utd_ratio, batch_size and actor_every must be >= 1")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        self.hidden_dims = tuple(self.hidden_dims)


class SAC(nn.Module):
    """SAC over flat observations ``[B, O]`` and actions ``[B, A]`` in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig | None = None):
        super().__init__()
        cfg = cfg or SACConfig()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden_dims, cfg.layer_norm)
        self.critic = CriticEnsemble(
            obs_dim, act_dim, cfg.hidden_dims, cfg.n_critics, cfg.layer_norm
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(cfg.init_alpha)).log())
        self.target_entropy = -cfg.target_entropy_scale * act_dim
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.updates = 0
        self.to(cfg.device)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action, _ = self.actor(obs.to(self.cfg.device), deterministic)
        return action

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One critic step (and, every ``actor_every``, one actor and temperature step).

        ``batch``: obs ``[B, O]``, action ``[B, A]``, reward ``[B]``, next_obs ``[B, O]``,
        discount ``[B]`` (gamma^steps, zero at termination). Small networks update on one
        CPU thread (:func:`robot_rl.threads.learner_threads`: 2.4x faster at 128x128)."""
        with learner_threads(len(batch["obs"]), self.cfg.hidden_dims, self.cfg.device):
            return self._update(batch)

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        # TD target: min over target critics at the next action, minus the entropy term
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch["next_obs"])
            next_q = self.critic_target(batch["next_obs"], next_action).min(dim=0).values
            target = batch["reward"] + batch["discount"] * (next_q - self.alpha * next_log_prob)
        q = self.critic(batch["obs"], batch["action"])
        critic_loss = F.mse_loss(q, target.expand_as(q))
        check_finite("critic loss", critic_loss)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        _polyak(self.critic, self.critic_target, self.cfg.tau)
        self.updates += 1
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q.mean().item()}
        if self.updates % self.cfg.actor_every == 0:
            metrics.update(self.update_actor(batch["obs"]))
        return metrics

    def update_actor(self, obs: torch.Tensor) -> dict[str, float]:
        """Maximise the mean critic value plus entropy; tune the temperature to the target."""
        action, log_prob = self.actor(obs)
        q = self.critic(obs, action).mean(dim=0)
        actor_loss = (self.alpha * log_prob - q).mean()
        check_finite("actor loss", actor_loss)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {
            "actor_loss": actor_loss.item(),
            "alpha": self.alpha.item(),
            "entropy": -log_prob.mean().item(),
        }

    def optimizer_state(self) -> dict:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "updates": self.updates,
        }


def check_finite(name: str, value: torch.Tensor) -> None:
    """Stops training at the first non-finite loss, before it reaches the weights."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(
            f"{name} is {value.item()}: training diverged; lower the learning rates or the "
            "reward scale. The last good checkpoint is kept."
        )


@torch.no_grad()
def _polyak(source: nn.Module, target: nn.Module, tau: float) -> None:
    for p, tp in zip(source.parameters(), target.parameters(), strict=False):
        tp.lerp_(p, tau)
