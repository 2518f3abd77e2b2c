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


class CriticEnsemble(nn.Module):
    """``n`` independent Q heads: (obs ``[B, O]``, action ``[B, A]``) -> ``[n, B]``."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], n: int = 2, layer_norm: bool = True
    ):
        super().__init__()
        self.heads = nn.ModuleList(mlp(obs_dim + act_dim, hidden, 1, layer_norm) for _ in range(n))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])


class TanhGaussianActor(nn.Module):
    """obs ``[B, O]`` -> action ``[B, A]`` in (-1, 1) and its log-probability ``[B]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], layer_norm: bool = True):
        super().__init__()
        self.trunk = mlp(obs_dim, hidden, 2 * act_dim, layer_norm)
        self.act_dim = act_dim

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        std = log_std.exp()
        pre_tanh = mean if deterministic else mean + std * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        # Gaussian log-density, then the tanh change of variables in a numerically stable form
        log_prob = (
            -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return action, log_prob
