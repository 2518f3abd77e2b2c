"""The simplest baseline: a Gaussian MLP over the observation history that predicts a whole chunk.

Shapes (B batch, To history, H chunk, A action dim, G conditioning)::

    obs {key: [B, To, ...]} --ObservationEncoder--> [B, G] --MLP--> mean, log_std [B, H, A]

Trained by Gaussian negative log-likelihood (or MSE) on normalised actions; acts with the mean,
so it is deterministic by default. Same config, normaliser and checkpoint machinery as the
diffusion policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robot_rl.core.keys import ACTION
from robot_rl.core.policy import ChunkPolicy, Observation
from robot_rl.policies.checkpoint import register_policy
from robot_rl.policies.config import PolicyConfig, check_one_of, check_positive
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.policies.normalize import Normalizer
from robot_rl.policies.tensors import (
    batch_to_tensors,
    bind_policy,
    masked_mean,
    obs_to_tensors,
    to_env_actions,
)

BC_LOSSES = ("nll", "mse")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True, kw_only=True)
class GaussianBCPolicyConfig(PolicyConfig):
    """Gaussian MLP behaviour cloning over whole chunks."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """Widths of the MLP's hidden layers."""
    loss: str = "nll"
    """'nll': Gaussian negative log-likelihood (learns a std); 'mse': regression of the mean."""
    min_log_std: float = -5.0
    """Lower bound of the predicted log-std (normalised action units)."""
    max_log_std: float = 2.0
    """Upper bound of the predicted log-std."""
    stochastic: bool = False
    """Act with a sample of the Gaussian instead of its mean."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hidden_dims:
            raise ValueError("hidden_dims is empty: give at least one hidden layer width")
        check_positive(**{f"hidden_dims[{i}]": d for i, d in enumerate(self.hidden_dims)})
        check_one_of("loss", self.loss, BC_LOSSES)
        if not self.min_log_std < self.max_log_std:
            raise ValueError(
                f"min_log_std={self.min_log_std} must be < max_log_std={self.max_log_std}"
            )


@register_policy
class GaussianBCPolicy(ChunkPolicy, nn.Module):
    """obs ``{key: [B, To, ...]}`` -> chunk ``[B, H, A]`` in [-1, 1] (the Gaussian's mean)."""

    config_class = GaussianBCPolicyConfig
    uses_ema = False  # a plain regression net: no EMA in pretraining

    def __init__(self, config: GaussianBCPolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        bind_policy(self, config, normalizer)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(config.seed)
            self.obs_encoder = ObservationEncoder(config)
            layers: list[nn.Module] = []
            width = self.obs_encoder.out_dim
            for hidden in config.hidden_dims:
                layers += [nn.Linear(width, hidden), nn.Mish()]
                width = hidden
            self.trunk = nn.Sequential(*layers)
            self.head = nn.Linear(width, 2 * config.horizon * config.action_dim)
        self.to(device=config.torch_device, dtype=config.torch_dtype)
        self.noise_generator = torch.Generator(device=config.torch_device)
        self.noise_generator.manual_seed(config.seed)

    def seed(self, seed: int) -> None:
        """Reseed the generator used when ``stochastic`` is set."""
        self.noise_generator.manual_seed(seed)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw obs tensors ``{key: [B, To, ...]}`` -> (mean, log_std), each ``[B, H, A]``,
        in normalised action space."""
        used = {key: obs[key] for key in self.config.obs_shapes}
        dtype = self.config.torch_dtype
        normalised = {k: v.to(dtype) for k, v in self.normalizer.normalize(used).items()}
        out = self.head(self.trunk(self.obs_encoder(normalised)))
        mean, raw_log_std = out.view(-1, 2, self.horizon, self.action_dim).unbind(1)
        # Smooth squash into [min, max]: a hard clamp would stop the gradient at the bounds.
        lo, hi = self.config.min_log_std, self.config.max_log_std
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw_log_std) + 1.0)
        return mean, log_std

    def compute_loss(
        self, batch: Mapping[str, object], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampler batch (obs [B, To, ...], action [B, H, A]) -> scalar NLL or MSE.

        ``generator`` is unused (the loss is deterministic); it keeps the signature of every
        policy's ``compute_loss`` the same for the pretraining loop.
        """
        obs, action, is_pad = batch_to_tensors(batch, self.config)
        target = self.normalizer.normalize({ACTION: action})[ACTION].to(self.config.torch_dtype)
        mean, log_std = self(obs)
        if self.config.loss == "mse":
            per_dim = (mean - target) ** 2
        else:
            per_dim = 0.5 * ((target - mean) * torch.exp(-log_std)) ** 2 + log_std + _HALF_LOG_2PI
        return masked_mean(per_dim.mean(-1), is_pad, self.config.mask_padded_actions)

    @torch.no_grad()
    def sample_actions(self, obs: Observation | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw obs ``{key: [B, To, ...]}`` -> chunk ``[B, H, A]`` in [-1, 1] (torch)."""
        mean, log_std = self(obs_to_tensors(obs, self.config))
        if self.config.stochastic:
            noise = torch.randn(
                mean.shape, generator=self.noise_generator, device=mean.device, dtype=mean.dtype
            )
            mean = mean + noise * log_std.exp()
        return to_env_actions(self.normalizer, mean)

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        """obs ``{key: [B, To, ...]}`` numpy -> chunk ``[B, H, A]`` float32 in [-1, 1]."""
        with torch.inference_mode():
            return self.sample_actions(obs).cpu().numpy()
