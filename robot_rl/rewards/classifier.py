"""A success classifier on camera frames (and optionally the state), used as a reward.

RoboFuME and HIL-SERL replace the task's reward by a classifier's verdict on the camera image.
Training: a small CNN (the policies' image encoder: conv + GroupNorm + Mish, spatial-softmax
keypoints, so *where* the object sits counts) on class-balanced batches with random-shift
augmentation; then Platt scaling on held-out episodes turns logits into calibrated
probabilities, and the threshold is the lowest one that keeps precision >= ``min_precision``
there. Shapes::

    obs["image.<cam>"] uint8 [B, S, S, 3] (+ obs["state"] float32 [B, D])
        -> logit [B] -> p = sigmoid(a * logit + b) -> reward [B]:
           p ("probability", dense) or 1[p >= threshold] ("sparse")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.core.policy import Observation
from robot_rl.core.reward import RewardModel
from robot_rl.policies.config import GROUP_NORM_GROUPS
from robot_rl.policies.encoders import ImageEncoder
from robot_rl.rewards import checkpoint
from robot_rl.rewards.frames import LabelledFrames, check_images, latest_state
from robot_rl.rewards.metrics import auroc, choose_threshold, precision_recall

REWARD_KINDS = ("probability", "sparse")


@dataclass
class ClassifierConfig:
    """Architecture and training of a success classifier."""

    image_key: str = "image.top"
    """camera the classifier reads"""
    image_size: int = 84
    """pixels per side of its frames (other sizes are refused)"""
    with_state: bool = False
    """also read the low-dimensional state (privileged in sim; off by default)"""
    state_dim: int = 0
    """state dims when ``with_state`` (set from the data)"""
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """CNN channels; every layer but the last halves the resolution"""
    feature_dim: int = 64
    """image features (from spatial-softmax keypoints)"""
    hidden_dim: int = 64
    """the head's hidden layer"""
    reward: str = "probability"
    """'probability' (calibrated p, dense) or 'sparse' (1 when p >= threshold)"""
    steps: int = 1500
    """gradient steps"""
    batch_size: int = 128
    """frames per step, half successful, half not"""
    lr: float = 1e-3
    """Adam learning rate (cosine decay)"""
    shift: int = 4
    """random-shift augmentation, pixels (0: none)"""
    calib_fraction: float = 0.2
    """episodes held out of training for calibration and the threshold"""
    min_precision: float = 0.95
    """precision the threshold keeps on the calibration episodes"""
    seed: int = 0
    """seed of the weights, the batches and the calibration split"""

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise ValueError(f"reward must be one of {REWARD_KINDS}, got {self.reward!r}")
        if not keys.is_image_key(self.image_key):
            raise ValueError(f"image_key must look like 'image.<camera>', got {self.image_key!r}")
        if not 0.0 < self.calib_fraction < 1.0:
            raise ValueError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if any(c % GROUP_NORM_GROUPS for c in self.channels):
            raise ValueError(
                f"channels {self.channels} must be multiples of {GROUP_NORM_GROUPS} (GroupNorm)"
            )
        if not 0.0 < self.min_precision <= 1.0:
            raise ValueError(f"min_precision must be in (0, 1], got {self.min_precision}")


