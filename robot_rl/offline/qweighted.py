"""Q-weighted denoising fine-tuning of the base diffusion policy (the CO-RFT direction).

For every stored window (observation history at t, the data's H-step chunk from t)::

    A(t)  = Q(s_t, a_t:t+h) - V(s_t),      V(s_t) = mean_k Q(s_t, base sample k)
    w(t)  = min(exp(A / temperature), max_weight), normalised to mean 1 over the data
    loss  = mean_B( w * l_denoise ) + bc_weight * mean_B( l_denoise )

``l_denoise`` is the diffusion policy's own epsilon-prediction loss per window; the unweighted
term keeps the fine-tuned policy close to behaviour cloning where Q is unsure. The result is an
ordinary diffusion-policy checkpoint: it deploys, evaluates and can be steered like the base.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from robot_rl.core import keys as K
from robot_rl.data import WindowSampler
from robot_rl.offline.config import QWeightedConfig
from robot_rl.offline.critic import ChunkCritic
from robot_rl.offline.data import ChunkData
from robot_rl.policies.diffusion import DiffusionPolicy
from robot_rl.policies.tensors import batch_to_tensors
from robot_rl.train.pretrain import EMA


@torch.no_grad()
def advantage_weights(
    critic: ChunkCritic,
    data: ChunkData,
    candidates: torch.Tensor,
    cfg: QWeightedConfig,
    heads: str = "mean",
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Per stored frame: (weights normalised to mean 1, advantages)."""
    adv = torch.empty(len(data))
    for start in range(0, len(data), block):
        idx = torch.arange(start, min(len(data), start + block))
        obs = data.frame_obs[data.frame[idx]]
        q = ChunkCritic.score(critic.q, obs, data.action[idx].unsqueeze(1), heads)[:, 0]
        v = ChunkCritic.score(critic.q, obs, candidates[data.frame[idx]], heads).mean(dim=1)
        adv[idx] = q - v
    weights = torch.exp(adv / cfg.temperature).clamp(max=cfg.max_weight)
    weights = weights / weights.mean()
    return weights.numpy(), adv.numpy()


def per_window_loss(
    policy: DiffusionPolicy, batch: dict, generator: torch.Generator
) -> torch.Tensor:
    """The diffusion policy's epsilon-prediction loss per window ``[B]``."""
    obs, action, is_pad = batch_to_tensors(batch, policy.config)
    cond = policy.encode_obs(obs)
    x0 = policy.normalizer.normalize({K.ACTION: action})[K.ACTION].to(cond.dtype)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t = torch.randint(0, policy.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    x_t = policy.train_scheduler.add_noise(x0, noise, t)
    per_step = F.mse_loss(policy.unet(x_t, t, cond), noise, reduction="none").mean(-1)  # [B, H]
    if policy.config.mask_padded_actions:
        keep = (~is_pad).to(per_step.dtype)
        return (per_step * keep).sum(-1) / keep.sum(-1).clamp_min(1.0)
    return per_step.mean(-1)


def q_weighted_finetune(
    base: DiffusionPolicy,
    data: ChunkData,
    weights: np.ndarray,
    cfg: QWeightedConfig,
    seed: int = 0,
    progress: bool = True,
    writer=None,
) -> tuple[DiffusionPolicy, dict]:
    """A fine-tuned copy of ``base`` (EMA weights, eval mode) and its loss history."""
    if not isinstance(base, DiffusionPolicy):
        raise TypeError(
            f"Q-weighted fine-tuning trains a DiffusionPolicy's denoiser; the base is "
            f"{type(base).__name__}: leave q_weighted out of improver.extract"
        )
    if len(weights) != len(data):
        raise ValueError(f"{len(weights)} weights for {len(data)} stored frames")
    policy = copy.deepcopy(base).train()
    sampler = WindowSampler(
        data.steps,
        list(policy.config.obs_shapes),
        policy.n_obs_steps,
        policy.horizon,
        episode_ends=data.episode_ends,
    )
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-6, betas=(0.95, 0.999))
    ema = EMA(policy, 0.995)
    w_all = torch.from_numpy(weights.astype(np.float32))
    history: dict = {"loss": [], "weighted": [], "bc": []}
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="q-weighted fine-tune", disable=not progress)
    for step in bar:
        idx = rng.integers(0, len(sampler), size=cfg.batch_size)
        losses = per_window_loss(policy, sampler.batch(idx), generator)
        weighted = (w_all[idx] * losses).mean()
        bc = losses.mean()
        loss = weighted + cfg.bc_weight * bc
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Q-weighted loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(policy)
        for key, value in (("loss", loss), ("weighted", weighted), ("bc", bc)):
            history[key].append(value.item())
        if writer is not None and step % 25 == 0:
            writer.add_scalar("q_weighted/loss", loss.item(), step)
            writer.add_scalar("q_weighted/bc", bc.item(), step)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to(policy)
    history["wall_s"] = time.perf_counter() - start
    return policy.eval(), history
