"""The fields that every robot_rl policy config shares: what it reads, what it predicts, where.

Each policy has its own dataclass (``DiffusionPolicyConfig``, ``GaussianBCPolicyConfig``) that
extends :class:`PolicyConfig`; the checkpoint stores ``dataclasses.asdict(config)`` as JSON and
:meth:`PolicyConfig.from_dict` rebuilds it, naming unknown or missing fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import torch

from robot_rl.core.keys import ACTION, is_image_key
from robot_rl.policies.normalize import NORM_MODES

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
STATE_ENCODERS = ("identity", "mlp")
IMAGE_POOLINGS = ("spatial_softmax", "avg")
GROUP_NORM_GROUPS = 8  # GroupNorm groups everywhere; channel counts must be divisible by it


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Shared policy fields. Shapes: obs ``{key: [B, To, *shape]}`` -> chunk ``[B, H, A]``."""

    obs_shapes: dict[str, tuple[int, ...]]
    """Keys the policy reads, with per-step shapes: vectors (D,), 'image.<cam>' (H, W, 3)."""
    action_dim: int
    """A: action dimensions; actions live in [-1, 1] in the environment."""
    horizon: int = 16
    """H: action steps predicted per call (the chunk)."""
    n_obs_steps: int = 2
    """To: observation history the policy reads (the current step and To - 1 before it)."""
    n_action_steps: int = 8
    """Ta <= H: steps of the chunk executed before predicting again."""
    state_norm: str = "limits"
    """Normalisation of vector observations: 'limits' (min/max -> [-1, 1]) or 'gaussian'."""
    action_norm: str = "limits"
    """Normalisation of actions: 'limits' (min/max -> [-1, 1]) or 'gaussian'."""
    state_encoder: str = "identity"
    """Vector observations per step: 'identity' (concatenated as they are) or 'mlp'."""
    state_feature_dim: int = 64
    """Output width of the state MLP (used when state_encoder == 'mlp')."""
    image_channels: tuple[int, ...] = (16, 32, 32)
    """Channels of the per-camera CNN's conv layers (all but the last stride 2)."""
    image_pooling: str = "spatial_softmax"
    """How the CNN's last feature map becomes a vector: 'spatial_softmax' keypoints or 'avg'."""
    image_feature_dim: int = 64
    """Features per camera and step after the CNN."""
    mask_padded_actions: bool = False
    """Leave actions padded past an episode's end out of the loss (diffusion_policy keeps them)."""
    seed: int = 0
    """Seed of the weight initialisation and of the policy's own noise generator."""
    device: str = "cpu"
    """Torch device of the weights, e.g. 'cpu', 'cuda:0', 'mps'."""
    dtype: str = "float32"
    """Dtype of the weights and of the computation: 'float32', 'float64' or 'bfloat16'."""

    def __post_init__(self) -> None:
        # JSON and Hydra hand lists where tuples are meant; store tuples so configs compare equal.
        shapes = {str(k): tuple(int(d) for d in v) for k, v in dict(self.obs_shapes).items()}
        object.__setattr__(self, "obs_shapes", shapes)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        if not shapes:
            raise ValueError("obs_shapes is empty: give at least {'state': (D,)} or one camera")
        for key, shape in shapes.items():
            if is_image_key(key):
                if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
                    raise ValueError(f"obs_shapes[{key!r}] = {shape}: cameras are (H, W, 3)")
            elif len(shape) != 1 or shape[0] < 1:
                raise ValueError(f"obs_shapes[{key!r}] = {shape}: vector observations are (D,)")
        check_positive(
            action_dim=self.action_dim, horizon=self.horizon, n_obs_steps=self.n_obs_steps
        )
        check_positive(n_action_steps=self.n_action_steps, state_feature_dim=self.state_feature_dim)
        check_positive(image_feature_dim=self.image_feature_dim)
        if self.n_action_steps > self.horizon:
            raise ValueError(f"n_action_steps={self.n_action_steps} > horizon={self.horizon}")
        check_one_of("state_norm", self.state_norm, NORM_MODES)
        check_one_of("action_norm", self.action_norm, NORM_MODES)
        check_one_of("state_encoder", self.state_encoder, STATE_ENCODERS)
        check_one_of("image_pooling", self.image_pooling, IMAGE_POOLINGS)
        check_one_of("dtype", self.dtype, tuple(DTYPES))
        check_channels("image_channels", self.image_channels)
        torch.device(self.device)  # raises RuntimeError naming a malformed device string

    @property
    def low_dim_keys(self) -> list[str]:
        """Vector observation keys in the order their features are concatenated."""
        return sorted(k for k in self.obs_shapes if not is_image_key(k))

    @property
    def image_keys(self) -> list[str]:
        """Camera keys in the order their features are concatenated."""
        return sorted(k for k in self.obs_shapes if is_image_key(k))

    @property
    def norm_modes(self) -> dict[str, str]:
        """Normalisation mode of every key that needs statistics (vectors and the action)."""
        return {**{k: self.state_norm for k in self.low_dim_keys}, ACTION: self.action_norm}

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`; raises ValueError naming unknown or missing fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}"
            )
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(fields))
        if missing:
            raise ValueError(f"{cls.__name__} fields {missing} are required but missing")
        return cls(**fields)


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {allowed}")


def check_channels(name: str, channels: tuple[int, ...]) -> None:
    if not channels or any(c < 1 or c % GROUP_NORM_GROUPS for c in channels):
        raise ValueError(
            f"{name}={channels}: need at least one channel count, each a positive multiple of "
            f"{GROUP_NORM_GROUPS} (GroupNorm groups)"
        )
