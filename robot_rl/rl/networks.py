"""Small networks shared by the learners: LayerNorm MLPs, a critic ensemble, a tanh-Gaussian
actor. One definition each, reused by SAC, DSRL and the chunk critics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, layer_norm: bool = True) -> nn.Sequential:
    """Linear -> (LayerNorm) -> ReLU blocks, then a linear head. LayerNorm keeps critics from
    over-extrapolating at high update-to-data ratios (Ball et al., 2023)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers.append(nn.Linear(last, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class InputNorm(nn.Module):
    """Fixed affine standardisation of observations, ``(obs - shift) / scale``.

    Robot states mix metres, radians and velocities whose spreads differ by orders of
    magnitude; a learner fits the statistics once (e.g. from warm-up rollouts) and they travel
    with the weights in every checkpoint. Identity until fitted."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, obs: torch.Tensor, min_std: float = 1e-3) -> None:
        """Sets the statistics from a batch ``[N, dim]``; near-constant features keep scale 1."""
        std = obs.std(dim=0)
        self.shift.copy_(obs.mean(dim=0))
        self.scale.copy_(torch.where(std > min_std, std, torch.ones_like(std)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.shift) / self.scale


class CriticEnsemble(nn.Module):
    """``n`` independent Q heads: (obs ``[B, O]``, action ``[B, A]``) -> ``[n, B]``."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], n: int = 2, layer_norm: bool = True
    ):
        super().__init__()
        self.obs_norm = InputNorm(obs_dim)
        self.heads = nn.ModuleList(mlp(obs_dim + act_dim, hidden, 1, layer_norm) for _ in range(n))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.obs_norm(obs), action], dim=-1)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])


class TanhGaussianActor(nn.Module):
    """obs ``[B, O]`` -> action ``[B, A]`` in (-1, 1) and its log-probability ``[B]``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        layer_norm: bool = True,
        init_std: float | None = None,
    ):
        super().__init__()
        self.obs_norm = InputNorm(obs_dim)
        self.trunk = mlp(obs_dim, hidden, 2 * act_dim, layer_norm)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if init_std is not None:
            self.start_as(init_std)

    def start_as(self, std: float) -> None:
        """Makes the initial policy state-independent: mean 0 and this pre-tanh std, by a
        near-zero head. DSRL starts so, so that its first actor behaves like the base policy
        with N(0, I) noise instead of collapsing onto the (often poor) zero noise."""
        log_std = math.log(std)
        if not LOG_STD_MIN < log_std < LOG_STD_MAX:
            raise ValueError(f"init std {std} is outside exp([{LOG_STD_MIN}, {LOG_STD_MAX}])")
        head = self.trunk[-1]
        with torch.no_grad():
            head.weight.mul_(1e-3)
            head.bias.zero_()
            unit = (log_std - LOG_STD_MIN) / (0.5 * (LOG_STD_MAX - LOG_STD_MIN)) - 1.0
            head.bias[self.act_dim :] = math.atanh(unit)

    def gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and bounded log-std ``[B, A]`` of the Gaussian before the tanh."""
        mean, log_std = self.trunk(self.obs_norm(obs)).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.gaussian(obs)
        std = log_std.exp()
        pre_tanh = mean if deterministic else mean + std * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        # Gaussian log-density, then the tanh change of variables in a numerically stable form
        log_prob = (
            -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return action, log_prob
