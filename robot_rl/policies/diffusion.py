"""A steerable diffusion policy (after Chi et al., Diffusion Policy), built for fast sampling.

Shapes (B batch, To history, H chunk, A action dim, G conditioning)::

    obs {key: [B, To, ...]} --encode_obs--> cond [B, G]
    noise [B, H, A] --DDIM (eta=0), num_inference_steps x UNet(x_t, t, cond)--> x_0 [B, H, A]
    x_0 --unnormalise, clip--> chunk [B, H, A] in the environment's [-1, 1]

Training adds DDPM noise to normalised action chunks and regresses it (epsilon prediction).
Sampling runs DDIM with eta=0, so the chunk is a deterministic function of (obs, noise): the
property latent-noise steering (DSRL) relies on. The scheduler's timesteps are set once; the
UNet's FiLM parameters for every step are computed in one batched call before the loop; the
per-step UNet runs through a TorchScript trace (see ``trace_sampler``); and the DDIM tables are
Python floats (see ``_with_float_tables``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.core.keys import ACTION
from robot_rl.core.policy import Observation, SteerableChunkPolicy
from robot_rl.policies.checkpoint import register_policy
from robot_rl.policies.config import GROUP_NORM_GROUPS, PolicyConfig, check_channels, check_positive
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.policies.normalize import Normalizer
from robot_rl.policies.tensors import (
    batch_to_tensors,
    bind_policy,
    check_noise_tensor,
    masked_mean,
    obs_and_noise,
    obs_to_tensors,
    to_env_actions,
)
from robot_rl.policies.unet1d import ConditionalUnet1D
from robot_rl.threads import few_threads

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# Batches up to this size (one robot, a 16-env evaluation) are bound by per-op overhead, not
# compute: the TorchScript trace pays there (see trace_sampler).
SMALL_BATCH = 16
# float32 sample, float64 vs float32 schedule arithmetic: differences are ~1e-7.
_DDIM_SELF_CHECK_ATOL = 1e-5
Denoiser = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DiffusionPolicyConfig(PolicyConfig):
    """Diffusion policy; defaults are sized for p99 <= 10 ms per chunk on 2 CPU cores."""

    down_dims: tuple[int, ...] = (64,)
    """UNet channels per temporal resolution; H must be divisible by 2 ** (len - 1). One level
    by default: batch-1 sampling is bound by the number of ops, and (32, 64) measured p50 8.4 /
    p99 12.7 ms per chunk on 2 cores against 6.9 / 7.8 ms for (64,), with a similar BC fit."""
    blocks_per_level: int = 1
    """Residual blocks per UNet level (Chi et al. use 2; 1 halves the per-step latency)."""
    kernel_size: int = 5
    """Temporal kernel of the UNet's convolutions (odd)."""
    step_embed_dim: int = 32
    """Width of the diffusion-step embedding (FiLM input together with the obs features)."""
    num_train_timesteps: int = 100
    """DDPM noise levels used in training."""
    num_inference_steps: int = 10
    """DDIM steps when sampling (<= num_train_timesteps); the cost of a chunk is linear in it."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule of both schedulers."""
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] at every step (matches 'limits' action_norm)."""
    trace_sampler: bool = True
    """Run the per-step UNet through a TorchScript trace when sampling <= 16 chunks: about 2x
    faster at batch 1 on CPU, where per-op Python overhead dominates; bit-identical outputs."""
    small_batch_threads: int | None = 1
    """Torch intra-op threads while sampling <= 128 chunks on CPU (None: leave torch's
    setting). Small ops gain nothing from a second thread, and OpenMP waits on a busy core spike
    p99."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_channels("down_dims", self.down_dims)
        check_positive(blocks_per_level=self.blocks_per_level, kernel_size=self.kernel_size)
        check_positive(num_train_timesteps=self.num_train_timesteps)
        check_positive(num_inference_steps=self.num_inference_steps)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} must be odd (same-length convs)")
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ValueError(
                f"horizon={self.horizon} must be divisible by {factor}: the UNet "
                f"halves it {len(self.down_dims) - 1} times (down_dims={self.down_dims})"
            )
        if self.step_embed_dim < 4 or self.step_embed_dim % 2:
            raise ValueError(f"step_embed_dim={self.step_embed_dim} must be even and >= 4")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} > "
                f"num_train_timesteps={self.num_train_timesteps}"
            )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule={self.beta_schedule!r}: expected one of {BETA_SCHEDULES}"
            )
        if self.small_batch_threads is not None:
            check_positive(small_batch_threads=self.small_batch_threads)


