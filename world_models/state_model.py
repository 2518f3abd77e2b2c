"""The state world model: an ensemble of dynamics networks plus reward, success and
termination heads, saved as a checkpoint folder (``config.json`` + ``model.safetensors``).

Shapes (E ensemble members, B batch, D state dim, A action dim)::

    state [B, D], action [B, A]             --dynamics-->  next states [E, B, D]
    state, action, predicted next state     --heads-->     reward, success and terminated
                                                           logits, each [B]

The heads read the step (state, action) and the dynamics' mean prediction of where it leads:
the store holds no observation after an episode's last step (the successful one), so a
classifier of stored states alone would never see a success, while the step's own flags
(``is_success``, ``terminated``, ``reward`` after action t) are stored for every step.

Each member predicts the normalised state *delta*: ``s' = s + mu_d + sigma_d * f(norm(s), a)``
with the store's state statistics ``norm(s) = (s - mu_s) / sigma_s`` and delta statistics
``mu_d, sigma_d``; all of them travel with the weights. Members disagree where the data is
thin, which is what the imagination's uncertainty penalty reads.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
OPTIONAL_BUFFERS = {"success_threshold": (), "terminated_threshold": (), "residual_std": None}
"""absent from the first checkpoints: logit 0 (probability 0.5) and no noise, as those used"""


@dataclass
class StateModelConfig:
    """Architecture and training settings of the state world model."""

    task: str = ""
    """the task whose store the model learns from; a model of another task is refused"""
    state_dim: int = 0
    """D, size of the store's ``state`` (filled in from the store)"""
    action_dim: int = 0
    """A, size of the store's ``action`` (filled in from the store)"""
    ensemble: int = 5
    """dynamics networks; their disagreement is the imagination's uncertainty"""
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """hidden layers of every dynamics network"""
    head_hidden_dims: list[int] = field(default_factory=lambda: [128, 128])
    """hidden layers of the reward, success and termination heads"""
    steps: int = 4000
    """gradient steps"""
    batch_size: int = 256
    """windows per member per step"""
    head_steps: int = 3000
    """gradient steps of the heads, trained after the dynamics on its fixed predictions"""
    unroll: int = 8
    """steps each training window is rolled out open-loop (multi-step loss: a model trained
    on one-step errors only drifts when its own predictions are fed back)"""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 10%)"""
    weight_decay: float = 1e-5
    """AdamW weight decay"""
    held_out: float = 0.1
    """share of episodes kept out of training for the fidelity report"""
    success_pos_weight: float = 0.0
    """weight of successful frames in the success loss; 0: the negatives/positives ratio"""
    seed: int = 0
    """seed of the weights and the sampler"""
    device: str = "cpu"
    """torch device"""

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
        if min(self.unroll, self.steps, self.head_steps, self.batch_size) < 1:
            raise ValueError(
                f"unroll, steps, head_steps and batch_size must be >= 1, got {self.unroll}, "
                f"{self.steps}, {self.head_steps}, {self.batch_size}"
            )
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out}")
        self.hidden_dims = [int(h) for h in self.hidden_dims]
        self.head_hidden_dims = [int(h) for h in self.head_hidden_dims]


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied in one batched matmul: ``[E, B, I] -> [E, B, O]``."""

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _ensemble_mlp(members: int, in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [EnsembleLinear(members, in_dim, h), nn.SiLU()]
        in_dim = h
    layers.append(EnsembleLinear(members, in_dim, out_dim))
    return nn.Sequential(*layers)


def _mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.SiLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class StateWorldModel(nn.Module):
    """Ensemble dynamics + heads; a few small pure methods (``next``, ``outcome``), as
    TD-MPC2 writes its world model."""

    def __init__(self, cfg: StateModelConfig):
        super().__init__()
        if cfg.state_dim < 1 or cfg.action_dim < 1:
            raise ValueError(
                f"state_dim and action_dim must be set (>= 1), got {cfg.state_dim}, "
                f"{cfg.action_dim}; they are read from the store before training"
            )
        self.cfg = cfg
        d, a = cfg.state_dim, cfg.action_dim
        for name in ("state_mean", "delta_mean"):
            self.register_buffer(name, torch.zeros(d))
        for name in ("state_std", "delta_std"):
            self.register_buffer(name, torch.ones(d))
        self.register_buffer("state_min", torch.full((d,), -math.inf))
        self.register_buffer("state_max", torch.full((d,), math.inf))
        # logit thresholds of the success / termination calls, calibrated after training
        self.register_buffer("success_threshold", torch.zeros(()))
        self.register_buffer("terminated_threshold", torch.zeros(()))
        # std of the real next state around the members' mean prediction (training steps):
        # the noise that the imagination samples, so that it is not the smoothed average world
        self.register_buffer("residual_std", torch.zeros(d))
        self.dynamics = _ensemble_mlp(cfg.ensemble, d + a, cfg.hidden_dims, d)
        # outputs: reward, success logit, terminated logit
        self.heads = _mlp(2 * d + a, cfg.head_hidden_dims, 3)

    def fit_normalization(self, states: torch.Tensor, deltas: torch.Tensor) -> None:
        """Statistics of the training frames ``[N, D]`` and their deltas; near-constant
        features keep scale 1 so that they are not blown up."""
        for prefix, x in (("state", states), ("delta", deltas)):
            std = x.std(dim=0)
            getattr(self, f"{prefix}_mean").copy_(x.mean(dim=0))
            getattr(self, f"{prefix}_std").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.state_min.copy_(states.min(dim=0).values)
        self.state_max.copy_(states.max(dim=0).values)

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def next(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Every member's next state: ``[B, D]`` (or ``[E, B, D]``, one per member) and
        ``[B, A]`` (or ``[E, B, A]``) -> ``[E, B, D]``."""
        e = self.cfg.ensemble
        if state.dim() == 2:
            state = state.expand(e, *state.shape)
        if action.dim() == 2:
            action = action.expand(e, *action.shape)
        x = torch.cat([self.normalize(state), action], dim=-1)
        return state + self.delta_mean + self.delta_std * self.dynamics(x)

    def outcome(
        self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's reward, success logit and terminated logit, each ``[B]``, from
        ``state [B, D]``, ``action [B, A]`` and the predicted ``next_state [B, D]``."""
        x = torch.cat([self.normalize(state), action, self.normalize(next_state)], dim=-1)
        out = self.heads(x)
        return out[..., 0], out[..., 1], out[..., 2]


def save_state_model(model: StateWorldModel, path: str | Path, extra: dict | None = None) -> Path:
    """Checkpoint folder: ``config.json`` (class, format, config, ``extra`` such as the store
    it was trained on) + ``model.safetensors`` (weights and normalisation statistics).
    Written aside and renamed into place, so a crash never leaves half a checkpoint."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        header = {
            "format_version": FORMAT_VERSION,
            "model_class": "StateWorldModel",
            "config": asdict(model.cfg),
            "extra": extra or {},
        }
        (partial / CONFIG_FILE).write_text(json.dumps(header, indent=2) + "\n")
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(partial / WEIGHTS_FILE))
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def read_header(path: str | Path) -> dict:
    """The checkpoint's ``config.json``; errors name the folder and what is wrong."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"world model checkpoint {path} has no {CONFIG_FILE}; train one with "
            "`python -m world_models train store=... out=...`"
        )
    try:
        header = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err}); the checkpoint is damaged") from err
    if not isinstance(header, dict) or "model_class" not in header or "config" not in header:
        raise ValueError(f"{file}: not a world model checkpoint (no model_class/config)")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{file}: format_version {header.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}"
        )
    return header


def load_state_model(
    path: str | Path, task: str | None = None, device: str = "cpu"
) -> tuple[StateWorldModel, dict]:
    """Rebuild a state world model (eval mode) and its header. With ``task``, a model trained
    on another task is refused. Never unpickles."""
    path = Path(path)
    header = read_header(path)
    if header["model_class"] != "StateWorldModel":
        raise ValueError(
            f"{path / CONFIG_FILE}: holds a {header['model_class']}, expected StateWorldModel"
        )
    cfg = StateModelConfig(**{**header["config"], "device": device})
    if task is not None and cfg.task != task:
        raise ValueError(
            f"world model {path} was trained on task {cfg.task!r}, not {task!r}; train one on "
            f"a store of {task!r} (python -m world_models train task={task} store=...)"
        )
    model = StateWorldModel(cfg)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"world model checkpoint {path} has no {WEIGHTS_FILE}")
    tensors = load_file(str(weights), device=device)
    for name, shape in OPTIONAL_BUFFERS.items():  # checkpoints older than these buffers
        tensors.setdefault(name, torch.zeros(shape if shape is not None else (cfg.state_dim,)))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{weights}: weights do not match {CONFIG_FILE} ({err})") from err
    return model.to(device).eval(), header
