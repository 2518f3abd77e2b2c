"""Domain adaptation of an open_clip model to a robot's camera: contrastive fine-tuning with
open_clip's own loss (``open_clip.loss.ClipLoss``) on store frames paired with captions made
from the episodes' success labels and, optionally, the simulator state; then VLM-RM with new
(goal, baseline) prompts on the adapted model.

Captions (``captions.py``) for a frame with success label ``y`` and state ``s``::

    "<success or failure text>" [+ ", " + "<subject> <word of the bin that s[index] falls in>"]

Here (no downloads) it starts from random weights of a small open_clip config
(``configs/reward/clip_adapt.yaml``: a ModifiedResNet image tower at 64x64 and a 2-layer text
transformer); on a user's machine from pretrained weights (``model=ViT-B-32
pretrained=/path/or/tag``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.rewards.captions import StateWords, make_captions
from robot_rl.rewards.classifier import random_shift
from robot_rl.rewards.clip import ClipConfig, ClipReward, import_open_clip, load_open_clip
from robot_rl.rewards.frames import load_labelled_frames
from robot_rl.rewards.metrics import auroc

TINY_RN = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""a small open_clip config (4.6M parameters, most in the token embedding) for CPU machines"""


@dataclass
class AdaptConfig:
    """Contrastive domain adaptation of an open_clip model on store frames."""

    image_key: str = "image.top"
    """camera to adapt to"""
    model: str = "RN50"
    """open_clip architecture name, local-dir:/path or hf-hub:org/repo (ignored with model_cfg)"""
    pretrained: str | None = None
    """pretrained tag or local weights file for ``model``"""
    model_cfg: dict[str, Any] | None = field(default_factory=lambda: dict(TINY_RN))
    """explicit open_clip config for random weights (the default: a small one); null to start
    from ``model``/``pretrained``"""
    success_text: str = "the box is in a goal zone"
    """caption of successful frames"""
    failure_text: str = "the box is not in a goal zone"
    """caption of the others"""
    state_words: list[dict[str, Any]] = field(default_factory=list)
    """caption parts from the state: ``{index, subject, edges, words}`` (see captions.py)"""
    label: str = "step"
    """success labels: per-step ``is_success`` ('step') or the episode's ('episode_end')"""
    goal_prompts: list[str] = field(default_factory=lambda: ["the box is in a goal zone"])
    """VLM-RM goal prompts used with the adapted model"""
    baseline_prompts: list[str] = field(default_factory=lambda: ["the box is not in a goal zone"])
    """VLM-RM baseline prompts"""
    alpha: float = 1.0
    """VLM-RM projection strength"""
    steps: int = 600
    """gradient steps"""
    batch_size: int = 64
    """image-caption pairs per step (half successful)"""
    lr: float = 5e-4
    """AdamW learning rate (cosine decay)"""
    weight_decay: float = 0.1
    """AdamW weight decay"""
    shift: int = 4
    """random-shift augmentation, pixels"""
    seed: int = 0
    """seed of the weights and the batches"""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"steps >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")


def adapt_clip(
    store: str | Path,
    cfg: AdaptConfig,
    out: str | Path | None = None,
    progress: bool = True,
    writer=None,
) -> tuple[ClipReward, dict]:
    """Fine-tune on ``store``'s frames; returns the VLM-RM reward on the adapted model and a
    report (loss, captions, training AUROC). With ``out``, saves it as a checkpoint folder."""
    open_clip = import_open_clip()
    words = [StateWords(**w) for w in cfg.state_words]
    frames = load_labelled_frames(store, cfg.image_key, with_state=bool(words), label=cfg.label)
    captions = make_captions(
        frames.labels, frames.states, cfg.success_text, cfg.failure_text, words
    )
    torch.manual_seed(cfg.seed)
    clip_cfg = ClipConfig(
        model=cfg.model,
        pretrained=cfg.pretrained,
        model_cfg=cfg.model_cfg,
        image_key=cfg.image_key,
        frame_size=frames.images.shape[1],
        goal_prompts=cfg.goal_prompts,
        baseline_prompts=cfg.baseline_prompts,
        alpha=cfg.alpha,
    )
    model, tokenizer, model_cfg = load_open_clip(clip_cfg)
    reward = ClipReward(clip_cfg, model, tokenizer, model_cfg)  # for its preprocessing
    unique, caption_index = np.unique(captions, return_inverse=True)
    tokens = tokenizer(list(unique))
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    pos, neg = np.flatnonzero(frames.labels), np.flatnonzero(~frames.labels)
    half, losses = cfg.batch_size // 2, []
    model.train()
    for step in tqdm(range(cfg.steps), desc="adapt clip", disable=not progress):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)])
        images = reward.preprocess(random_shift(frames.images[idx], cfg.shift, rng))
        image_features, text_features, scale = model(images, tokens[caption_index[idx]])[:3]
        loss = loss_fn(image_features, text_features, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if writer is not None and step % 20 == 0:
            writer.add_scalar("clip/contrastive_loss", losses[-1], step)
    model.eval()
    reward = ClipReward(clip_cfg, model, tokenizer, model_cfg)  # g, b from the adapted towers
    sample = rng.choice(len(frames), min(len(frames), 2000), replace=False)
    report = {
        "steps": cfg.steps,
        "first_loss": float(np.mean(losses[:20])),
        "final_loss": float(np.mean(losses[-50:])),
        "captions": [str(c) for c in unique[:20]],
        "n_captions": len(unique),
        "train_auroc": auroc(reward({cfg.image_key: frames.images[sample]}), frames.labels[sample]),
    }
    if out is not None:
        reward.save(out)
        report["checkpoint"] = str(out)
    return reward, report
