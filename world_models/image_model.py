"""The image world model: a conditional diffusion model of the frame one action chunk ahead,
with a frame success classifier for rewards.

Shapes (B batch, K context frames, S pixels per side, Ta chunk length, A action dim)::

    context [B, 3K, S, S] (frames t-K+1 .. t, in [-1, 1])  +  chunk [B, Ta, A]
        -> diffusers UNet2DModel denoises frame t+Ta [B, 3, S, S]
           (context concatenated to the noisy frame as channels; the chunk, flattened and
            embedded by an MLP, added to the timestep embedding: continuous conditioning)
    frame [B, 3, S, S] -> success classifier -> logit [B]

The model predicts the clean frame (``prediction_type="sample"``), which lets a few DDIM steps
give sharp frames; training uses DDPM noise levels, sampling DDIM. Episodes for it are recorded
with ``terminate_on_success=False`` so that frames *after* success exist to train the
classifier on (with termination the successful frame is never stored).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.data import EpisodeStore, StoreError
from robot_rl.lerobot_compat import import_torchvision
from world_models.state_model import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE


@dataclass
class ImageModelConfig:
    """Architecture and training settings of the image world model."""

    task: str = ""
    """the task whose frames the model learns"""
    camera: str = "top"
    """camera of the frames (``image.<camera>`` in the store)"""
    image_size: int = 32
    """pixels per side (32 on 2 CPU cores; 64 or more on a GPU)"""
    action_dim: int = 0
    """A (filled in from the store)"""
    chunk: int = 8
    """Ta, actions per prediction: the model predicts the frame Ta steps ahead"""
    context_frames: int = 2
    """K, frames of history the model reads"""
    residual: bool = True
    """denoise the change from the last context frame (most pixels do not move, so the model
    starts from "nothing moves" and spends its capacity on what does) instead of the frame"""
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    """UNet2DModel channels per resolution level"""
    layers_per_block: int = 1
    """ResNet layers per UNet level"""
    num_train_timesteps: int = 100
    """DDPM noise levels while training"""
    num_inference_steps: int = 8
    """DDIM steps when imagining a frame"""
    classifier_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    """conv channels of the frame success classifier"""
    steps: int = 20_000
    """gradient steps at most"""
    max_minutes: float = 20.0
    """wall-clock budget of training; stops at whichever of steps / budget comes first"""
    batch_size: int = 32
    """frames per step"""
    lr: float = 3e-4
    """AdamW learning rate"""
    held_out: float = 0.1
    """share of episodes kept out for the fidelity report"""
    seed: int = 0
    """seed of the weights, the sampler and the imagined noise"""
    device: str = "cpu"
    """torch device"""

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(
                f"image_size {self.image_size} must be >= 8 and divisible by "
                f"2^{len(self.block_out_channels) - 1} (one halving per UNet level)"
            )
        if min(self.chunk, self.context_frames, self.steps, self.batch_size) < 1:
            raise ValueError("chunk, context_frames, steps and batch_size must be >= 1")
        self.block_out_channels = [int(c) for c in self.block_out_channels]
        self.classifier_channels = [int(c) for c in self.classifier_channels]


def _unet(cfg: ImageModelConfig):
    import_torchvision()  # diffusers' model classes import torchvision (see lerobot_compat)
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=3 * (cfg.context_frames + 1),
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
        class_embed_type="identity",
    )


def _schedulers(cfg: ImageModelConfig):
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=True,
    )
    return DDPMScheduler(**common), DDIMScheduler(**common)


class ImageWorldModel(nn.Module):
    """UNet2D next-chunk frame model + frame success classifier."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        if cfg.action_dim < 1:
            raise ValueError("action_dim must be set (>= 1); it is read from the store")
        self.cfg = cfg
        self.unet = _unet(cfg)
        embed = cfg.block_out_channels[0] * 4  # UNet2DModel's time embedding size
        self.action_embed = nn.Sequential(
            nn.Linear(cfg.chunk * cfg.action_dim, embed), nn.SiLU(), nn.Linear(embed, embed)
        )
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.classifier_channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(4, c), nn.SiLU()]
            c_in = c
        self.classifier = nn.Sequential(
            *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1)
        )
        self.train_scheduler, self.sample_scheduler = _schedulers(cfg)

    def denoise(self, noisy, t, context, chunk) -> torch.Tensor:
        """The clean frame predicted from a noisy one at noise level ``t``."""
        x = torch.cat([noisy, context], dim=1)
        cond = self.action_embed(chunk.flatten(1))
        return self.unet(x, t, class_labels=cond).sample

    def target(self, frame: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """What the diffusion models: the frame, or its change from the last context frame
        (halved, so that it lies in [-1, 1] like a frame)."""
        return (frame - context[:, -3:]) / 2 if self.cfg.residual else frame

    @torch.no_grad()
    def imagine(self, context: torch.Tensor, chunk: torch.Tensor, generator=None) -> torch.Tensor:
        """Frame ``[B, 3, S, S]`` in [-1, 1] one chunk after ``context`` ``[B, 3K, S, S]``."""
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(self.cfg.num_inference_steps)
        shape = (context.shape[0], 3, self.cfg.image_size, self.cfg.image_size)
        x = torch.randn(shape, generator=generator)
        for t in scheduler.timesteps:
            clean = self.denoise(x, t.expand(shape[0]), context, chunk)
            x = scheduler.step(clean, t, x).prev_sample
        frame = context[:, -3:] + 2 * x if self.cfg.residual else x
        return frame.clamp(-1.0, 1.0)

    def success_logit(self, frame: torch.Tensor) -> torch.Tensor:
        return self.classifier(frame).squeeze(-1)


# ------------------------------------------------------------------------------ data
@dataclass
class FrameData:
    """Frames ``uint8 [N, S, S, 3]``, actions ``[N, A]``, per-frame success labels ``[N]``
    (frame t shows a success reached by step t-1) and episode ranges."""

    frames: np.ndarray
    action: np.ndarray
    success: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def load_frame_data(store_path: str | Path, cfg: ImageModelConfig) -> FrameData:
    key = keys.image_key(cfg.camera)
    with EpisodeStore.open(store_path) as store:
        if key not in store.keys:
            raise StoreError(
                f"{store_path} has no {key!r} (keys: {list(store.keys)}); record episodes with "
                f"cameras=[{cfg.camera}] for the image world model"
            )
        shape = store.schema[key].shape
        if tuple(shape) != (cfg.image_size, cfg.image_size, 3):
            raise ValueError(
                f"{store_path}: {key} frames are {tuple(shape)}, the image model config says "
                f"({cfg.image_size}, {cfg.image_size}, 3); set image_size={shape[0]} or record "
                "at that size"
            )
        if cfg.task and store.meta.get("task") != cfg.task:
            raise ValueError(
                f"{store_path} holds task {store.meta.get('task')!r}, the image model is for "
                f"{cfg.task!r}"
            )
        frames = store.read(key)
        action = store.read(keys.ACTION).astype(np.float32)
        step_success = store.read(keys.IS_SUCCESS).astype(bool)
        ends = store.episode_ends
    starts = ends - np.diff(ends, prepend=0)
    success = np.zeros(len(frames), bool)
    success[1:] = step_success[:-1]
    success[starts] = False  # the first frame of an episode follows no step
    return FrameData(frames, action, success, starts, ends)


def _windows(data: FrameData, cfg: ImageModelConfig, episodes: np.ndarray) -> np.ndarray:
    """Frame indices t of ``episodes`` whose frame t + chunk is stored in the same episode."""
    out = [np.arange(data.starts[e], data.ends[e] - cfg.chunk) for e in episodes]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., S, S, 3]`` -> float ``[..., 3, S, S]`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return x.movedim(-1, -3)


def context_of(data: FrameData, t: np.ndarray, cfg: ImageModelConfig) -> torch.Tensor:
    """Frames t-K+1 .. t (padded at the episode start) as ``[B, 3K, S, S]``."""
    episode_start = data.starts[np.searchsorted(data.ends, t, side="right")]
    lags = np.arange(cfg.context_frames - 1, -1, -1)
    rows = np.maximum(t[:, None] - lags[None, :], episode_start[:, None])
    return _to_float(data.frames[rows]).flatten(1, 2)


def chunk_of(data: FrameData, t: np.ndarray, cfg: ImageModelConfig) -> torch.Tensor:
    return torch.from_numpy(data.action[t[:, None] + np.arange(cfg.chunk)[None, :]])


# ------------------------------------------------------------------------------ training
def train_image_model(
    store_path: str | Path, cfg: ImageModelConfig, out: str | Path, progress: bool = True
) -> tuple[ImageWorldModel, dict]:
    """Train on the store's training episodes within ``cfg.max_minutes``; checkpoint folder
    ``out/model``, TensorBoard in ``out/tb``."""
    data = load_frame_data(store_path, cfg)
    with EpisodeStore.open(store_path) as store:
        cfg = ImageModelConfig(
            **{**asdict(cfg), "task": store.meta.get("task"), "action_dim": data.action.shape[1]}
        )
    n = len(data.ends)
    order = np.random.default_rng(cfg.seed).permutation(n)
    k = max(1, round(cfg.held_out * n))
    held, train_eps = np.sort(order[:k]), np.sort(order[k:])
    windows = _windows(data, cfg, train_eps)
    labelled = np.concatenate([np.arange(data.starts[e], data.ends[e]) for e in train_eps])
    if len(windows) == 0:
        raise StoreError(f"{store_path}: no episode is longer than chunk={cfg.chunk} steps")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = ImageWorldModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-6)
    positives = max(int(data.success[labelled].sum()), 1)
    pos_weight = torch.tensor((len(labelled) - positives) / positives)
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out)
    writer = SummaryWriter(str(out / "tb"))
    start, step = time.perf_counter(), 0
    bar = tqdm(total=cfg.steps, desc=f"image world model {cfg.task}", disable=not progress)
    losses: dict[str, float] = {}
    while step < cfg.steps and time.perf_counter() - start < 60.0 * cfg.max_minutes:
        t = rng.choice(windows, cfg.batch_size)
        context = context_of(data, t, cfg)
        target = model.target(_to_float(data.frames[t + cfg.chunk]), context)
        noise = torch.randn_like(target)
        level = torch.randint(cfg.num_train_timesteps, (len(t),))
        noisy = model.train_scheduler.add_noise(target, noise, level)
        predicted = model.denoise(noisy, level, context, chunk_of(data, t, cfg))
        frame_loss = F.mse_loss(predicted, target)
        c = rng.choice(labelled, cfg.batch_size)
        labels = torch.from_numpy(data.success[c].astype(np.float32))
        cls_loss = F.binary_cross_entropy_with_logits(
            model.success_logit(_to_float(data.frames[c])), labels, pos_weight=pos_weight
        )
        opt.zero_grad(set_to_none=True)
        (frame_loss + cls_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        losses = {"frame": frame_loss.item(), "success": cls_loss.item()}
        if step % 25 == 0:
            bar.set_postfix(frame=f"{losses['frame']:.4f}")
            for name, value in losses.items():
                writer.add_scalar(f"image_world_model/{name}", value, step)
    bar.close()
    writer.close()
    wall = time.perf_counter() - start
    model.eval()
    save_image_model(model, out / "model", {"store": str(store_path), "held_out": held.tolist()})
    summary = {
        "steps": step,
        "train_wall_s": wall,
        "final_losses": losses,
        "held_out_episodes": held.tolist(),
        "train_episodes": len(train_eps),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=2))
    return model, summary


def save_image_model(model: ImageWorldModel, path: Path, extra: dict) -> Path:
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    header = {
        "format_version": FORMAT_VERSION,
        "model_class": "ImageWorldModel",
        "config": asdict(model.cfg),
        "extra": extra,
    }
    (partial / CONFIG_FILE).write_text(json.dumps(header, indent=2) + "\n")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(partial / WEIGHTS_FILE))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return path


def load_image_model(path: str | Path, task: str | None = None) -> tuple[ImageWorldModel, dict]:
    from world_models.state_model import read_header

    header = read_header(path)
    if header["model_class"] != "ImageWorldModel":
        raise ValueError(f"{path}: holds a {header['model_class']}, expected ImageWorldModel")
    cfg = ImageModelConfig(**header["config"])
    if task is not None and cfg.task != task:
        raise ValueError(f"image world model {path} was trained on task {cfg.task!r}, not {task!r}")
    model = ImageWorldModel(cfg)
    model.load_state_dict(load_file(str(Path(path) / WEIGHTS_FILE)))
    return model.eval(), header
