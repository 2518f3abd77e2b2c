"""Numpy <-> policy tensors: observations and sampler batches in, environment actions out.

Errors name the key, the shape received and the shape expected, so a mismatch between a
dataset, an environment wrapper and a policy config is found at the first call, not as a
broadcasting surprise inside a convolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from robot_rl.core.keys import ACTION, is_image_key
from robot_rl.core.policy import Observation, check_noise
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.normalize import Normalizer

ACTION_IS_PAD = "action_is_pad"
OBS = "obs"


def obs_to_tensors(
    obs: Observation | Mapping[str, torch.Tensor], config: PolicyConfig
) -> dict[str, torch.Tensor]:
    """obs ``{key: [B, To, *shape]}`` (numpy or torch, raw) -> raw tensors on the config's device.

    Keys the config does not read are ignored (an environment may offer more cameras than a
    policy uses). Images keep their dtype (uint8); vectors become float32.
    """
    out: dict[str, torch.Tensor] = {}
    batch = None
    for key, shape in config.obs_shapes.items():
        if key not in obs:
            raise KeyError(
                f"observation lacks {key!r} (has {sorted(obs)}); the policy config reads "
                f"{sorted(config.obs_shapes)}"
            )
        value = obs[key]
        expected = (config.n_obs_steps, *shape)
        if tuple(value.shape[1:]) != expected or len(value.shape) != len(expected) + 1:
            raise ValueError(
                f"observation {key!r} has shape {tuple(value.shape)}, the policy expects "
                f"[B, {', '.join(map(str, expected))}] (B batch, To={config.n_obs_steps} history)"
            )
        if batch is not None and value.shape[0] != batch:
            raise ValueError(
                f"observation keys disagree on the batch size at {key!r}: "
                f"{value.shape[0]} vs {batch}"
            )
        batch = value.shape[0]
        tensor = _as_tensor(value)
        if not is_image_key(key) and tensor.dtype != torch.float32:
            tensor = tensor.float()
        out[key] = tensor.to(config.torch_device, non_blocking=True)
    return out


def _as_tensor(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    value = np.ascontiguousarray(value)
    if not value.flags.writeable:  # zarr / broadcast views: torch warns on read-only memory
        value = value.copy()
    return torch.from_numpy(value)


def batch_to_tensors(
    batch: Mapping[str, object], config: PolicyConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Sampler batch -> (raw obs tensors, raw actions [B, H, A], action_is_pad bool [B, H]).

    ``batch = {"obs": {key: [B, To, ...]}, "action": [B, H, A], "action_is_pad": [B, H]}``;
    ``action_is_pad`` may be absent (no padding).
    """
    for name in (OBS, ACTION):
        if name not in batch:
            raise KeyError(
                f"batch lacks {name!r} (has {sorted(batch)}); expected the "
                "WindowSampler format {'obs', 'action', 'action_is_pad'}"
            )
    obs = obs_to_tensors(batch[OBS], config)  # type: ignore[arg-type]
    action = torch.as_tensor(np.asarray(batch[ACTION], dtype=np.float32))
    b = next(iter(obs.values())).shape[0]
    expected = (b, config.horizon, config.action_dim)
    if tuple(action.shape) != expected:
        raise ValueError(
            f"batch action has shape {tuple(action.shape)}, expected {expected} "
            "(B, horizon, action_dim)"
        )
    if ACTION_IS_PAD in batch:
        is_pad = torch.as_tensor(np.asarray(batch[ACTION_IS_PAD], dtype=bool))
        if tuple(is_pad.shape) != expected[:2]:
            raise ValueError(
                f"action_is_pad has shape {tuple(is_pad.shape)}, expected {expected[:2]}"
            )
    else:
        is_pad = torch.zeros(expected[:2], dtype=torch.bool)
    device = config.torch_device
    return obs, action.to(device), is_pad.to(device)


def masked_mean(per_step: torch.Tensor, is_pad: torch.Tensor, mask: bool) -> torch.Tensor:
    """Mean of per-step losses ``[B, H]``, leaving padded steps out when ``mask`` is set."""
    if not mask:
        return per_step.mean()
    keep = (~is_pad).to(per_step.dtype)
    # clamp: a batch made only of padding contributes 0 instead of NaN
    return (per_step * keep).sum() / keep.sum().clamp_min(1.0)


def check_normalizer(normalizer: Normalizer, config: PolicyConfig) -> None:
    """Raise KeyError naming the keys the config needs but the normaliser lacks."""
    missing = sorted(set(config.norm_modes) - set(normalizer.keys()))
    if missing:
        raise KeyError(
            f"the normaliser lacks statistics for {missing} (has {normalizer.keys()}); build it "
            f"with Normalizer.from_stats(stats, config.norm_modes) = {config.norm_modes}"
        )


def to_env_actions(normalizer: Normalizer, actions: torch.Tensor) -> torch.Tensor:
    """Model-space actions [B, H, A] -> the environment's action space, float32 clipped to [-1, 1].

    The dataset's actions are already in [-1, 1] for our environments, so this is close to the
    identity under 'limits' normalisation; the clip guards against statistics from a dataset
    whose actions exceed the environment's range.
    """
    return normalizer.unnormalize({ACTION: actions.float()})[ACTION].clamp_(-1.0, 1.0)


def check_noise_tensor(noise: torch.Tensor, batch: int, noise_shape: tuple[int, ...]) -> None:
    """Torch twin of robot_rl.core.policy.check_noise: ValueError naming a bad shape or value."""
    expected = (batch, *noise_shape)
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the policy expects {expected}")
    if not bool(torch.isfinite(noise).all()):
        raise ValueError("noise contains NaN or inf; steering noise must be finite")


def obs_and_noise(
    policy, obs: Observation, noise: np.ndarray | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A steerable policy's inputs as tensors on its device: checked observations and the noise
    ``[B, *noise_shape]``, checked, or drawn from N(0, I) with the policy's own generator."""
    obs_t = obs_to_tensors(obs, policy.config)
    b = next(iter(obs_t.values())).shape[0]
    device, dtype = policy.config.torch_device, policy.config.torch_dtype
    if noise is None:
        noise_t = torch.randn(
            (b, *policy.noise_shape), generator=policy.noise_generator, device=device, dtype=dtype
        )
    else:
        noise_t = torch.from_numpy(check_noise(noise, b, policy.noise_shape)).to(device, dtype)
    return obs_t, noise_t


def bind_policy(policy, config, normalizer) -> None:
    """The set-up every policy shares: check the normaliser covers the config's keys, keep
    config and normaliser (on the config's device), and expose the chunk-policy dimensions."""
    check_normalizer(normalizer, config)
    policy.config = config
    policy.normalizer = normalizer.to(config.torch_device)
    policy.action_dim = config.action_dim
    policy.horizon = config.horizon
    policy.n_obs_steps = config.n_obs_steps
    policy.n_action_steps = config.n_action_steps
