"""Observation encoders: normalised observation histories -> one conditioning vector per sample.

Shapes (B batch, To history, D state dims, F features per step)::

    {"state": [B, To, D], "image.<cam>": [B, To, H, W, 3] float in [0, 1]}  ->  [B, To * F]

Vector keys are concatenated per step (optionally through an MLP); each camera has its own small
CNN, trained from scratch (conv + GroupNorm + Mish, then spatial-softmax keypoints or average
pooling). Per-step features are concatenated over keys, then over the To history steps.
torchvision is deliberately not used: its compiled ops do not load on the project's CPU machines.
"""

from __future__ import annotations

import torch
from torch import nn

from robot_rl.policies.config import GROUP_NORM_GROUPS, PolicyConfig


class SpatialSoftmax(nn.Module):
    """Feature maps [N, K, h, w] -> expected (x, y) of each map's softmax, [N, 2K] in [-1, 1].

    Keypoints keep *where* things are, which global pooling throws away (Levine et al. 2016).
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij"
        )
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1))  # [hw, 2]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, k = features.shape[:2]
        attention = torch.softmax(features.flatten(2), dim=-1)  # [N, K, hw]
        return (attention @ self.grid).reshape(n, 2 * k)


class ImageEncoder(nn.Module):
    """One camera: images [N, H, W, 3] float in [0, 1] -> features [N, feature_dim]."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        feature_dim: int,
        pooling: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = image_shape[2]
        for i, c_out in enumerate(channels):
            # Halve the resolution in every layer but the last: cheap, and keypoints still get
            # an (H / 2^(n-1)) grid to be located on.
            stride = 2 if i < len(channels) - 1 else 1
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                nn.GroupNorm(GROUP_NORM_GROUPS, c_out),
                nn.Mish(),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():  # infer the feature map size instead of re-deriving conv arithmetic
            h, w = self.convs(torch.zeros(1, image_shape[2], *image_shape[:2])).shape[-2:]
        if pooling == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(h, w)
            pooled = 2 * c_in
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = c_in
        self.out = nn.Linear(pooled, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2) * 2.0 - 1.0  # channels first, centred on 0
        return self.out(self.pool(self.convs(x)))


class ObservationEncoder(nn.Module):
    """Normalised obs ``{key: [B, To, ...]}`` -> conditioning ``[B, To * feature_dim]``."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.low_dim_keys = config.low_dim_keys
        self.image_keys = config.image_keys
        state_dim = sum(config.obs_shapes[k][0] for k in self.low_dim_keys)
        self.state_mlp: nn.Module | None = None
        feature_dim = state_dim
        if self.low_dim_keys and config.state_encoder == "mlp":
            self.state_mlp = nn.Sequential(
                nn.Linear(state_dim, config.state_feature_dim),
                nn.Mish(),
                nn.Linear(config.state_feature_dim, config.state_feature_dim),
            )
            feature_dim = config.state_feature_dim
        # ModuleDict keys may not contain '.', so cameras are indexed by position.
        self.cameras = nn.ModuleList(
            ImageEncoder(
                config.obs_shapes[key],  # type: ignore[arg-type]
                config.image_channels,
                config.image_feature_dim,
                config.image_pooling,
            )
            for key in self.image_keys
        )
        feature_dim += len(self.image_keys) * config.image_feature_dim
        self.feature_dim = feature_dim  # F, per step
        self.out_dim = config.n_obs_steps * feature_dim  # To * F

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        b, to = obs[(self.low_dim_keys or self.image_keys)[0]].shape[:2]
        parts = []
        if self.low_dim_keys:
            state = torch.cat([obs[k] for k in self.low_dim_keys], dim=-1)  # [B, To, D]
            parts.append(state if self.state_mlp is None else self.state_mlp(state))
        for key, encoder in zip(self.image_keys, self.cameras, strict=True):
            images = obs[key].flatten(0, 1)  # the history shares one CNN: [B * To, H, W, 3]
            parts.append(encoder(images).view(b, to, -1))
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return features.flatten(1)  # [B, To * F]
