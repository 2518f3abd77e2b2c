"""Tiny policies and synthetic sampler batches for the policy tests (CPU, deterministic).

A plain module (not conftest.py) so tests can import its factories; the name is unique across
tests/ because the test folders are not packages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.policies import (
    DiffusionPolicy,
    DiffusionPolicyConfig,
    GaussianBCPolicy,
    GaussianBCPolicyConfig,
    Normalizer,
)

STATE_DIM, ACTION_DIM, HORIZON, N_OBS = 5, 3, 8, 2
IMAGE_SHAPE = (16, 16, 3)


def make_stats(config: Any) -> dict[str, dict[str, np.ndarray]]:
    """Statistics for every vector key and the action; state ranges differ per dimension."""
    stats = {}
    for key in config.low_dim_keys:
        d = config.obs_shapes[key][0]
        stats[key] = {
            "min": -np.arange(1, d + 1, dtype=np.float32),
            "max": np.arange(1, d + 1, dtype=np.float32),
            "mean": np.zeros(d, np.float32),
            "std": np.full(d, 0.5, np.float32),
        }
    a = config.action_dim
    stats["action"] = {"min": -np.ones(a, np.float32), "max": np.ones(a, np.float32)}
    return stats


def make_batch(config: Any, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
    """A sampler-format batch whose action chunk is a smooth function of the last state."""
    obs: dict[str, np.ndarray] = {}
    for key, shape in config.obs_shapes.items():
        if key.startswith("image."):
            obs[key] = rng.integers(0, 256, (batch_size, config.n_obs_steps, *shape), np.uint8)
        else:
            obs[key] = rng.uniform(-1, 1, (batch_size, config.n_obs_steps, *shape)).astype(
                np.float32
            )
    state = obs.get("state", np.zeros((batch_size, config.n_obs_steps, 1), np.float32))
    level = np.tanh(state[:, -1, : config.action_dim].sum(-1, keepdims=True))  # [B, 1]
    ramp = np.linspace(-0.3, 0.3, config.horizon, dtype=np.float32)[None, :, None]
    action = np.clip(level[:, None, :] + ramp, -1, 1) * np.ones(config.action_dim, np.float32)
    is_pad = np.zeros((batch_size, config.horizon), bool)
    is_pad[0, -2:] = True  # one window ends past its episode
    return {"obs": obs, "action": action.astype(np.float32), "action_is_pad": is_pad}


def make_config(config_class: type, images: bool = False, **fields: Any):
    """A small config of ``config_class`` on the shared test shapes (state, optionally one
    camera); ``fields`` add the model's own sizes or override the shared ones."""
    shapes: dict[str, tuple[int, ...]] = {"state": (STATE_DIM,)}
    if images:
        shapes["image.front"] = IMAGE_SHAPE
    shared = dict(
        obs_shapes=shapes,
        action_dim=ACTION_DIM,
        horizon=HORIZON,
        n_obs_steps=N_OBS,
        n_action_steps=4,
    )
    return config_class(**{**shared, **fields})


def diffusion_config(images: bool = False, **overrides: Any) -> DiffusionPolicyConfig:
    sizes = dict(
        down_dims=(16, 32), step_embed_dim=16, image_channels=(8, 16), image_feature_dim=16
    )
    return make_config(DiffusionPolicyConfig, images, **{**sizes, **overrides})


def bc_config(images: bool = False, **overrides: Any) -> GaussianBCPolicyConfig:
    sizes = dict(hidden_dims=(64, 64), image_channels=(8, 16), image_feature_dim=16)
    return make_config(GaussianBCPolicyConfig, images, **{**sizes, **overrides})


def build(config: Any) -> DiffusionPolicy | GaussianBCPolicy:
    cls = DiffusionPolicy if isinstance(config, DiffusionPolicyConfig) else GaussianBCPolicy
    return cls(config, Normalizer.from_stats(make_stats(config), config.norm_modes))