@register_policy
class DiffusionPolicy(SteerableChunkPolicy, nn.Module):
    """obs ``{key: [B, To, ...]}`` (+ noise ``[B, H, A]``) -> chunk ``[B, H, A]`` in [-1, 1]."""

    config_class = DiffusionPolicyConfig
    uses_ema = True  # pretraining keeps an EMA of the weights and saves it (Chi et al.)

    def __init__(self, config: DiffusionPolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        bind_policy(self, config, normalizer)
        self.noise_shape = (config.horizon, config.action_dim)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(config.seed)
            self.obs_encoder = ObservationEncoder(config)
            self.unet = ConditionalUnet1D(
                action_dim=config.action_dim,
                global_cond_dim=self.obs_encoder.out_dim,
                down_dims=config.down_dims,
                kernel_size=config.kernel_size,
                n_groups=GROUP_NORM_GROUPS,
                step_embed_dim=config.step_embed_dim,
                blocks_per_level=config.blocks_per_level,
            )
        self.to(device=config.torch_device, dtype=config.torch_dtype)
        self.train_scheduler, self.sample_scheduler = make_schedulers(
            config.num_train_timesteps,
            config.num_inference_steps,
            config.beta_schedule,
            config.clip_sample,
        )
        self._timesteps = [int(t) for t in self.sample_scheduler.timesteps]
        self.noise_generator = torch.Generator(device=config.torch_device)
        self.noise_generator.manual_seed(config.seed)
        # A plain dict, so that nn.Module does not register the traced copy as a submodule.
        self._trace_cache: dict[str, object] = {}

    def seed(self, seed: int) -> None:
        """Reseed the generator that draws the noise when ``predict_chunk`` gets none."""
        self.noise_generator.manual_seed(seed)

    def __getstate__(self) -> dict[str, object]:
        # A traced method can be neither copied nor pickled; a copy re-traces on first use.
        state = self.__dict__.copy()
        state["_trace_cache"] = {}
        return state

    # ---- training -------------------------------------------------------------------------

    def compute_loss(
        self, batch: Mapping[str, object], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampler batch (obs [B, To, ...], action [B, H, A]) -> scalar epsilon-prediction MSE."""
        obs, action, is_pad = batch_to_tensors(batch, self.config)
        device, dtype = self.config.torch_device, self.config.torch_dtype
        cond = self.encode_obs(obs)
        x0 = self.normalizer.normalize({ACTION: action})[ACTION].to(dtype)
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
        t = torch.randint(
            0, self.config.num_train_timesteps, (x0.shape[0],), generator=generator, device=device
        )
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        per_step = F.mse_loss(self.unet(x_t, t, cond), noise, reduction="none").mean(-1)  # [B, H]
        return masked_mean(per_step, is_pad, self.config.mask_padded_actions)

    # ---- sampling -------------------------------------------------------------------------

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw obs tensors ``{key: [B, To, ...]}`` on the device -> conditioning ``[B, G]``."""
        used = {key: obs[key] for key in self.config.obs_shapes}
        dtype = self.config.torch_dtype
        normalised = self.normalizer.normalize(used)
        return self.obs_encoder({k: v.to(dtype) for k, v in normalised.items()})

    def denoise(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """cond [B, G], noise [B, H, A] -> normalised chunk x_0 [B, H, A] (DDIM, eta=0).

        Deterministic given (cond, noise). Call under ``torch.no_grad()``/``inference_mode()``.
        """
        b, steps = noise.shape[0], self._timesteps
        t = torch.as_tensor(steps, device=cond.device).repeat_interleave(b)  # [S * B]
        # FiLM parameters of all steps in one batched call, then per step one [B, C, 1] view
        # of each block's scale and bias.
        films = self.unet.film(t, cond.repeat(len(steps), 1))
        by_step = (f.view(len(steps), b, *f.shape[1:]).unbind(0) for f in films)
        films_per_step = [list(films_t) for films_t in zip(*by_step, strict=True)]
        unet = self._sampling_denoiser(noise, films_per_step[0])
        x = noise * self.sample_scheduler.init_noise_sigma
        for t_step, films_t in zip(steps, films_per_step, strict=True):
            eps = unet(x, films_t)
            x = self.sample_scheduler.step(eps, t_step, x).prev_sample
        return x

    @torch.no_grad()
    def sample_actions(
        self, obs: Observation | Mapping[str, torch.Tensor], noise: torch.Tensor
    ) -> torch.Tensor:
        """Raw obs tensors ``{key: [B, To, ...]}``, noise ``[B, H, A]`` -> chunk ``[B, H, A]``.

        The torch twin of ``predict_chunk`` for learners that batch many denoisings: no numpy
        round trip; runs under ``no_grad`` (not ``inference_mode``), so the result can be fed
        to networks that are being trained.
        """
        obs = obs_to_tensors(obs, self.config)  # checks shapes; a no-op move when on device
        b = next(iter(obs.values())).shape[0]
        check_noise_tensor(noise, b, self.noise_shape)
        with self._sampling_threads(b):
            cond = self.encode_obs(obs)
            x0 = self.denoise(cond, noise.to(self.config.torch_device, self.config.torch_dtype))
            return to_env_actions(self.normalizer, x0)

    def predict_chunk(self, obs: Observation, noise: np.ndarray | None = None) -> np.ndarray:
        """obs ``{key: [B, To, ...]}`` numpy, noise ``[B, H, A]`` or None -> chunk ``[B, H, A]``.

        With ``noise=None`` the noise is drawn from N(0, I) with the policy's own generator
        (see :meth:`seed`); the same (obs, noise) always gives the same chunk.
        """
        obs_t, noise_t = obs_and_noise(self, obs, noise)
        with torch.inference_mode(), self._sampling_threads(noise_t.shape[0]):
            x0 = self.denoise(self.encode_obs(obs_t), noise_t)
            return to_env_actions(self.normalizer, x0).cpu().numpy()

    def _sampling_threads(self, batch: int) -> contextlib.AbstractContextManager:
        """``small_batch_threads`` intra-op threads for small CPU batches (process-wide)."""
        if self.config.torch_device.type != "cpu":
            return contextlib.nullcontext()
        return few_threads(batch, self.config.small_batch_threads)

    def _sampling_denoiser(self, x: torch.Tensor, films: list[torch.Tensor]) -> Denoiser:
        """``unet.denoise``, traced with TorchScript when ``trace_sampler`` (traced once, lazily).

        The trace shares the UNet's parameter tensors, so optimiser steps, ``load_state_dict``
        and ``.to()`` reach it; it is rebuilt only if the parameter objects are replaced.
        """
        # Large batches are compute-bound: the trace gains nothing there, and every new input
        # shape costs the JIT a few re-profiling calls.
        small = x.shape[0] <= SMALL_BATCH
        if not (self.config.trace_sampler and small and hasattr(torch.jit, "trace_module")):
            return self.unet.denoise
        params = list(self.unet.final.parameters())
        key = (id(params[0]), id(params[-1]), params[0].device, params[0].dtype)
        if self._trace_cache.get("key") != key:
            example = (x, films)
            with warnings.catch_warnings():
                # torch.jit is deprecated in favour of torch.compile, which takes ~40 s to build
                # this net on 2 cores and was slower than the trace here; revisit when it is gone.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace_module(self.unet, {"denoise": example}, check_trace=False)
            self._trace_cache.update(key=key, denoise=traced.denoise)
        return self._trace_cache["denoise"]  # type: ignore[return-value]


def make_schedulers(
    num_train_timesteps: int,
    num_inference_steps: int,
    beta_schedule: str,
    clip_sample: bool,
) -> tuple[DDPMScheduler, DDIMScheduler]:
    """(training DDPM scheduler, sampling DDIM scheduler with its timesteps already set).

    Both predict epsilon on the same beta schedule; DDIM uses ``set_alpha_to_one`` and no step
    offset (as in Chi et al.), so with 100 train steps and 10 inference steps the timesteps are
    90, 80, ..., 0. Sampling with ``eta=0`` (the default of ``step``) is deterministic.
    """
    # Imported here: diffusers adds ~3 s to `import robot_rl.policies` on the project's CPUs.
    from diffusers import DDIMScheduler, DDPMScheduler

    schedule = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        clip_sample=clip_sample,
        prediction_type="epsilon",
    )
    train = DDPMScheduler(**schedule, variance_type="fixed_small")
    sample = DDIMScheduler(**schedule, set_alpha_to_one=True, steps_offset=0)
    # Once, not per call: the timesteps depend only on the config.
    sample.set_timesteps(num_inference_steps)
    return train, _with_float_tables(sample)


def _with_float_tables(scheduler: DDIMScheduler) -> DDIMScheduler:
    """The same scheduler with ``alphas_cumprod`` as Python floats, if ``step`` still agrees.

    Why: ``DDIMScheduler.step`` does about twenty operations on 0-dim tensors (``1 - alpha``,
    ``alpha ** 0.5``, ...) besides the six that touch the sample; on a 2-core CPU that is about
    100 us per step, 15% of a 10-step chunk at batch 1. With float tables the same ``step`` code
    does that arithmetic on Python floats (~1 us): the update is still computed by diffusers.
    The self-check against the stock scheduler guards against a diffusers release whose ``step``
    needs tensors; the stock tables are then kept, with a warning.
    """
    fast = type(scheduler).from_config(scheduler.config)
    fast.set_timesteps(scheduler.num_inference_steps)
    fast.alphas_cumprod = [float(a) for a in scheduler.alphas_cumprod.double()]
    fast.final_alpha_cumprod = float(scheduler.final_alpha_cumprod)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 3, generator=generator)
    eps = torch.randn(2, 4, 3, generator=generator)
    try:
        for t in scheduler.timesteps.tolist():
            expected = scheduler.step(eps, t, sample).prev_sample
            got = fast.step(eps, t, sample).prev_sample
            if not torch.allclose(expected, got, atol=_DDIM_SELF_CHECK_ATOL):
                raise ValueError(f"step at t={t} differs by {(expected - got).abs().max():.2e}")
    except (TypeError, AttributeError, IndexError, ValueError) as error:
        warnings.warn(
            f"DDIMScheduler.step no longer accepts float tables ({error}); sampling uses the "
            "stock scheduler, about 1 ms slower per 10-step chunk on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return scheduler
    return fast
