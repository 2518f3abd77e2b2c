"""LeRobot's ``DiffusionPolicy`` (lerobot 0.4.4) as a robot_rl steerable chunk policy.

Shapes (B batch, To history, H chunk, A action dim; D state dims, Dr of them the robot's)::

    obs {"state": [B, To, D], "image.<cam>": [B, To, H, W, 3] uint8}
        --our Normalizer--> LeRobot batch {"observation.state": [B, To, Dr],
                                           "observation.environment_state": [B, To, D - Dr],
                                           "observation.images.<cam>": [B, To, 3, H, W] in [0, 1]}
        --LeRobot's observation encoders--> global conditioning [B, G]
    noise [B, H, A] --LeRobot's conditional_sample (DDIM, eta=0)--> x_0 [B, H, A]
        --unnormalise, clip--> chunk [B, H, A] in the environment's [-1, 1]

LeRobot keeps normalisation in separate processor pipelines; here our :class:`Normalizer`
(fitted on the store, saved in the checkpoint) plays that part, so the wrapped model sees the
same normalised tensors LeRobot's pipelines would give it and the checkpoint is our folder
format. Training calls LeRobot's own ``forward`` (its ``compute_loss``) on a LeRobot-shaped
batch, ``action_is_pad`` included. Sampling calls the model's two halves (observation encoding,
then ``conditional_sample`` with the caller's noise) rather than ``predict_action_chunk``: that
one reads LeRobot's per-robot observation queues and returns only ``chunk[To - 1 : To - 1 + Ta]``,
while our windows (``WindowSampler``) start the chunk at the current step and DSRL needs all H.

Deterministic given the noise: the DDIM scheduler steps with ``eta=0`` (its default), which
draws nothing. lerobot is imported when a policy is built, not when this module is imported.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_rl.core.keys import ACTION, STATE
from robot_rl.core.policy import Observation, SteerableChunkPolicy
from robot_rl.lerobot_compat import LEROBOT_INSTALL, import_torchvision
from robot_rl.policies.checkpoint import register_policy
from robot_rl.policies.config import PolicyConfig, check_one_of, check_positive
from robot_rl.policies.diffusion import BETA_SCHEDULES
from robot_rl.policies.normalize import Normalizer
from robot_rl.policies.tensors import (
    ACTION_IS_PAD,
    batch_to_tensors,
    bind_policy,
    check_noise_tensor,
    obs_and_noise,
    obs_to_tensors,
    to_env_actions,
)

LEROBOT_VERSION = "0.4.4"
# LeRobot's observation keys (lerobot.utils.constants), spelt out so that building a config
# and reading this module need no lerobot import.
LR_STATE = "observation.state"
LR_ENV_STATE = "observation.environment_state"
LR_IMAGES = "observation.images"
IMAGE_PREFIX = "image."
# The seed of the RNG fork LeRobot's training noise is drawn from lies below this bound.
_SEED_BOUND = 2**62


@dataclass(frozen=True, kw_only=True)
class LeRobotDiffusionPolicyConfig(PolicyConfig):
    """LeRobot's DiffusionConfig fields that matter here; the rest keep LeRobot's defaults.

    Of the shared :class:`PolicyConfig` fields, the state/image encoder ones (``state_encoder``,
    ``image_channels``, ...) are unused: LeRobot's model brings its own encoders. Defaults are
    small enough to pretrain on 2 CPU cores in minutes; LeRobot's own are (512, 1024, 2048).
    """

    down_dims: tuple[int, ...] = (64, 128)
    """UNet channels per level; H must be divisible by 2 ** len(down_dims) (LeRobot's rule)."""
    kernel_size: int = 5
    """Temporal kernel of the UNet's convolutions."""
    n_groups: int = 8
    """GroupNorm groups in the UNet; every entry of down_dims must be divisible by it."""
    diffusion_step_embed_dim: int = 64
    """Width of the diffusion-step embedding (LeRobot's default is 128)."""
    use_film_scale_modulation: bool = True
    """FiLM conditioning with scale and bias (False: bias only)."""
    num_train_timesteps: int = 100
    """DDPM noise levels used in training."""
    num_inference_steps: int = 10
    """DDIM steps when sampling (<= num_train_timesteps)."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule."""
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] at every step (matches 'limits' action_norm)."""
    robot_state_dim: int | None = None
    """Leading dims of 'state' that are the robot's own (LeRobot's observation.state); the rest
    go to observation.environment_state. LeRobot concatenates both into one conditioning vector,
    so the split names the parts without changing what the model can learn. None: all of it is
    robot state; with no camera, LeRobot's required image-or-environment input is then an empty
    environment state."""
    vision_backbone: str = "resnet18"
    """torchvision ResNet of LeRobot's image encoder (random init: no pretrained weights)."""
    crop_shape: tuple[int, int] | None = None
    """(H, W) crop of every camera image: random while training, centred when sampling."""
    spatial_softmax_num_keypoints: int = 32
    """Keypoints of the image encoder's spatial softmax."""
    use_separate_rgb_encoder_per_camera: bool = False
    """One image encoder per camera instead of a shared one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        low_dim = self.low_dim_keys
        if low_dim != [STATE]:
            raise ValueError(
                f"LeRobot's diffusion policy reads one state vector {STATE!r} (plus cameras), "
                f"but obs_shapes has vector keys {low_dim}; record the store with a 'state' key"
            )
        check_positive(kernel_size=self.kernel_size, n_groups=self.n_groups)
        check_positive(diffusion_step_embed_dim=self.diffusion_step_embed_dim)
        check_positive(num_train_timesteps=self.num_train_timesteps)
        check_positive(num_inference_steps=self.num_inference_steps)
        check_positive(spatial_softmax_num_keypoints=self.spatial_softmax_num_keypoints)
        if not self.down_dims or any(d < 1 or d % self.n_groups for d in self.down_dims):
            raise ValueError(
                f"down_dims={self.down_dims}: need at least one level, each a positive multiple "
                f"of n_groups={self.n_groups} (GroupNorm groups)"
            )
        factor = 2 ** len(self.down_dims)
        if self.horizon % factor:
            raise ValueError(
                f"horizon={self.horizon} must be divisible by {factor}: LeRobot's UNet needs "
                f"2 ** len(down_dims) (down_dims={self.down_dims})"
            )
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} > "
                f"num_train_timesteps={self.num_train_timesteps}"
            )
        check_one_of("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        state_dim = self.obs_shapes[STATE][0]
        if self.robot_state_dim is not None and not 1 <= self.robot_state_dim <= state_dim:
            raise ValueError(
                f"robot_state_dim={self.robot_state_dim} must lie in [1, {state_dim}] "
                "(the size of 'state'), or be None (all of it)"
            )
        if self.crop_shape is not None:
            if len(self.crop_shape) != 2:
                raise ValueError(f"crop_shape={self.crop_shape} must be (H, W) or None")
            for key in self.image_keys:
                h, w, _ = self.obs_shapes[key]
                if self.crop_shape[0] > h or self.crop_shape[1] > w:
                    raise ValueError(f"crop_shape={self.crop_shape} exceeds {key!r} ({h}, {w})")

    @property
    def robot_state_size(self) -> int:
        """Dr: the number of leading 'state' dims given to LeRobot as observation.state."""
        return self.obs_shapes[STATE][0] if self.robot_state_dim is None else self.robot_state_dim

    @property
    def lerobot_image_keys(self) -> dict[str, str]:
        """Our camera keys -> LeRobot's (``image.front`` -> ``observation.images.front``)."""
        return {k: f"{LR_IMAGES}.{k.removeprefix(IMAGE_PREFIX)}" for k in self.image_keys}

    @property
    def has_env_state(self) -> bool:
        """LeRobot needs a camera or an environment state; an empty one stands in for none."""
        return self.robot_state_size < self.obs_shapes[STATE][0] or not self.image_keys