class ClassifierNet(nn.Module):
    """frames [N, S, S, 3] float in [0, 1] (+ state [N, D]) -> logits [N]."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.encoder = ImageEncoder(
            (cfg.image_size, cfg.image_size, 3),
            tuple(cfg.channels),
            cfg.feature_dim,
            "spatial_softmax",
        )
        in_dim = cfg.feature_dim + (cfg.state_dim if cfg.with_state else 0)
        self.head = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim), nn.Mish(), nn.Linear(cfg.hidden_dim, 1)
        )
        self.register_buffer("state_mean", torch.zeros(max(cfg.state_dim, 1)))
        self.register_buffer("state_std", torch.ones(max(cfg.state_dim, 1)))
        self.with_state = cfg.with_state

    def forward(self, images: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        features = self.encoder(images)
        if self.with_state:
            features = torch.cat([features, (state - self.state_mean) / self.state_std], dim=-1)
        return self.head(features).squeeze(-1)


class SuccessClassifier(RewardModel):
    """A trained classifier with its calibration: a reward model (see the module docstring)."""

    def __init__(
        self,
        cfg: ClassifierConfig,
        net: ClassifierNet,
        a: float = 1.0,
        b: float = 0.0,
        threshold: float = 0.5,
        report: dict | None = None,
    ):
        self.cfg, self.net = cfg, net.eval()
        self.a, self.b, self.threshold = float(a), float(b), float(threshold)
        self.report = report or {}
        self.required_keys = (cfg.image_key,) + ((keys.STATE,) if cfg.with_state else ())

    @torch.no_grad()
    def logits(self, obs: Observation, batch: int = 256) -> np.ndarray:
        self.check_obs(obs)
        images = check_images(obs[self.cfg.image_key], self.cfg.image_key, self.cfg.image_size)
        state = latest_state(obs) if self.cfg.with_state else None
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).float() / 255.0
            s = None if state is None else torch.from_numpy(state[i : i + batch])
            out.append(self.net(x, s).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def probability(self, obs: Observation) -> np.ndarray:
        """Calibrated success probability ``[B]`` float32."""
        z = self.a * self.logits(obs) + self.b
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def success(self, obs: Observation) -> np.ndarray:
        """``p >= threshold``, bool ``[B]``."""
        return self.probability(obs) >= self.threshold

    def __call__(self, obs: Observation) -> np.ndarray:
        p = self.probability(obs)
        if self.cfg.reward == "sparse":
            return (p >= self.threshold).astype(np.float32)
        return p

    def save(self, path: str | Path) -> Path:
        meta = {
            "kind": "success_classifier",
            "config": asdict(self.cfg),
            "calibration": {"a": self.a, "b": self.b, "threshold": self.threshold},
            "report": self.report,
        }
        tensors = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        return checkpoint.write_folder(
            path, meta, lambda tmp: save_file(tensors, str(tmp / "model.safetensors"))
        )

    @classmethod
    def load(cls, path: str | Path, **overrides) -> SuccessClassifier:
        """``overrides`` change config fields that do not touch the weights (e.g. reward)."""
        meta = checkpoint.read_meta(path)
        if meta["kind"] != "success_classifier":
            raise ValueError(f"{path} holds a {meta['kind']!r}, not a success_classifier")
        cfg = ClassifierConfig(**{**meta["config"], **overrides})
        net = ClassifierNet(cfg)
        try:
            net.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not match its config: {err}") from err
        return cls(cfg, net, **meta["calibration"], report=meta.get("report"))


def train_classifier(
    frames: LabelledFrames, cfg: ClassifierConfig, progress: bool = True, writer=None
) -> SuccessClassifier:
    """Train on ``frames`` (whole episodes; a ``calib_fraction`` of them held out for Platt
    scaling and the threshold). The report holds training and calibration figures."""
    check_images(frames.images[:1], cfg.image_key, cfg.image_size)
    if cfg.with_state:
        if frames.states is None:
            raise ValueError("with_state=true needs frames loaded with their states")
        cfg = ClassifierConfig(**{**asdict(cfg), "state_dim": frames.states.shape[1]})
    train, calib = frames.split_episodes(cfg.calib_fraction, cfg.seed)
    for name, part in (("training", train), ("calibration", calib)):
        if part.labels.all() or not part.labels.any():
            raise ValueError(
                f"the {name} episodes hold only one class ({int(part.labels.sum())} successful "
                f"of {len(part)} frames); record more episodes, with successes and failures"
            )
    torch.manual_seed(cfg.seed)
    net = ClassifierNet(cfg)
    if cfg.with_state:
        net.state_mean.copy_(torch.from_numpy(train.states.mean(0)))
        net.state_std.copy_(torch.from_numpy(train.states.std(0) + 1e-6))
    losses = _fit(net, train, cfg, progress, writer)
    net.eval()
    model = SuccessClassifier(cfg, net)
    a, b = platt_scaling(model.logits(_obs(calib, cfg)), calib.labels)
    model.a, model.b = a, b
    p_calib = model.probability(_obs(calib, cfg))
    model.threshold = choose_threshold(p_calib, calib.labels, cfg.min_precision)
    model.report = {
        "train_frames": len(train),
        "train_positive": int(train.labels.sum()),
        "calib_frames": len(calib),
        "calib_positive": int(calib.labels.sum()),
        "final_loss": float(np.mean(losses[-50:])),
        "calib_auroc": auroc(p_calib, calib.labels),
        "calib_at_threshold": precision_recall(p_calib, calib.labels, model.threshold),
        "platt": {"a": a, "b": b},
    }
    return model


def _obs(frames: LabelledFrames, cfg: ClassifierConfig) -> dict[str, np.ndarray]:
    obs = {cfg.image_key: frames.images}
    if cfg.with_state:
        obs[keys.STATE] = frames.states
    return obs


def _fit(net, train: LabelledFrames, cfg: ClassifierConfig, progress: bool, writer) -> list:
    rng = np.random.default_rng(cfg.seed)
    pos, neg = np.flatnonzero(train.labels), np.flatnonzero(~train.labels)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    half = cfg.batch_size // 2
    losses = []
    net.train()
    for step in tqdm(range(cfg.steps), desc="success classifier", disable=not progress):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)])
        images = torch.from_numpy(random_shift(train.images[idx], cfg.shift, rng)).float() / 255.0
        state = torch.from_numpy(train.states[idx]) if cfg.with_state else None
        target = torch.from_numpy(train.labels[idx].astype(np.float32))
        loss = F.binary_cross_entropy_with_logits(net(images, state), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if writer is not None and step % 50 == 0:
            writer.add_scalar("classifier/loss", losses[-1], step)
    return losses


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """DrQ's augmentation: pad by replicating edges, crop back at a random offset per frame."""
    if pad <= 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None]  # [N, H]
    cols = dx[:, None] + np.arange(w)[None]  # [N, W]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def platt_scaling(logits: np.ndarray, labels: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """``a, b`` minimising the log loss of ``sigmoid(a * logit + b)`` on held-out frames."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = params.detach().tolist()
    if not np.isfinite([a, b]).all() or a <= 0:
        return 1.0, 0.0  # separable or degenerate held-out set: keep the raw logits
    return float(a), float(b)
