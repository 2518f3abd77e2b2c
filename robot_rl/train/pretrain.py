"""Behaviour-cloning pretraining of any robot_rl policy that has ``compute_loss(batch, generator)``.

One function, read top to bottom: sample a batch, loss, optimiser step, EMA, logging.
AdamW with linear warm-up then cosine decay; an EMA of the weights for policies that ask for
it (``policy.uses_ema``, the diffusion policy), which is what is validated, returned and saved.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

SampleFn = Callable[[int, np.random.Generator], Mapping[str, Any]]
ValFn = Callable[[nn.Module], float | Mapping[str, float]]


class EMA:
    """Shadow copies of ``module``'s floating-point parameters, updated by ``update()``.

    Chi et al. evaluate and save the EMA of a diffusion policy's weights: single optimiser
    iterates of a diffusion model are noisy, and their average samples better action chunks.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so the average is
    not dominated by the random initial weights in short runs. Buffers are not averaged (ours
    are constants such as positional tables).
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self._shadow = [p.detach().clone() for p in self._params(module)]

    @staticmethod
    def _params(module: nn.Module) -> list[nn.Parameter]:
        return [p for p in module.parameters() if p.dtype.is_floating_point]

    def _check(self, params: list[nn.Parameter]) -> None:
        if len(params) != len(self._shadow):
            raise ValueError(
                f"module has {len(params)} parameters, the EMA tracks "
                f"{len(self._shadow)}: use the module the EMA was built from"
            )

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * weights."""
        params = self._params(module)
        self._check(params)
        n = self.num_updates
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        for shadow, param in zip(self._shadow, params, strict=True):
            shadow.lerp_(param.detach(), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s weights with the average."""
        params = self._params(module)
        self._check(params)
        for shadow, param in zip(self._shadow, params, strict=True):
            param.copy_(shadow)

    @contextlib.contextmanager
    def averaged(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the average into ``module`` (e.g. to validate); restores on exit."""
        params = self._params(module)
        self._check(params)
        backup = [p.detach().clone() for p in params]
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for saved, param in zip(backup, params, strict=True):
                    param.copy_(saved)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    policy: nn.Module,
    sample_fn: SampleFn,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    warmup_steps: int | None = None,
    grad_clip: float | None = 1.0,
    ema: bool | None = None,
    ema_decay: float = 0.999,
    log_dir: str | Path | None = None,
    log_every: int = 25,
    progress: bool = True,
    seed: int = 0,
    val_fn: ValFn | None = None,
    val_every: int = 500,
) -> dict[str, Any]:
    """Train ``policy`` in place by behaviour cloning; returns the history.

    ``sample_fn(batch_size, rng) -> batch`` (a ``WindowSampler.sample``) supplies
    ``{"obs": {key: [B, To, ...]}, "action": [B, H, A], "action_is_pad": [B, H]}``.
    ``warmup_steps`` defaults to min(500, steps // 10). ``ema=None`` follows
    ``policy.uses_ema``; with EMA on, ``val_fn`` sees the averaged weights and the policy ends
    holding them. ``val_fn(policy)`` returns a float or ``{name: float}`` every ``val_every``
    steps and at the end. TensorBoard scalars go to ``log_dir`` when given.

    Returns ``{"steps", "losses", "lr", "val": [(step, {name: value})], "wall_s",
    "steps_per_s", "ema"}``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    use_ema = bool(getattr(policy, "uses_ema", False)) if ema is None else ema
    warmup = max(1, min(500, steps // 10)) if warmup_steps is None else max(1, warmup_steps)
    device = next(policy.parameters()).device
    rng = np.random.default_rng(seed)  # windows
    generator = torch.Generator(device=device).manual_seed(seed)  # diffusion noise and steps

    params = [p for p in policy.parameters() if p.requires_grad]
    # betas as in Chi et al.: a shorter first-moment memory suits the noisy diffusion loss.
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.95, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, warmup)
    )
    averager = EMA(policy, ema_decay) if use_ema else None
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when logging

        writer = SummaryWriter(str(log_dir))

    history: dict[str, Any] = {"steps": [], "losses": [], "lr": [], "val": [], "ema": use_ema}
    policy.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = sample_fn(batch_size, rng)
        loss = policy.compute_loss(batch, generator=generator)
        if not torch.isfinite(loss):
            lr_now = schedule.get_last_lr()[0]
            raise FloatingPointError(
                f"loss is {loss.item()} at step {step}: lower lr (now {lr_now:.2e}) or check the "
                "batch for NaN and the normaliser statistics for zero ranges"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip else None
        optimizer.step()
        schedule.step()
        if averager is not None:
            averager.update(policy)

        loss_value, lr_value = loss.item(), schedule.get_last_lr()[0]
        history["steps"].append(step)
        history["losses"].append(loss_value)
        history["lr"].append(lr_value)
        if step % log_every == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_value:.1e}")
            if writer is not None:
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", lr_value, step)
                if grad_norm is not None:
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
        if val_fn is not None and ((step + 1) % val_every == 0 or step == steps - 1):
            metrics = _validate(policy, val_fn, averager)
            history["val"].append((step, metrics))
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, step)

    history["wall_s"] = time.perf_counter() - start
    history["steps_per_s"] = steps / history["wall_s"]
    if averager is not None:
        averager.copy_to(policy)  # the policy that is evaluated and saved holds the average
    if writer is not None:
        writer.close()
    policy.eval()
    return history


def _validate(policy: nn.Module, val_fn: ValFn, averager: EMA | None) -> dict[str, float]:
    """Run ``val_fn`` in eval mode, on the EMA weights when there are some."""
    policy.eval()
    try:
        if averager is None:
            result = val_fn(policy)
        else:
            with averager.averaged(policy):
                result = val_fn(policy)
    finally:
        policy.train()
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items()}
    return {"loss": float(result)}