def import_lerobot_diffusion() -> ModuleType:
    """``lerobot.policies.diffusion.modeling_diffusion``, or an ImportError naming the fix."""
    try:
        import_torchvision()
        modeling = importlib.import_module("lerobot.policies.diffusion.modeling_diffusion")
    except ImportError as error:
        raise ImportError(
            f"LeRobotDiffusionPolicy needs lerobot=={LEROBOT_VERSION} ({error}); install it: "
            f"{LEROBOT_INSTALL}"
        ) from error
    sample = modeling.DiffusionModel.conditional_sample
    if "noise" not in inspect.signature(sample).parameters:
        version = getattr(importlib.import_module("lerobot"), "__version__", "unknown")
        raise ImportError(
            f"lerobot {version}'s diffusion sampling takes no initial noise, so it cannot be "
            f"steered; install lerobot=={LEROBOT_VERSION}: {LEROBOT_INSTALL}"
        )
    return modeling


def lerobot_config(config: LeRobotDiffusionPolicyConfig) -> Any:
    """Our config -> LeRobot's ``DiffusionConfig`` (features, DDIM sampling, no downloads)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    state_dim, split = config.obs_shapes[STATE][0], config.robot_state_size
    inputs = {LR_STATE: PolicyFeature(type=FeatureType.STATE, shape=(split,))}
    for key, lerobot_key in config.lerobot_image_keys.items():
        h, w, c = config.obs_shapes[key]
        inputs[lerobot_key] = PolicyFeature(type=FeatureType.VISUAL, shape=(c, h, w))
    if config.has_env_state:
        inputs[LR_ENV_STATE] = PolicyFeature(type=FeatureType.ENV, shape=(state_dim - split,))
    return DiffusionConfig(
        input_features=inputs,
        output_features={
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(config.action_dim,))
        },
        n_obs_steps=config.n_obs_steps,
        horizon=config.horizon,
        n_action_steps=config.n_action_steps,
        down_dims=tuple(config.down_dims),
        kernel_size=config.kernel_size,
        n_groups=config.n_groups,
        diffusion_step_embed_dim=config.diffusion_step_embed_dim,
        use_film_scale_modulation=config.use_film_scale_modulation,
        noise_scheduler_type="DDIM",  # deterministic sampling given the initial noise
        num_train_timesteps=config.num_train_timesteps,
        num_inference_steps=config.num_inference_steps,
        beta_schedule=config.beta_schedule,
        prediction_type="epsilon",
        clip_sample=config.clip_sample,
        clip_sample_range=1.0,
        do_mask_loss_for_padding=config.mask_padded_actions,
        vision_backbone=config.vision_backbone,
        pretrained_backbone_weights=None,  # nothing downloads; train the encoder from scratch
        crop_shape=None if config.crop_shape is None else tuple(config.crop_shape),
        spatial_softmax_num_keypoints=config.spatial_softmax_num_keypoints,
        use_separate_rgb_encoder_per_camera=config.use_separate_rgb_encoder_per_camera,
        device=config.device,
        push_to_hub=False,
    )


@register_policy
class LeRobotDiffusionPolicy(SteerableChunkPolicy, nn.Module):
    """obs ``{key: [B, To, ...]}`` (+ noise ``[B, H, A]``) -> chunk ``[B, H, A]`` in [-1, 1].

    ``self.model`` is LeRobot's ``DiffusionPolicy``; its weights are this module's state dict
    (``model.diffusion.*``), saved and loaded by :mod:`robot_rl.policies.checkpoint`.
    """

    config_class = LeRobotDiffusionPolicyConfig
    uses_ema = True  # our pretraining keeps an EMA of the weights, as for our own diffusion

    def __init__(self, config: LeRobotDiffusionPolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        bind_policy(self, config, normalizer)
        self.noise_shape = (config.horizon, config.action_dim)
        modeling = import_lerobot_diffusion()
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(config.seed)
            self.model = modeling.DiffusionPolicy(lerobot_config(config))
        self.to(device=config.torch_device, dtype=config.torch_dtype)
        self.noise_generator = torch.Generator(device=config.torch_device)
        self.noise_generator.manual_seed(config.seed)

    def seed(self, seed: int) -> None:
        """Reseed the generator that draws the noise when ``predict_chunk`` gets none."""
        self.noise_generator.manual_seed(seed)

    # ---- LeRobot's view of a batch --------------------------------------------------------

    def lerobot_observation(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw obs tensors ``{key: [B, To, ...]}`` on the device -> LeRobot's normalised
        observation keys (see the module docstring)."""
        config, dtype = self.config, self.config.torch_dtype
        normalised = self.normalizer.normalize({k: obs[k] for k in config.obs_shapes})
        state = normalised[STATE].to(dtype)
        out = {LR_STATE: state[..., : config.robot_state_size]}
        if config.has_env_state:
            out[LR_ENV_STATE] = state[..., config.robot_state_size :]
        for key, lerobot_key in config.lerobot_image_keys.items():
            # [B, To, H, W, C] in [0, 1] -> [B, To, C, H, W]: LeRobot's image layout
            out[lerobot_key] = normalised[key].permute(0, 1, 4, 2, 3).to(dtype)
        return out

    # ---- training -------------------------------------------------------------------------

    def compute_loss(
        self, batch: Mapping[str, object], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampler batch (obs [B, To, ...], action [B, H, A], action_is_pad [B, H]) -> LeRobot's
        scalar epsilon-prediction loss.

        LeRobot draws its diffusion noise and timesteps from torch's global RNG; with a
        ``generator`` they come from a fork of it seeded from the generator, so the loss is
        reproducible given the generator and the caller's global RNG is left untouched.
        """
        obs, action, is_pad = batch_to_tensors(batch, self.config)
        lerobot_batch = self.lerobot_observation(obs)
        normalised = self.normalizer.normalize({ACTION: action})[ACTION]
        lerobot_batch[ACTION] = normalised.to(self.config.torch_dtype)
        lerobot_batch[ACTION_IS_PAD] = is_pad
        if generator is None:
            return self.model(lerobot_batch)[0]
        seed = int(torch.randint(_SEED_BOUND, (1,), generator=generator, device=generator.device))
        device = self.config.torch_device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return self.model(lerobot_batch)[0]

    # ---- sampling -------------------------------------------------------------------------

    def denoise(self, obs: Mapping[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Raw obs tensors, noise [B, H, A] -> normalised chunk x_0 [B, H, A] (DDIM, eta=0).

        Deterministic given (obs, noise). Call under ``torch.no_grad()``/``inference_mode()``.
        """
        diffusion = self.model.diffusion
        lerobot_batch = self.lerobot_observation(obs)
        image_keys = list(self.config.lerobot_image_keys.values())
        if image_keys:  # what LeRobot's forward/select_action do before encoding
            lerobot_batch[LR_IMAGES] = torch.stack([lerobot_batch[k] for k in image_keys], dim=-4)
        # A private method of lerobot 0.4.4 (pinned); the public predict_action_chunk would
        # read LeRobot's observation queues and cut the chunk (see the module docstring).
        cond = diffusion._prepare_global_conditioning(lerobot_batch)  # [B, G]
        return diffusion.conditional_sample(noise.shape[0], global_cond=cond, noise=noise)

    @torch.no_grad()
    def sample_actions(
        self, obs: Observation | Mapping[str, torch.Tensor], noise: torch.Tensor
    ) -> torch.Tensor:
        """Raw obs tensors ``{key: [B, To, ...]}``, noise ``[B, H, A]`` -> chunk ``[B, H, A]``.

        The torch twin of ``predict_chunk`` for learners that batch many denoisings; runs under
        ``no_grad`` (not ``inference_mode``), so the result can feed networks being trained.
        """
        obs_t = obs_to_tensors(obs, self.config)
        b = next(iter(obs_t.values())).shape[0]
        check_noise_tensor(noise, b, self.noise_shape)
        x0 = self.denoise(obs_t, noise.to(self.config.torch_device, self.config.torch_dtype))
        return to_env_actions(self.normalizer, x0)

    def predict_chunk(self, obs: Observation, noise: np.ndarray | None = None) -> np.ndarray:
        """obs ``{key: [B, To, ...]}`` numpy, noise ``[B, H, A]`` or None -> chunk ``[B, H, A]``.

        With ``noise=None`` the noise is drawn from N(0, I) with the policy's own generator
        (see :meth:`seed`); the same (obs, noise) always gives the same chunk.
        """
        obs_t, noise_t = obs_and_noise(self, obs, noise)
        with torch.inference_mode():
            return to_env_actions(self.normalizer, self.denoise(obs_t, noise_t)).cpu().numpy()
